"""The catalogue side of replication and fixity, on SQLite and PostgreSQL, over local replicas."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from allmicro_data.catalogue.db import upgrade
from allmicro_data.catalogue.models import (
    File,
    Image,
    ImageFile,
    ImageStatus,
    ReplicaPending,
    utcnow,
)
from allmicro_data.directory import create_dataset, create_project
from allmicro_data.fixity import record_image_fixity, write_image_manifest
from allmicro_data.replica_catchup import CataloguePendingCopies, catch_up_replicas, pending_counts
from allmicro_data.scrub import StorageMaintenance, describe_run, run_document, run_scrub
from allmicro_data.services import Services
from allmicro_data.storage import LocalStore, PendingCopy, ReplicatedStore


@pytest.fixture
def replicated(settings: Any, tmp_path: Path) -> Iterator[Services]:
    """Services whose store is a local primary with two local replicas, quorum 1."""
    upgrade(settings.resolved_database_url)
    configured = settings.model_copy(
        update={
            "replica_urls": [(tmp_path / "site-b").as_uri(), (tmp_path / "site-c").as_uri()],
            "replica_quorum": 1,
        }
    )
    services = Services.from_settings(configured)
    yield services
    services.close()


def _image_with_original(services: Services, data: bytes) -> tuple[str, str]:
    """An original and a one-chunk 'pyramid' written through the store, with a manifest."""
    store = services.store
    sha = hashlib.sha256(data).hexdigest()
    original = store.put_bytes(f"raw/{sha}", data)
    with services.session() as session:
        project = create_project(session, name=f"p-{sha[:8]}")
        dataset = create_dataset(session, project_id=project.id, name="d")
        file = File(
            dataset_id=dataset.id,
            storage_key=original.key,
            size=original.size,
            sha256=sha,
            original_name="a.tif",
        )
        image = Image(dataset_id=dataset.id, name="a.tif", status=ImageStatus.READY)
        session.add_all([file, image])
        session.flush()
        session.add(ImageFile(image_id=image.id, file_id=file.id))
        chunk = store.put_bytes(f"images/{image.id}/image.ome.zarr/0/0/0", b"chunk " + data)
        manifest, stored = write_image_manifest(store, image.id, [original, chunk])
        record_image_fixity(session, image.id, manifest, stored)
        return image.id, chunk.key


def test_the_to_do_list_keeps_one_row_per_replica_and_key_under_concurrent_misses(
    replicated: Services,
) -> None:
    todo = CataloguePendingCopies(replicated.sessions)

    def miss(n: int) -> None:
        todo.record(PendingCopy("s3://b?x", "images/i/0/0", f"{n:064x}", n, False, "down"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(miss, range(16)))
    todo.record(PendingCopy("s3://b?x", "images/i/old", None, None, True, "down"))
    with replicated.session() as session:
        rows = session.scalars(select(ReplicaPending).order_by(ReplicaPending.key)).all()
        assert [(r.key, r.deleted) for r in rows] == [
            ("images/i/0/0", False),
            ("images/i/old", True),
        ]
        assert pending_counts(session) == {"s3://b?x": 2}


def test_a_missed_replica_is_caught_up_from_the_catalogue(replicated: Services) -> None:
    store = replicated.store
    assert isinstance(store, ReplicatedStore)
    site_b = store.replicas[0]
    assert isinstance(site_b, LocalStore)
    _, chunk = _image_with_original(replicated, b"pixels")
    todo = CataloguePendingCopies(replicated.sessions)
    # As a write would have recorded it while site B was away.
    site_b.delete(chunk)
    sha256 = hashlib.sha256(b"chunk pixels").hexdigest()
    todo.record(PendingCopy(site_b.url, chunk, sha256, 12, deleted=False, reason="down"))
    site_b.put_bytes("images/stale", b"x")
    todo.record(PendingCopy(site_b.url, "images/stale", None, None, deleted=True, reason="down"))
    report = catch_up_replicas(store, replicated.sessions)
    assert (report.done, report.failed, report.remaining) == (2, 0, 0)
    assert site_b.get_bytes(chunk) == b"chunk pixels"
    assert not site_b.exists("images/stale")


def test_scrub_finds_repairs_and_records_its_runs(replicated: Services) -> None:
    store = replicated.store
    assert isinstance(store, ReplicatedStore)
    image_id, chunk = _image_with_original(replicated, b"pixels")
    primary, site_b, site_c = store.stores
    assert isinstance(site_c, LocalStore)
    site_b.put_bytes(chunk, b"wrong")
    site_c.delete(chunk)
    run = run_scrub(replicated, repair=False, image_id=image_id)
    found = run_document(run)
    text = describe_run(run)
    assert "1 missing, 1 corrupt" in text and f"corrupt      {chunk} on {site_b.url}" in text
    # Objects: the original, the chunk, the manifest, each on three stores.
    assert (found["objects"], found["copies"], found["ok"]) == (3, 9, 7)
    assert (found["corrupt"], found["missing"], found["clean"]) == (1, 1, False)
    fixed = run_document(run_scrub(replicated, repair=True, bandwidth=10_000_000))
    assert (fixed["repaired"], fixed["unrecoverable"], fixed["clean"]) == (2, 0, True)
    assert site_b.get_bytes(chunk) == site_c.get_bytes(chunk) == primary.get_bytes(chunk)
    assert run_document(run_scrub(replicated, repair=False))["clean"]


def test_the_scheduled_scrub_comes_one_interval_after_the_last(replicated: Services) -> None:
    maintenance = StorageMaintenance(replicated)
    interval = maintenance.interval
    assert interval == timedelta(hours=168)
    assert not maintenance.scrub_due()
    assert maintenance.scrub_due(utcnow() + interval)
    run_scrub(replicated, repair=False, trigger="schedule")
    assert not maintenance.scrub_due(maintenance.started + interval)
    with replicated.session() as session:
        assert session.scalars(select(ReplicaPending)).first() is None
