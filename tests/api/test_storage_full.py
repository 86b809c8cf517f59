"""A full disk under a live server: the image fails with a readable reason, and comes back by
itself once space is freed (a small tmpfs as the data directory)."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
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

TMPFS_BYTES = 32 * 1024**2


@pytest.fixture
def small_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs mounted for the test, unmounted after it."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test mounts a tmpfs and must run as root in CI")
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


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
    small_data_dir: Path, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'catalogue.sqlite3'}"
    env = _server_env(small_data_dir, database_url)
    env["ALLMICRO_STORAGE_FULL_RETRY_SECONDS"] = "1"
    server: LiveServer = _running_server(env, tmp_path / "server.log")
    try:
        email = "operator@full-disk.example"
        _project_id, dataset_id = new_project(server, email, "Full disk")
        # Noise does not compress: its pyramid needs more room than the original (8 MiB).
        pixels = np.random.default_rng(14).integers(0, 65535, (2048, 2048), dtype=np.uint16)
        original = tmp_path / "noise.tif"
        tifffile.imwrite(original, pixels)
        data = original.read_bytes()
        filler = small_data_dir / "filler"
        free = os.statvfs(small_data_dir).f_bavail * os.statvfs(small_data_dir).f_frsize
        filler.write_bytes(b"\0" * (free - len(data) - 3 * 1024**2))

        with server.client(email, USER_PASSWORD) as client:
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
            assert str(small_data_dir) not in state[1] and "/tmp" not in state[1]
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
    finally:
        server.stop()


def test_a_patch_that_fills_the_disk_leaves_no_bytes_past_the_offset(
    small_data_dir: Path, tmp_path: Path
) -> None:
    """507 in mid-PATCH: the spool file is cut back to the acknowledged offset at once, not
    when (if ever) the upload is opened again."""
    env = _server_env(tmp_path / "data", f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    env["ALLMICRO_UPLOAD_DIR"] = str(small_data_dir)
    server: LiveServer = _running_server(env, tmp_path / "server.log")
    try:
        email = "spooler@full-disk.example"
        _project_id, dataset_id = new_project(server, email, "Full spool")
        data = np.random.default_rng(11).bytes(8 * 1024**2)
        with server.client(email, USER_PASSWORD) as client:
            created = create(client, len(data), filename="big.bin", dataset_id=dataset_id)
            assert created.status_code == 201, created.text
            location = created.headers["location"]
            filler = small_data_dir / "filler"
            stats = os.statvfs(small_data_dir)
            filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 2 * 1024**2))

            refused = patch(client, location, 0, data)
            assert refused.status_code == 507, refused.text
            offset = int(client.head(location, headers=TUS).headers["upload-offset"])
            spool_file = small_data_dir / "tus" / f"{location.rsplit('/', 1)[-1]}.part"
            assert spool_file.stat().st_size == offset

            # Once there is room again the upload goes on from there.
            filler.unlink()
            done = patch(client, location, offset, data[offset:])
            assert done.status_code == 204, done.text
            assert done.headers["upload-offset"] == str(len(data))
    finally:
        server.stop()


class _Retries(logging.Handler):
    """Notes the agent's "retrying" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.seen.set()


def test_the_agent_waits_for_a_full_server_within_retry_for(
    small_data_dir: Path, tmp_path: Path
) -> None:
    """507 is "not now": the agent tries again until --retry-for runs out, and gets the file
    through once the server has room again."""
    env = _server_env(tmp_path / "data", f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    env["ALLMICRO_UPLOAD_DIR"] = str(small_data_dir)
    server: LiveServer = _running_server(env, tmp_path / "server.log")
    retries = _Retries()
    logging.getLogger("allmicro.agent").addHandler(retries)
    try:
        email = "instrument@full-disk.example"
        _project_id, dataset_id = new_project(server, email, "Full agent")
        token = server.token(email, USER_PASSWORD)
        acquisition = tmp_path / "acquisition.bin"
        acquisition.write_bytes(np.random.default_rng(5).bytes(4 * 1024**2))
        filler = small_data_dir / "filler"
        stats = os.statvfs(small_data_dir)
        filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 1024**2))

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
        server.stop()


def test_a_full_store_at_completion_answers_507_and_the_upload_completes_later(
    small_data_dir: Path, tmp_path: Path
) -> None:
    """The spool has the whole file but the store has no room for it: 507 (not 503, "cannot be
    reached"), and the upload completes on the client's next request once there is room."""
    env = _server_env(tmp_path / "data", f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    env["ALLMICRO_STORAGE_URL"] = (small_data_dir / "objects").as_uri()
    server: LiveServer = _running_server(env, tmp_path / "server.log")
    try:
        email = "finisher@full-disk.example"
        _project_id, dataset_id = new_project(server, email, "Full store")
        data = np.random.default_rng(3).bytes(4 * 1024**2)
        filler = small_data_dir / "filler"
        stats = os.statvfs(small_data_dir)
        filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 1024**2))
        with server.client(email, USER_PASSWORD) as client:
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
    finally:
        server.stop()
