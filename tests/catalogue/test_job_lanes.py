"""Scheduling by size: small files are taken before large ones and never wait behind a long job
while a worker is free (embedded runner and Celery dispatch); job processes run niced, so that
viewers are served during ingest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from allmicro_data import jobs
from allmicro_data.catalogue import models
from allmicro_data.directory import create_dataset, create_project
from tests.conftest import wait_until

LARGE = 1000  # bytes: the large-file threshold these tests give the scheduler
GIB = 1024**3


def _queue_files(services: Any, sizes: list[int]) -> list[str]:
    """Queued ingest jobs of files of these sizes, created in this order; their ids."""
    with services.session() as session:
        project = create_project(session, name=f"lanes {uuid.uuid4().hex[:8]}")
        dataset = create_dataset(session, project_id=project.id, name="d")
        ids = []
        for index, size in enumerate(sizes):
            file = models.File(
                dataset_id=dataset.id,
                storage_key=f"raw/{index}",
                size=size,
                sha256=uuid.uuid4().hex,
                original_name=f"f{index}",
            )
            session.add(file)
            session.flush()
            job = jobs.enqueue(
                session, models.JobKind.INGEST, dataset_id=dataset.id, file_id=file.id
            )
            ids.append(job.id)
        session.commit()
    return ids


def test_a_small_file_queued_after_a_large_one_is_taken_first(services: Any) -> None:
    tomogram, small, later_small = _queue_files(services, [2 * GIB, 4096, 10])
    claim = {"large_file_bytes": GIB}
    assert jobs.claim(services.sessions, "w1", 30, **claim) == small
    assert jobs.claim(services.sessions, "w2", 30, **claim) == later_small
    # Nothing small is left: the large file is next, in any lane but the small one.
    assert jobs.claim(services.sessions, "w3", 30, lane=jobs.Lane.SMALL, **claim) is None
    assert jobs.claim(services.sessions, "w3", 30, **claim) == tomogram


class HeldPool:
    """A pool whose jobs never finish: what the runner gives its workers, and nothing else."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def submit(self, _fn: Any, _config: Any, job_id: str, _owner: str) -> Future[str]:
        self.started.append(job_id)
        return Future()


def _runner(services: Any, workers: int) -> tuple[jobs.EmbeddedRunner, HeldPool]:
    settings = services.settings.model_copy(update={"job_large_file_bytes": LARGE})
    runner = jobs.EmbeddedRunner(
        services.sessions, jobs.WorkerConfig.from_settings(settings), workers=workers
    )
    pool = HeldPool()
    runner._pool = pool  # type: ignore[assignment]
    return runner, pool


def test_large_jobs_take_every_free_worker_and_small_files_get_one_more_process(
    services: Any,
) -> None:
    big_a, big_b, big_c = _queue_files(services, [LARGE + 1, LARGE + 2, LARGE + 3])
    runner, pool = _runner(services, workers=2)
    runner._tick()
    # Two large jobs and two free workers: both start (neither waits while a worker is free);
    # the third waits for one of them.
    assert pool.started == [big_a, big_b]
    small_a, small_b = _queue_files(services, [LARGE, 10])
    runner._tick()
    # A small file queued after them starts at once, in the one more process kept for small
    # files while every worker holds a large job; the next small file waits for that one,
    # never for a large job, and the third large job waits for a worker.
    assert pool.started == [big_a, big_b, small_a]
    assert runner.large_file_bytes == LARGE
    for waiting in (small_b, big_c):  # still queued, so another runner could take them
        assert jobs.claim(services.sessions, "other", 30, job_id=waiting) == waiting


def test_one_worker_holding_a_large_job_leaves_a_process_for_small_files(services: Any) -> None:
    (big,) = _queue_files(services, [LARGE + 1])
    runner, pool = _runner(services, workers=1)
    runner._tick()
    small_a, _small_b = _queue_files(services, [20, 30])
    runner._tick()
    assert pool.started == [big, small_a]


