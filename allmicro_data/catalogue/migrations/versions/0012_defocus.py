"""defocus: a normalised acquisition field on image (metres, signed)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: images ingested before stay null until ingested again.
    with op.batch_alter_table("image") as batch_op:
        batch_op.add_column(sa.Column("defocus", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image") as batch_op:
        batch_op.drop_column("defocus")
