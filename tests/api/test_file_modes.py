"""What the server leaves on disk: confidential bytes readable by its own user only, and no
scratch directories of killed jobs."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

from allmicro_data.scratch import GRACE_SECONDS, INGEST_PREFIX
from tests.api.test_end_to_end import FEI, USER_PASSWORD, wait_for_job
from tests.api.test_uploads import create, new_project, patch
from tests.conftest import _running_server, _server_env, wait_until


def _others_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o077


def test_catalogue_spool_originals_and_secret_key_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    catalogue = data_dir / "catalogue.sqlite3"
    server = _running_server(_server_env(data_dir, f"sqlite:///{catalogue}"), tmp_path / "log")
    try:
        email = "keeper@file-modes.example"
        _project_id, dataset_id = new_project(server, email, "File modes")
        data = FEI.read_bytes()
        with server.client(email, USER_PASSWORD) as client:
            location = create(client, len(data), filename=FEI.name, dataset_id=dataset_id).headers[
                "location"
            ]
            half = len(data) // 2
            assert patch(client, location, 0, data[:half]).status_code == 204
            spool = data_dir / "uploads" / "tus"
            spool_file = spool / f"{location.rsplit('/', 1)[-1]}.part"
            assert spool_file.stat().st_size == half
            assert _others_bits(spool_file) == 0
            assert _others_bits(spool) == 0 and _others_bits(spool.parent) == 0
            assert patch(client, location, half, data[half:]).status_code == 204
        original = data_dir / "objects" / "raw" / hashlib.sha256(data).hexdigest()
        assert original.is_file()
        assert _others_bits(original) == 0
        assert _others_bits(data_dir / "secret.key") == 0
        for file in (catalogue, catalogue.with_name("catalogue.sqlite3-wal")):
            assert file.exists(), file
            assert _others_bits(file) == 0, (file, oct(file.stat().st_mode))
    finally:
        server.stop()


def test_scratch_left_by_killed_jobs_is_swept_at_server_and_job_start(tmp_path: Path) -> None:
    """allmicro-ingest-* directories nobody holds (their job process was killed) go when the
    server starts and when a job starts; one in use stays."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    long_ago = time.time() - GRACE_SECONDS - 60

    def left_behind(name: str) -> Path:
        directory = scratch / f"{INGEST_PREFIX}{name}"
        directory.mkdir()
        (directory / "copy-of-an-original.tif").write_bytes(b"\0" * 4096)
        os.utime(directory, (long_ago, long_ago))
        return directory

    before_start = left_behind("before-start")
    env = _server_env(tmp_path / "data", f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    env["TMPDIR"] = str(scratch)
    server = _running_server(env, tmp_path / "log")
    try:
        wait_until(lambda: not before_start.exists(), timeout=30, what="the sweep at start")
        before_job = left_behind("before-job")
        email = "sweeper@file-modes.example"
        _project_id, dataset_id = new_project(server, email, "Sweeping")
        data = FEI.read_bytes()
        with server.client(email, USER_PASSWORD) as client:
            location = create(client, len(data), filename=FEI.name, dataset_id=dataset_id).headers[
                "location"
            ]
            done = patch(client, location, 0, data)
            assert wait_for_job(client, done.headers["x-allmicro-job-id"])["status"] == "succeeded"
        assert not before_job.exists()
        # The job's own scratch directory goes with it: its success commits with its images,
        # inside the block that then removes the directory, so a reader may see it a moment.
        wait_until(
            lambda: list(scratch.glob(f"{INGEST_PREFIX}*")) == [],
            timeout=30,
            what="the job's scratch directory removed",
        )
    finally:
        server.stop()