def test_of_two_free_workers_one_starts_a_large_job_at_once(services: Any) -> None:
    tomogram, small_a, _small_b = _queue_files(services, [LARGE + 1, 10, 20])
    runner, pool = _runner(services, workers=2)
    runner._tick()
    assert pool.started == [tomogram, small_a]


def test_a_free_worker_starts_a_waiting_large_job_while_the_other_runs_a_small_one(
    services: Any,
) -> None:
    (first,) = _queue_files(services, [10])
    runner, pool = _runner(services, workers=2)
    runner._tick()
    tomogram, small = _queue_files(services, [LARGE + 1, 20])
    runner._tick()
    # The large job does not wait for the small files to run out (it would end the day alone);
    # the small one waits for the worker running a small job, never for the large one.
    assert pool.started == [first, tomogram]
    assert jobs.claim(services.sessions, "other", 30, job_id=small) == small


def test_a_single_worker_takes_the_small_file_queued_after_a_large_one(services: Any) -> None:
    _tomogram, small = _queue_files(services, [LARGE + 1, 20])
    runner, pool = _runner(services, workers=1)
    runner._tick()
    assert pool.started == [small]


def test_one_worker_takes_large_jobs_too(services: Any) -> None:
    (big,) = _queue_files(services, [LARGE + 1])
    runner, pool = _runner(services, workers=1)
    runner._tick()
    assert pool.started == [big]


def test_the_dispatcher_sends_small_files_first(services: Any) -> None:
    from allmicro_data.taskqueue import dispatch_pending

    tomogram, small = _queue_files(services, [2 * GIB, 100])
    sent: list[str] = []
    assert dispatch_pending(services.sessions, sent.append, 60, large_file_bytes=GIB) == 2
    assert sent == [small, tomogram]


def test_the_dispatcher_holds_large_files_back_while_one_is_on_its_way(services: Any) -> None:
    from allmicro_data.taskqueue import dispatch_pending

    tomo_a, tomo_b, small = _queue_files(services, [2 * GIB, 3 * GIB, 100])
    sent: list[str] = []

    def dispatch() -> int:
        return dispatch_pending(
            services.sessions, sent.append, 60, large_file_bytes=GIB, large_at_once=1
        )

    assert dispatch() == 2
    # The large job let through goes first: the other processes are left to small files.
    assert sent == [tomo_a, small]
    # The first tomogram is on its way (sent, not yet claimed), then running: the second waits.
    assert dispatch() == 0
    assert jobs.claim(services.sessions, "w", 30, job_id=tomo_a) == tomo_a
    assert dispatch() == 0
    assert jobs.succeed(services.sessions, tomo_a, "w")
    assert dispatch() == 1
    assert sent == [tomo_a, small, tomo_b]


@pytest.mark.parametrize("idle", [True, False])
def test_embedded_job_processes_run_niced_and_in_the_idle_class(services: Any, idle: bool) -> None:
    settings = services.settings.model_copy(update={"job_nice": 7, "job_idle_scheduling": idle})
    runner = jobs.EmbeddedRunner(services.sessions, jobs.WorkerConfig.from_settings(settings))
    pool = runner._new_pool()
    try:
        assert pool.submit(os.nice, 0).result(timeout=60) == os.nice(0) + 7
        if sys.platform.startswith("linux"):
            policy = pool.submit(os.sched_getscheduler, 0).result(timeout=60)
            assert policy == (os.SCHED_IDLE if idle else os.sched_getscheduler(0))
    finally:
        pool.shutdown()


