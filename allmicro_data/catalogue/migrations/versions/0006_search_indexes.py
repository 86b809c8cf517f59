"""Search indexes: partial indexes over ready images, trigram free text on PostgreSQL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READY = sa.text("status = 'ready'")
INDEXES: dict[str, list[str]] = {
    "ix_image_ready_name": ["name"],
    "ix_image_ready_acquired": ["acquired_at"],
    "ix_image_ready_dataset_name": ["dataset_id", "name"],
    "ix_image_ready_dataset_acquired": ["dataset_id", "acquired_at"],
    "ix_image_ready_dataset_modality_acquired": ["dataset_id", "lower(modality)", "acquired_at"],
    "ix_image_ready_modality_acquired": ["lower(modality)", "acquired_at"],
    "ix_image_ready_dataset_pixel_size": ["dataset_id", "pixel_size_x"],
    "ix_image_ready_pixel_size": ["pixel_size_x"],
}


def upgrade() -> None:
    op.drop_index("ix_image_modality_acquired", table_name="image")
    for name, columns in INDEXES.items():
        op.create_index(
            name,
            "image",
            [sa.text(c) if "(" in c else c for c in columns],
            sqlite_where=READY,
            postgresql_where=READY,
        )
    if op.get_bind().dialect.name == "postgresql":
        # pg_trgm is a trusted extension: the database owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_image_ready_search_trgm",
            "image",
            ["search_text"],
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
            postgresql_where=READY,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_image_ready_search_trgm", table_name="image")
    for name in INDEXES:
        op.drop_index(name, table_name="image")
    op.create_index("ix_image_modality_acquired", "image", ["modality", "acquired_at"])
