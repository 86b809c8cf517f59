"""One file row per (dataset, sha256): the migration that merges old duplicates, and the index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from allmicro_data.catalogue.db import normalise_url, upgrade
from allmicro_data.catalogue.models import Dataset, File, Organisation, Project

SHA = "ab" * 32


def test_migration_merges_duplicate_files_into_the_oldest(database_url: str) -> None:
    """Rows concurrent uploads made before the index was unique become one: images, jobs and
    uploads of the duplicates point to the oldest row, and the duplicates are gone."""
    upgrade(database_url, "0007")
    engine = create_engine(normalise_url(database_url))
    start = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organisation (id, name, kind, created_at) "
                    "VALUES ('o', 'org', 'partner', :t)"
                ),
                {"t": start},
            )
            conn.execute(
                text(
                    "INSERT INTO user_account (id, email, display_name, organisation_id, "
                    "is_admin, is_active, failed_logins, created_at) "
                    "VALUES ('u', 'u@example.org', '', 'o', false, true, 0, :t)"
                ),
                {"t": start},
            )
            conn.execute(
                text(
                    "INSERT INTO project (id, name, description, kind, created_at) "
                    "VALUES ('p', 'p', '', 'research', :t)"
                ),
                {"t": start},
            )
            conn.execute(
                text(
                    "INSERT INTO dataset (id, project_id, name, description, created_at) "
                    "VALUES ('d', 'p', 'd', '', :t)"
                ),
                {"t": start},
            )
            for n, file_id in enumerate(["f-late", "f-first", "f-mid"]):
                at = start + timedelta(seconds={"f-first": 0, "f-mid": 1, "f-late": 2}[file_id])
                conn.execute(
                    text(
                        "INSERT INTO file (id, dataset_id, storage_key, size, sha256, "
                        "original_name, uploaded_at) "
                        "VALUES (:id, 'd', :key, 3, :sha, :name, :at)"
                    ),
                    {"id": file_id, "key": f"raw/{SHA}", "sha": SHA, "name": f"x{n}.tif", "at": at},
                )
                conn.execute(
                    text(
                        "INSERT INTO image (id, dataset_id, name, series_index, status, "
                        "created_at, updated_at) VALUES (:id, 'd', 'x', 0, 'ready', :t, :t)"
                    ),
                    {"id": f"i-{file_id}", "t": at},
                )
                conn.execute(
                    text(
                        "INSERT INTO image_file (image_id, file_id, role) "
                        "VALUES (:image, :file, 'primary')"
                    ),
                    {"image": f"i-{file_id}", "file": file_id},
                )
                conn.execute(
                    text(
                        "INSERT INTO job (id, kind, status, dataset_id, file_id, payload, "
                        "attempts, max_attempts, progress, created_at) "
                        "VALUES (:id, 'ingest', 'succeeded', 'd', :file, '{}', 1, 3, 100, :t)"
                    ),
                    {"id": f"j-{file_id}", "file": file_id, "t": at},
                )
                conn.execute(
                    text(
                        "INSERT INTO upload (id, dataset_id, created_by_id, length, "
                        "upload_offset, upload_metadata, original_name, status, file_id, "
                        "job_id, created_at, updated_at, expires_at) VALUES (:id, 'd', 'u', "
                        "3, 3, '', 'x', 'complete', :file, :job, :t, :t, :t)"
                    ),
                    {"id": f"up-{file_id}", "file": file_id, "job": f"j-{file_id}", "t": at},
                )
            # Another dataset's copy of the same bytes is its own file and stays.
            conn.execute(
                text(
                    "INSERT INTO dataset (id, project_id, name, description, created_at) "
                    "VALUES ('d2', 'p', 'd2', '', :t)"
                ),
                {"t": start},
            )
            conn.execute(
                text(
                    "INSERT INTO file (id, dataset_id, storage_key, size, sha256, "
                    "original_name, uploaded_at) VALUES ('f-other', 'd2', 'k', 3, :sha, 'x', :t)"
                ),
                {"sha": SHA, "t": start},
            )

        upgrade(database_url)

        with engine.connect() as conn:
            files = conn.execute(text("SELECT id, dataset_id FROM file ORDER BY id")).all()
            assert [tuple(row) for row in files] == [("f-first", "d"), ("f-other", "d2")]
            links = conn.execute(text("SELECT file_id FROM image_file")).scalars().all()
            assert set(links) == {"f-first"} and len(links) == 3
            assert set(conn.execute(text("SELECT file_id FROM job")).scalars()) == {"f-first"}
            assert set(conn.execute(text("SELECT file_id FROM upload")).scalars()) == {"f-first"}
    finally:
        engine.dispose()


def test_a_second_file_row_for_the_same_bytes_in_a_dataset_is_refused(services: Any) -> None:
    with services.session() as session:
        organisation = Organisation(name="uniq org", kind="partner")
        session.add(organisation)
        project = Project(name="uniq", kind="research")
        session.add(project)
        session.flush()
        dataset = Dataset(project_id=project.id, name="d")
        session.add(dataset)
        session.flush()
        dataset_id = dataset.id
        session.add(
            File(dataset_id=dataset_id, storage_key="k", size=1, sha256=SHA, original_name="a")
        )
    with pytest.raises(IntegrityError), services.session() as session:
        session.add(
            File(dataset_id=dataset_id, storage_key="k", size=1, sha256=SHA, original_name="b")
        )
        session.flush()
