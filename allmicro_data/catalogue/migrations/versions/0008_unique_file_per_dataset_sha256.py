"""file (dataset_id, sha256) unique: duplicates that concurrent uploads made are merged first

The same bytes uploaded into one dataset by several clients at once could each add a file row
(and an ingest job, and an image). The oldest row of each (dataset, sha256) is kept; images,
jobs and uploads of the others point to it, then the others go; then the index becomes unique.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

file_table = sa.table(
    "file",
    sa.column("id", sa.String),
    sa.column("dataset_id", sa.String),
    sa.column("sha256", sa.String),
    sa.column("uploaded_at", sa.DateTime),
)
image_file = sa.table(
    "image_file", sa.column("image_id", sa.String), sa.column("file_id", sa.String)
)
job = sa.table("job", sa.column("file_id", sa.String))
upload = sa.table("upload", sa.column("file_id", sa.String))


def _merge_duplicates(conn: sa.Connection) -> None:
    groups = conn.execute(
        sa.select(file_table.c.dataset_id, file_table.c.sha256)
        .group_by(file_table.c.dataset_id, file_table.c.sha256)
        .having(sa.func.count() > 1)
    ).all()
    for dataset_id, sha256 in groups:
        ids = list(
            conn.scalars(
                sa.select(file_table.c.id)
                .where(file_table.c.dataset_id == dataset_id, file_table.c.sha256 == sha256)
                .order_by(file_table.c.uploaded_at, file_table.c.id)
            )
        )
        kept, duplicates = ids[0], ids[1:]
        for duplicate in duplicates:
            # image_file's key is (image_id, file_id): an image already linked to the kept row
            # loses its link to the duplicate instead of getting a second, equal one.
            linked = sa.select(image_file.c.image_id).where(image_file.c.file_id == kept)
            conn.execute(
                sa.delete(image_file).where(
                    image_file.c.file_id == duplicate, image_file.c.image_id.in_(linked)
                )
            )
            conn.execute(
                sa.update(image_file).where(image_file.c.file_id == duplicate).values(file_id=kept)
            )
            conn.execute(sa.update(job).where(job.c.file_id == duplicate).values(file_id=kept))
            conn.execute(
                sa.update(upload).where(upload.c.file_id == duplicate).values(file_id=kept)
            )
            conn.execute(sa.delete(file_table).where(file_table.c.id == duplicate))


def upgrade() -> None:
    _merge_duplicates(op.get_bind())
    with op.batch_alter_table("file", schema=None) as batch_op:
        batch_op.drop_index("ix_file_dataset_sha256")
        batch_op.create_index("uq_file_dataset_sha256", ["dataset_id", "sha256"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("file", schema=None) as batch_op:
        batch_op.drop_index("uq_file_dataset_sha256")
        batch_op.create_index("ix_file_dataset_sha256", ["dataset_id", "sha256"], unique=False)
