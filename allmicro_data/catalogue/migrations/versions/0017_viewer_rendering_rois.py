"""the microscopist's viewer: local-time acquisition dates, image regions, rendering settings, ROIs

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 21:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: images read before keep what they had (a UTC time, or none).
    with op.batch_alter_table("image") as batch_op:
        batch_op.add_column(sa.Column("acquired_at_local", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("image_region", sa.JSON(), nullable=True))
    op.create_table(
        "rendering_setting",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_rendering_setting_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_rendering_setting_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rendering_setting")),
        sa.UniqueConstraint("image_id", "user_id", name=op.f("uq_rendering_setting_image_id")),
    )
    op.create_index(op.f("ix_rendering_setting_image_id"), "rendering_setting", ["image_id"])
    op.create_table(
        "roi",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("z", sa.Integer(), nullable=False),
        sa.Column("t", sa.Integer(), nullable=False),
        sa.Column("c", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_by_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["image.id"], name=op.f("fk_roi_image_id_image"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roi")),
    )
    op.create_index(op.f("ix_roi_image_id"), "roi", ["image_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_roi_image_id"), table_name="roi")
    op.drop_table("roi")
    op.drop_index(op.f("ix_rendering_setting_image_id"), table_name="rendering_setting")
    op.drop_table("rendering_setting")
    with op.batch_alter_table("image") as batch_op:
        batch_op.drop_column("image_region")
        batch_op.drop_column("acquired_at_local")
