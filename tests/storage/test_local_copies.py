"""Originals uploaded to S3 stay beside the uploads until their ingest job has read them: the
job reads them from disk, not from the store, and the copies go once the job is over."""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from sqlalchemy import select

from allmicro_data import jobs
from allmicro_data.api.pyramids import ChunkCache, open_pyramid
from allmicro_data.catalogue import models
from allmicro_data.directory import (
    create_dataset,
    create_organisation,
    create_project,
    create_user,
)
from allmicro_data.object_keys import original_key
from allmicro_data.originals import (
    LOCAL_COPY_MAX_AGE_SECONDS,
    keep_for_ingest,
    local_copies_dir,
    local_copy,
    spool,
    store_original,
)
from allmicro_data.services import Services
from allmicro_data.settings import Settings
from allmicro_data.uploads import complete_upload, spool_path, sweep_uploads
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, SeaweedServer


@pytest.fixture
def s3_services(settings: Any, seaweed: SeaweedServer, prefix: str) -> Iterator[Services]:
    """Services on a migrated catalogue whose store is S3 (SeaweedFS), without a server."""
    from allmicro_data.catalogue.db import upgrade

    on_s3 = Settings(
        **{
            **settings.model_dump(),
            "storage_url": seaweed.url(prefix),
            "s3_access_key": ACCESS_KEY,
            "s3_secret_key": SECRET_KEY,
        }
    )
    upgrade(on_s3.resolved_database_url)
    services = Services.from_settings(on_s3)
    yield services
    services.close()


def _tiff(values: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, values)
    return buffer.getvalue()


def _upload(services: Services, data: bytes, name: str) -> tuple[Path, models.File, str]:
    """What an upload does: spool, store the original, queue its job, keep its local copy.
    (the spool path, the file, the job id)"""
    settings = services.settings
    path, sha256, size = spool(io.BytesIO(data), settings.uploads_dir, len(data))
    with services.session() as session:
        project = create_project(session, name=f"copies {uuid.uuid4().hex[:8]}")
        dataset = create_dataset(session, project_id=project.id, name="d")
        result = store_original(
            session,
            services.store,
            dataset=dataset,
            path=path,
            sha256=sha256,
            size=size,
            original_name=name,
            uploaded_by_id=None,
        )
        session.commit()
        assert result.job is not None
        assert keep_for_ingest(settings, services.store, path, sha256)
        session.expunge(result.file)
        return path, result.file, result.job.id


def _run(services: Services, job_id: str) -> str:
    owner = jobs.new_owner()
    assert jobs.claim(services.sessions, owner, 30, job_id=job_id) == job_id
    return jobs.execute(jobs.WorkerConfig.from_settings(services.settings), job_id, owner)


def test_the_ingest_job_reads_the_local_copy_and_removes_it(s3_services: Services) -> None:
    pixels = np.arange(96 * 80, dtype=np.uint16).reshape(96, 80)
    spooled, file, job_id = _upload(s3_services, _tiff(pixels), "kept.tif")
    copy = local_copies_dir(s3_services.settings) / file.sha256
    assert not spooled.exists() and copy.is_file()
    assert local_copy(s3_services.settings, file.sha256, file.size) == copy
    # The store's object holds other pixels now: an image made of the local copy has these.
    other = _tiff(np.full((96, 80), 7, np.uint16))
    s3_services.store.put_bytes(original_key(file.sha256), other)

    assert _run(s3_services, job_id) == "succeeded"

    assert not copy.exists()
    with s3_services.session() as session:
        (key,) = session.scalars(
            select(models.Image.pyramid_key)
            .join(models.ImageFile, models.ImageFile.image_id == models.Image.id)
            .where(models.ImageFile.file_id == file.id)
        ).all()
    assert key is not None
    pyramid = open_pyramid(s3_services.store, key)
    region = pyramid.read(s3_services.store, ChunkCache(1 << 20), 0, {}, (0, 96), (0, 80))
    assert np.array_equal(np.squeeze(region), pixels)


