"""A full disk under a live server: the image fails with a readable reason, and comes back by
itself once space is freed. One server for the module, its upload spool on one small tmpfs and
its object store on another; each test fills the one it needs and frees it again."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sqlalchemy import create_engine, select

from allmicro_data.catalogue.models import Image, ImageFile, Job
from allmicro_data.ingest.agent import Agent, AgentSettings, Outcome
from tests.api.test_end_to_end import USER_PASSWORD
from tests.api.test_uploads import TUS, create, new_project, patch
from tests.conftest import LiveServer, _running_server, _server_env, wait_until

# Room for what all the tests of the module leave in the store (about 35 MiB).
TMPFS_BYTES = 64 * 1024**2


@contextlib.contextmanager
def _small_disk(mount: Path) -> Iterator[Path]:
    """A tmpfs of TMPFS_BYTES mounted at mount, unmounted after."""
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


@dataclass
class FullDiskServer:
    server: LiveServer
    database_url: str
    spool: Path  # ALLMICRO_UPLOAD_DIR
    store: Path  # the object store's directory


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullDiskServer]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test mounts a tmpfs and must run as root in CI")
        pytest.skip("mounting a tmpfs needs root")
    tmp = tmp_path_factory.mktemp("full-disk")
    with _small_disk(tmp / "spool") as spool, _small_disk(tmp / "store") as store:
        database_url = f"sqlite:///{tmp / 'catalogue.sqlite3'}"
        env = _server_env(tmp / "data", database_url)
        env["ALLMICRO_UPLOAD_DIR"] = str(spool)
        env["ALLMICRO_STORAGE_URL"] = store.as_uri()
        env["ALLMICRO_STORAGE_FULL_RETRY_SECONDS"] = "1"
        server = _running_server(env, tmp / "server.log")
        try:
            yield FullDiskServer(server, database_url, spool, store)
        finally:
            server.stop()


@contextlib.contextmanager
def _filled(disk: Path, leave: int) -> Iterator[Path]:
    """disk filled up to `leave` free bytes; the filler is removed at the end in any case."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - leave))
    try:
        yield filler
    finally:
        filler.unlink(missing_ok=True)


def _image_state(database_url: str, file_id: str) -> tuple[str, str | None] | None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(Image.status, Image.error)
                .join(ImageFile, ImageFile.image_id == Image.id)
                .where(ImageFile.file_id == file_id)
            ).first()
    finally:
        engine.dispose()
    return None if row is None else (str(row[0]), row[1])


def test_a_full_disk_fails_the_image_with_a_reason_and_it_recovers_once_space_is_freed(
    full: FullDiskServer, tmp_path: Path
) -> None:
    server, database_url = full.server, full.database_url
    email = "operator@full-disk.example"
    _project_id, dataset_id = new_project(server, email, "Full disk")
    # Noise does not compress: its pyramid needs more room than the original (8 MiB).
    pixels = np.random.default_rng(14).integers(0, 65535, (2048, 2048), dtype=np.uint16)
    original = tmp_path / "noise.tif"
    tifffile.imwrite(original, pixels)
    data = original.read_bytes()

    with (
        server.client(email, USER_PASSWORD) as client,
        _filled(full.store, len(data) + 3 * 1024**2) as filler,
    ):
        created = create(client, len(data), filename="noise.tif", dataset_id=dataset_id)
        assert created.status_code == 201, created.text
        done = patch(client, created.headers["location"], 0, data)
        assert done.status_code == 204, done.text
        file_id = done.headers["x-allmicro-file-id"]
        job_id = done.headers["x-allmicro-job-id"]

        state = wait_until(
            lambda: (s := _image_state(database_url, file_id)) and s[0] == "failed" and s,
            timeout=60,
            what="the image to fail for want of space",
        )
        assert state[1].startswith("storage full:"), state
        assert str(full.store) not in state[1] and "/tmp" not in state[1]
        job = client.get(f"/api/jobs/{job_id}").json()
        # The job lives on, waiting for space: it has not given up.
        assert job["status"] in ("queued", "running"), job
        assert job["error"].startswith("storage full:"), job

        filler.unlink()
        wait_until(
            lambda: _image_state(database_url, file_id) == ("ready", None),
            timeout=60,
            what="the image to be made once space was freed",
        )
        assert client.get(f"/api/jobs/{job_id}").json()["status"] == "succeeded"
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            jobs = conn.scalars(select(Job.id).where(Job.file_id == file_id)).all()
    finally:
        engine.dispose()
    assert jobs == [job_id]


