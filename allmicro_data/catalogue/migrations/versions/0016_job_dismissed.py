"""job dismissal: a failed job set aside leaves the failed lists

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 18:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: no job was dismissed before.
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("dismissed_by_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("dismissed_by_id")
        batch_op.drop_column("dismissed_at")
