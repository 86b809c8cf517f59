"""replica to-do list, image fixity, scrub runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 14:09:40.074828
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replica_pending",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("store_url", sa.String(length=1000), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replica_pending")),
        sa.UniqueConstraint("store_url", "key", name=op.f("uq_replica_pending_store_url")),
    )
    op.create_table(
        "scrub_run",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("repair", sa.Boolean(), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "succeeded",
                "failed",
                name="scrub_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.Column("copies", sa.BigInteger(), nullable=False),
        sa.Column("ok", sa.BigInteger(), nullable=False),
        sa.Column("missing", sa.BigInteger(), nullable=False),
        sa.Column("corrupt", sa.BigInteger(), nullable=False),
        sa.Column("unreachable", sa.BigInteger(), nullable=False),
        sa.Column("repaired", sa.BigInteger(), nullable=False),
        sa.Column("unrecoverable", sa.BigInteger(), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scrub_run")),
    )
    with op.batch_alter_table("scrub_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scrub_run_started_at"), ["started_at"], unique=False)

    op.create_table(
        "image_fixity",
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("manifest_key", sa.String(length=300), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("manifest_size", sa.BigInteger(), nullable=False),
        sa.Column("object_count", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_image_fixity_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_image_fixity")),
    )


def downgrade() -> None:
    op.drop_table("image_fixity")
    with op.batch_alter_table("scrub_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scrub_run_started_at"))

    op.drop_table("scrub_run")
    op.drop_table("replica_pending")