def test_a_patch_that_fills_the_disk_leaves_no_bytes_past_the_offset(full: FullDiskServer) -> None:
    """507 in mid-PATCH: the spool file is cut back to the acknowledged offset at once, not
    when (if ever) the upload is opened again."""
    server = full.server
    email = "spooler@full-disk.example"
    _project_id, dataset_id = new_project(server, email, "Full spool")
    data = np.random.default_rng(11).bytes(8 * 1024**2)
    with server.client(email, USER_PASSWORD) as client:
        created = create(client, len(data), filename="big.bin", dataset_id=dataset_id)
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        with _filled(full.spool, 2 * 1024**2) as filler:
            refused = patch(client, location, 0, data)
            assert refused.status_code == 507, refused.text
            offset = int(client.head(location, headers=TUS).headers["upload-offset"])
            spool_file = full.spool / "tus" / f"{location.rsplit('/', 1)[-1]}.part"
            assert spool_file.stat().st_size == offset

            # Once there is room again the upload goes on from there.
            filler.unlink()
            done = patch(client, location, offset, data[offset:])
            assert done.status_code == 204, done.text
            assert done.headers["upload-offset"] == str(len(data))


class _Retries(logging.Handler):
    """Notes the agent's "retrying" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.seen.set()


def test_the_agent_waits_for_a_full_server_within_retry_for(
    full: FullDiskServer, tmp_path: Path
) -> None:
    """507 is "not now": the agent tries again until --retry-for runs out, and gets the file
    through once the server has room again."""
    server = full.server
    retries = _Retries()
    logging.getLogger("allmicro.agent").addHandler(retries)
    try:
        email = "instrument@full-disk.example"
        _project_id, dataset_id = new_project(server, email, "Full agent")
        token = server.token(email, USER_PASSWORD)
        acquisition = tmp_path / "acquisition.bin"
        acquisition.write_bytes(np.random.default_rng(5).bytes(4 * 1024**2))

        def agent(retry_for: float) -> Agent:
            return Agent(
                AgentSettings(
                    server=server.url,
                    dataset_id=dataset_id,
                    token=token,
                    state_path=tmp_path / f"state-{retry_for}.sqlite3",
                    retry_for=retry_for,
                    progress=False,
                )
            )

        with _filled(full.spool, 1024**2) as filler:
            impatient = agent(2.0)
            started = time.monotonic()
            outcome = impatient.send(acquisition)
            impatient.close()
            assert outcome.status == "failed"
            assert "507" in (outcome.error or ""), outcome
            assert time.monotonic() - started >= 1.5, "gave up at once instead of retrying"

            retries.seen.clear()
            result: list[Outcome] = []

            def send_patiently() -> None:
                patient = agent(60.0)  # in its thread: the agent's state is an SQLite connection
                try:
                    result.append(patient.send(acquisition))
                finally:
                    patient.close()

            sender = threading.Thread(target=send_patiently)
            sender.start()
            assert retries.seen.wait(30), "the agent did not retry"
            filler.unlink()
            sender.join(60)
        assert result and result[0].status == "uploaded", result
    finally:
        logging.getLogger("allmicro.agent").removeHandler(retries)


def test_a_full_store_at_completion_answers_507_and_the_upload_completes_later(
    full: FullDiskServer,
) -> None:
    """The spool has the whole file but the store has no room for it: 507 (not 503, "cannot be
    reached"), and the upload completes on the client's next request once there is room."""
    server = full.server
    email = "finisher@full-disk.example"
    _project_id, dataset_id = new_project(server, email, "Full store")
    data = np.random.default_rng(3).bytes(4 * 1024**2)
    with server.client(email, USER_PASSWORD) as client, _filled(full.store, 1024**2) as filler:
        created = create(client, len(data), filename="late.bin", dataset_id=dataset_id)
        location = created.headers["location"]
        refused = patch(client, location, 0, data)
        assert refused.status_code == 507, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        filler.unlink()
        status = client.head(location, headers=TUS)
        assert status.status_code == 200
        assert status.headers["upload-offset"] == str(len(data))
        assert status.headers["x-allmicro-file-id"]