def test_a_job_without_its_local_copy_downloads_the_original(s3_services: Services) -> None:
    pixels = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    _, file, job_id = _upload(s3_services, _tiff(pixels), "downloaded.tif")
    # Another machine's worker, or a copy the sweep took: the same image from the store.
    os.unlink(local_copies_dir(s3_services.settings) / file.sha256)
    assert local_copy(s3_services.settings, file.sha256, file.size) is None
    assert _run(s3_services, job_id) == "succeeded"


def test_a_job_that_fails_on_its_input_removes_the_copy(s3_services: Services) -> None:
    _, file, job_id = _upload(s3_services, b"not an image at all" * 100, "broken.tif")
    assert _run(s3_services, job_id) == "failed"
    assert local_copy(s3_services.settings, file.sha256, file.size) is None


def test_copies_are_kept_up_to_the_limit_and_only_for_stores_elsewhere(
    s3_services: Services, services: Services, tmp_path: Path
) -> None:
    settings = s3_services.settings.model_copy(update={"ingest_local_copies_gb": 2500 / 1e9})
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"a" * 2000)
    second.write_bytes(b"b" * 1000)
    assert keep_for_ingest(settings, s3_services.store, first, "a" * 64)
    # 2000 kept + 1000 more would pass 2500 bytes: the spool file stays where it is.
    assert not keep_for_ingest(settings, s3_services.store, second, "b" * 64)
    assert second.is_file()
    # A store that keeps objects as files here reads them in place: no copy.
    assert not keep_for_ingest(services.settings, services.store, second, "b" * 64)
    assert second.is_file()
    # Nor with the setting at 0, nor of a spool file that went missing (logged, not raised).
    none = settings.model_copy(update={"ingest_local_copies_gb": 0})
    assert not keep_for_ingest(none, s3_services.store, second, "b" * 64)
    assert second.is_file()
    assert not keep_for_ingest(settings, s3_services.store, tmp_path / "gone", "c" * 64)
    # A copy of another size is not the original's.
    assert local_copy(settings, "a" * 64, 1999) is None
    assert local_copy(settings, "a" * 64, 2000) is not None


def test_the_sweep_removes_copies_no_job_came_for(s3_services: Services, tmp_path: Path) -> None:
    settings = s3_services.settings
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"o")
    new.write_bytes(b"n")
    assert keep_for_ingest(settings, s3_services.store, old, "0" * 64)
    assert keep_for_ingest(settings, s3_services.store, new, "1" * 64)
    long_ago = time.time() - LOCAL_COPY_MAX_AGE_SECONDS - 60
    os.utime(local_copies_dir(settings) / ("0" * 64), (long_ago, long_ago))
    assert sweep_uploads(s3_services) == 1  # the server's upload sweep takes them too
    assert local_copy(settings, "0" * 64, 1) is None
    assert local_copy(settings, "1" * 64, 1) is not None


def test_a_completed_resumable_upload_leaves_its_copy_for_the_job(s3_services: Services) -> None:
    data = _tiff(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    with s3_services.session() as session:
        org = create_organisation(session, name=f"org {uuid.uuid4().hex[:8]}", kind="partner")
        user = create_user(
            session,
            email=f"{uuid.uuid4().hex[:8]}@example.org",
            organisation_id=org.id,
            password=None,
        )
        project = create_project(session, name=f"tus {uuid.uuid4().hex[:8]}")
        dataset = create_dataset(session, project_id=project.id, name="d")
        upload = models.Upload(
            dataset_id=dataset.id,
            created_by_id=user.id,
            length=len(data),
            upload_offset=len(data),
            original_name="resumed.tif",
            expires_at=models.utcnow() + timedelta(hours=1),
        )
        session.add(upload)
        session.commit()
        upload_id = upload.id
    spooled = spool_path(s3_services, upload_id)
    spooled.parent.mkdir(parents=True, exist_ok=True)
    spooled.write_bytes(data)

    done = complete_upload(s3_services, upload_id)

    assert done.job_id is not None and done.sha256 is not None
    assert not spooled.exists()
    assert local_copy(s3_services.settings, done.sha256, len(data)) is not None
    assert _run(s3_services, done.job_id) == "succeeded"
    assert local_copy(s3_services.settings, done.sha256, len(data)) is None
