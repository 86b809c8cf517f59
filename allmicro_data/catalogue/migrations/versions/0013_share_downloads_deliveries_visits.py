"""share link download limits, dataset deliveries, project visits

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 18:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("share_link") as batch_op:
        batch_op.add_column(sa.Column("max_downloads", sa.Integer(), nullable=True))
        # Links made before counted no downloads: they start at zero.
        batch_op.add_column(
            sa.Column("download_count", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("dataset") as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("delivered_by_id", sa.String(length=36), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_dataset_delivered_by_id_user_account"),
            "user_account",
            ["delivered_by_id"],
            ["id"],
        )
    op.create_table(
        "project_visit",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("visited_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_project_visit_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_project_visit_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "project_id", name=op.f("pk_project_visit")),
    )


def downgrade() -> None:
    op.drop_table("project_visit")
    with op.batch_alter_table("dataset") as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_dataset_delivered_by_id_user_account"), type_="foreignkey"
        )
        batch_op.drop_column("delivered_by_id")
        batch_op.drop_column("delivered_at")
    with op.batch_alter_table("share_link") as batch_op:
        batch_op.drop_column("download_count")
        batch_op.drop_column("max_downloads")