def _broker_url() -> str:
    url = os.environ.get("ALLMICRO_TEST_BROKER_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("ALLMICRO_TEST_BROKER_URL (Redis) is required in CI")
        pytest.skip("ALLMICRO_TEST_BROKER_URL is not set (redis://127.0.0.1:6379/0)")
    return url


def test_celery_never_queues_a_small_file_behind_two_large_ones_and_runs_jobs_niced(
    services: Any, tmp_path: Path
) -> None:
    import redis

    from allmicro_data.taskqueue import CeleryDispatcher, celery_app

    broker = _broker_url()
    queue = f"allmicro-test-lanes-{uuid.uuid4().hex[:8]}"
    settings = services.settings.model_copy(
        update={
            "queue": "celery",
            "broker_url": broker,
            "celery_queue": queue,
            "job_large_file_bytes": GIB,
            "job_nice": 5,
        }
    )
    tomogram, _second_tomogram, small = _queue_files(services, [2 * GIB, 2 * GIB, 100])
    client = redis.Redis.from_url(broker)
    worker: subprocess.Popen[bytes] | None = None
    try:
        app = celery_app(settings)
        assert CeleryDispatcher(services.sessions, app, settings, reap=False).tick() == 2
        # kombu pushes on the left and workers pop on the right: reversed, this is take order.
        # One large job at a time (celery_large_jobs): the second waits in the catalogue, not
        # in the broker ahead of the small file.
        messages = [json.loads(m) for m in reversed(client.lrange(queue, 0, -1))]
        assert [m["headers"]["argsrepr"] for m in messages] == [
            repr([tomogram]),
            repr([small]),
        ]
        client.delete(queue)

        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ALLMICRO_")},
            "ALLMICRO_DATA_DIR": str(tmp_path / "worker"),
            "ALLMICRO_DATABASE_URL": settings.resolved_database_url,
            "ALLMICRO_QUEUE": "celery",
            "ALLMICRO_BROKER_URL": broker,
            "ALLMICRO_CELERY_QUEUE": queue,
            "ALLMICRO_JOB_NICE": "5",
            "ALLMICRO_JOB_IDLE_SCHEDULING": "true",
            "ALLMICRO_UPGRADE_ON_START": "false",
        }
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("allmicro")), "worker", "--concurrency", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = os.getpriority(os.PRIO_PROCESS, worker.pid)

        def pool_niceness() -> list[int] | None:
            children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
            nices = [os.getpriority(os.PRIO_PROCESS, int(pid)) for pid in children]
            idle = all(os.sched_getscheduler(int(pid)) == os.SCHED_IDLE for pid in children)
            return nices if nices and idle and all(n == base + 5 for n in nices) else None

        assert wait_until(pool_niceness, timeout=60, what="a niced Celery pool process, idle class")
        # The worker's own process (consuming, dispatching) keeps the normal priority.
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == base
        assert os.sched_getscheduler(worker.pid) == os.sched_getscheduler(0)
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        for key in client.keys(f"*{queue}*"):
            client.delete(key)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads are niced on Linux")
def test_upload_threads_run_at_the_ingest_niceness_and_the_callers_do_not(
    services: Any, tmp_path: Path
) -> None:
    """The server's threads that write and hash an upload are ingest work, niced like the job
    processes; the thread that handed them the bytes (the server's request handling) is not."""
    import dataclasses
    import hashlib
    import threading

    from allmicro_data.catalogue.models import Upload
    from allmicro_data.uploads import Receiver

    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    niced = dataclasses.replace(
        services, settings=services.settings.model_copy(update={"job_nice": 6})
    )
    upload = Upload(id="0" * 36, length=1 << 20, upload_offset=0)
    path = tmp_path / "spool"
    path.touch()
    caller = nice_of_this_thread()
    with path.open("r+b", buffering=0) as handle:
        receiver = Receiver(niced, upload, path, handle, hashlib.sha256(), None)
        try:
            receiver.submit([b"x" * 1000]).result(timeout=30)
            assert receiver._writer.submit(nice_of_this_thread).result(timeout=30) == caller + 6
            assert receiver._hasher.submit(nice_of_this_thread).result(timeout=30) == caller + 6
        finally:
            receiver.close()
    assert nice_of_this_thread() == caller
