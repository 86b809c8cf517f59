"""electron_dose and spot_size: two normalised acquisition fields on image

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable and without a default: images ingested before stay null ("the file did not say"
    # is all we know until they are ingested again).
    with op.batch_alter_table("image") as batch_op:
        batch_op.add_column(sa.Column("electron_dose", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("spot_size", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image") as batch_op:
        batch_op.drop_column("spot_size")
        batch_op.drop_column("electron_dose")
