"""What a failed job leaves behind: images failed with its reason, errors without server paths,
storage-full waits that outlast max_attempts, and no scratch directories of killed processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

from allmicro_data import jobs
from allmicro_data.catalogue import models
from allmicro_data.directory import create_dataset, create_project
from allmicro_data.scratch import GRACE_SECONDS, INGEST_PREFIX, sweep_scratch


def _job_with_processing_image(services: Any, name: str, max_attempts: int = 3) -> tuple[str, str]:
    """A queued ingest job of a file whose image is being made; (job id, image id)."""
    with services.session() as session:
        project = create_project(session, name=f"failures {name}")
        dataset = create_dataset(session, project_id=project.id, name="d")
        file = models.File(
            dataset_id=dataset.id, storage_key="raw/x", size=1, sha256=name, original_name=name
        )
        session.add(file)
        session.flush()
        image = models.Image(dataset_id=dataset.id, name=name, status=models.ImageStatus.PROCESSING)
        session.add(image)
        session.flush()
        session.add(models.ImageFile(image_id=image.id, file_id=file.id, role="primary"))
        job = jobs.enqueue(
            session,
            models.JobKind.INGEST,
            dataset_id=dataset.id,
            file_id=file.id,
            max_attempts=max_attempts,
        )
        return job.id, image.id


def _get(services: Any, kind: type[Any], id_: str) -> Any:
    with services.session() as session:
        row = session.get(kind, id_)
        assert row is not None
        return row


def test_a_failed_job_fails_its_image_with_a_reason_free_of_server_temp_paths(
    services: Any,
) -> None:
    job_id, image_id = _job_with_processing_image(services, "broken.tif", max_attempts=1)
    assert jobs.claim(services.sessions, "runner", 30) == job_id
    # What a reader's OSError looks like once it reaches the job: the scratch copy's full path.
    scratch = Path(tempfile.gettempdir()) / f"{INGEST_PREFIX}k3j2h1" / "broken.tif"
    message = f"internal error: OSError: [Errno 5] Input/output error: '{scratch}'"
    assert jobs.fail(services.sessions, job_id, "runner", message, transient=True)
    job = _get(services, models.Job, job_id)
    image = _get(services, models.Image, image_id)
    assert job.status is models.JobStatus.FAILED
    for error in (job.error, image.error):
        assert error == "internal error: OSError: [Errno 5] Input/output error: 'broken.tif'"
        assert tempfile.gettempdir() not in error
    assert image.status is models.ImageStatus.FAILED


def test_a_job_whose_worker_died_for_good_fails_its_image(services: Any) -> None:
    job_id, image_id = _job_with_processing_image(services, "killed.tif", max_attempts=1)
    assert jobs.claim(services.sessions, "dead", 1) == job_id
    assert jobs.reap_expired(services.sessions, now=models.utcnow() + timedelta(seconds=5)) == 1
    image = _get(services, models.Image, image_id)
    assert image.status is models.ImageStatus.FAILED
    assert "stopped before finishing" in image.error


def test_storage_full_waits_longer_each_time_without_using_up_attempts(services: Any) -> None:
    job_id, image_id = _job_with_processing_image(services, "big.tif", max_attempts=2)
    delays = []
    for _try in range(7):
        with services.session() as session:
            session.get_one(models.Job, job_id).not_before = None
        assert jobs.claim(services.sessions, "runner", 30) == job_id
        before = models.utcnow()
        jobs.fail(
            services.sessions,
            job_id,
            "runner",
            jobs.STORAGE_FULL_MESSAGE,
            transient=True,
            storage_full=True,
            storage_full_retry_seconds=60,
        )
        job = _get(services, models.Job, job_id)
        assert job.status is models.JobStatus.QUEUED
        assert job.attempts == 0
        assert job.error.startswith("storage full:")
        delays.append(round((job.not_before - before).total_seconds() / 60))
        image = _get(services, models.Image, image_id)
        assert image.status is models.ImageStatus.FAILED
        assert image.error.startswith("storage full:")
    assert delays == [1, 2, 4, 8, 16, 16, 16]
    # A rerun by an admin starts the waits afresh.
    with services.session() as session:
        jobs.rerun(session, session.get_one(models.Job, job_id))
    assert jobs.STORAGE_FULL_RETRIES not in _get(services, models.Job, job_id).payload


def test_scratch_directories_of_killed_job_processes_are_swept(tmp_path: Path) -> None:
    # A job process that is killed while it holds its scratch directory.
    script = textwrap.dedent(
        """
        import sys, time
        from allmicro_data.scratch import scratch_directory
        with scratch_directory() as workdir:
            (workdir / "copy-of-original.tif").write_bytes(b"x" * 1000)
            print(workdir, flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    killed = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    assert killed.stdout is not None
    left = Path(killed.stdout.readline().strip())
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    # One still in use by a live job process.
    alive = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert alive.stdout is not None
        in_use = Path(alive.stdout.readline().strip())
        old = models.utcnow().timestamp() - GRACE_SECONDS - 10
        for directory in (left, in_use):
            os.utime(directory, (old, old))
        # One just made, whose lock may not be taken yet.
        (fresh := tmp_path / f"{INGEST_PREFIX}fresh").mkdir()
        assert left.is_dir() and left.parent == tmp_path
        assert sweep_scratch(directory=tmp_path) == 1
        assert not left.exists()
        assert in_use.is_dir() and fresh.is_dir()
    finally:
        alive.kill()
        alive.wait()
    assert sweep_scratch(directory=tmp_path) == 1
    assert not in_use.exists()
