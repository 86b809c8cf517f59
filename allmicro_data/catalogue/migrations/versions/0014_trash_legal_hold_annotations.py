"""trash (deleted_at on projects, datasets, images, files), legal hold, image descriptions, annotations

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _trash_columns(batch_op: object, *, deleted_by: bool = True) -> None:
    batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))  # type: ignore[attr-defined]
    if deleted_by:
        batch_op.add_column(sa.Column("deleted_by_id", sa.String(length=36), nullable=True))  # type: ignore[attr-defined]


def upgrade() -> None:
    with op.batch_alter_table("project") as batch_op:
        # Projects made before hold nothing back. A constant default, so that SQLite adds the
        # column in place instead of copying the table.
        batch_op.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default="0")
        )
        _trash_columns(batch_op)
    with op.batch_alter_table("dataset") as batch_op:
        _trash_columns(batch_op)
    with op.batch_alter_table("image") as batch_op:
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=False, server_default=""))
        _trash_columns(batch_op)
    with op.batch_alter_table("file") as batch_op:
        _trash_columns(batch_op, deleted_by=False)
    op.create_table(
        "annotation",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=True),
        sa.Column("dataset_id", sa.String(length=36), nullable=True),
        sa.Column("key", sa.String(length=100), nullable=True),
        sa.Column("value", sa.String(length=1000), nullable=False),
        sa.Column("value_lower", sa.String(length=1000), nullable=False),
        sa.Column("created_by_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(image_id IS NULL) <> (dataset_id IS NULL)",
            name=op.f("ck_annotation_image_or_dataset"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["dataset.id"],
            name=op.f("fk_annotation_dataset_id_dataset"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_annotation_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotation")),
    )
    op.create_index("ix_annotation_key_value", "annotation", ["key", "value_lower"])
    op.create_index(op.f("ix_annotation_image_id"), "annotation", ["image_id"])
    op.create_index(op.f("ix_annotation_dataset_id"), "annotation", ["dataset_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_annotation_dataset_id"), table_name="annotation")
    op.drop_index(op.f("ix_annotation_image_id"), table_name="annotation")
    op.drop_index("ix_annotation_key_value", table_name="annotation")
    op.drop_table("annotation")
    with op.batch_alter_table("file") as batch_op:
        batch_op.drop_column("deleted_at")
    with op.batch_alter_table("image") as batch_op:
        batch_op.drop_column("deleted_by_id")
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("description")
    with op.batch_alter_table("dataset") as batch_op:
        batch_op.drop_column("deleted_by_id")
        batch_op.drop_column("deleted_at")
    with op.batch_alter_table("project") as batch_op:
        batch_op.drop_column("deleted_by_id")
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("legal_hold")
