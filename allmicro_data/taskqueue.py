"""The Celery queue: job ids go to a broker, `allmicro worker` processes on any host run them.

The Job row stays the truth. A message only says "look at job X": the task claims the job's
lease in the catalogue and runs it with the same `jobs.execute` as the embedded runner, or
returns at once when the job is not runnable (done, running elsewhere, or not due yet). So a
message delivered twice, or sent again by the dispatcher, never runs a job twice at once.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from allmicro_data.catalogue.models import File, Job, JobStatus, utcnow
from allmicro_data.jobs import (
    DEFAULT_LARGE_FILE_BYTES,
    WorkerConfig,
    claim,
    execute,
    large_file,
    lower_priority,
    new_owner,
    reap_expired,
    size_first,
)
from allmicro_data.scratch import sweep_scratch
from allmicro_data.settings import Settings

log = logging.getLogger(__name__)

RUN_JOB_TASK = "allmicro.run_job"


def celery_app(settings: Settings) -> Any:
    """A Celery app on the configured broker, with the job task registered."""
    from celery import Celery

    if not settings.broker_url:
        raise RuntimeError("ALLMICRO_QUEUE=celery needs ALLMICRO_BROKER_URL (redis:// or amqp://)")
    app = Celery("allmicro", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        # Acknowledge after the job, and give the message back if the worker process dies, so
        # a lost worker loses no message; the lease keeps a redelivery from running it twice.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Jobs are long: a worker takes one message per free process, never a backlog.
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )
    config = WorkerConfig.from_settings(settings)

    @app.task(name=RUN_JOB_TASK)  # type: ignore[untyped-decorator]
    def run_job(job_id: str) -> str:
        return run_queued_job(config, job_id)

    return app


def run_queued_job(config: WorkerConfig, job_id: str) -> str:
    """Claim the job named by a message and run it; 'not-runnable' when someone else has it."""
    from allmicro_data.jobs import _services_for

    owner = new_owner()
    if claim(_services_for(config).sessions, owner, config.lease_seconds, job_id=job_id) is None:
        log.info("job %s: not runnable here (done, running elsewhere or not due)", job_id)
        return "not-runnable"
    return execute(config, job_id, owner)


def dispatch_pending(
    sessions: sessionmaker[Session],
    send: Any,
    redispatch_after: float,
    limit: int = 500,
    *,
    large_file_bytes: int = DEFAULT_LARGE_FILE_BYTES,
    large_at_once: int | None = None,
) -> int:
    """Send the ids of runnable queued jobs that were never sent, or sent long ago; the number
    sent. Each id is marked in the same UPDATE that selects it: of several dispatchers (API
    processes, workers) racing, one sends it. Jobs of small files are sent before those of
    large ones (jobs.size_first), so a free worker takes a small file first; with
    large_at_once, jobs of large files are sent only while fewer are running or on their way
    (and then first), so that the workers' other processes stay free for small files."""
    now = utcnow()
    due = and_(
        Job.status == JobStatus.QUEUED,
        or_(Job.not_before.is_(None), Job.not_before <= now),
        or_(
            Job.dispatched_at.is_(None),
            Job.dispatched_at < now - timedelta(seconds=redispatch_after),
        ),
    )
    large = large_file(large_file_bytes)
    with sessions.begin() as session:
        rows = session.execute(
            select(Job.id, case((large, True), else_=False))
            .outerjoin(File, File.id == Job.file_id)
            .where(due)
            .order_by(*size_first(large_file_bytes))
            .limit(limit)
        ).all()
        if large_at_once is not None and any(is_large for _, is_large in rows):
            # Sent not long ago and not yet claimed counts too: it is on its way to a worker.
            on_their_way = or_(
                Job.status == JobStatus.RUNNING,
                and_(
                    Job.status == JobStatus.QUEUED,
                    Job.dispatched_at >= now - timedelta(seconds=redispatch_after),
                ),
            )
            busy = session.scalar(
                select(func.count())
                .select_from(Job)
                .outerjoin(File, File.id == Job.file_id)
                .where(large, on_their_way)
            )
            room = max(0, large_at_once - int(busy or 0))
            # The few large jobs let through go first: the workers' other processes are left
            # to small files, and the longest job does not start last.
            rows = [r for r in rows if r[1]][:room] + [r for r in rows if not r[1]]
        candidates = [job_id for job_id, _ in rows]
        if not candidates:
            return 0
        marked = list(
            session.scalars(
                update(Job)
                .where(Job.id.in_(candidates), due)
                .values(dispatched_at=now)
                .returning(Job.id)
            )
        )
    # RETURNING keeps no order: send in the order selected.
    taken = set(marked)
    sent = 0
    for job_id in [c for c in candidates if c in taken]:
        try:
            send(job_id)
            sent += 1
        except Exception:
            # The broker is away: unmark, so that the next round sends it.
            log.exception("job %s: sending to the broker failed", job_id)
            with sessions.begin() as session:
                session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=None))
    return sent


class CeleryDispatcher:
    """A thread that sends queued job ids to the broker: at once when woken (after an upload),
    and every `interval` seconds; with `reap`, it first puts jobs of vanished workers back."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        app: Any,
        settings: Settings,
        *,
        reap: bool,
    ) -> None:
        self.sessions = sessions
        self.app = app
        self.queue = settings.celery_queue
        self.interval = settings.job_dispatch_seconds
        self.redispatch_after = settings.job_redispatch_seconds
        self.large_file_bytes = settings.job_large_file_bytes
        self.large_at_once = settings.celery_large_jobs
        self.reap = reap
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, job_id: str) -> None:
        self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=self.queue)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-dispatch", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def tick(self) -> int:
        if self.reap:
            reap_expired(self.sessions)
        return dispatch_pending(
            self.sessions,
            self.send,
            self.redispatch_after,
            large_file_bytes=self.large_file_bytes,
            large_at_once=self.large_at_once,
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("job dispatch failed")
            self._wake.wait(self.interval)
            self._wake.clear()


def _exit_with_worker() -> None:
    """A Celery pool process ends when its worker dies (SIGKILL, host lost): an orphan must not
    go on renewing the lease of a job that another worker should take over."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


def run_worker(settings: Settings, concurrency: int, *, metrics_port: int = 0) -> None:
    """Run a Celery worker for the job queue, with a dispatcher that reaps and re-sends."""
    from celery.signals import worker_process_init

    from allmicro_data.services import Services

    if metrics_port:
        _serve_metrics(metrics_port)

    app = celery_app(settings)
    services = Services.from_settings(settings)
    # Scratch directories of job processes a previous worker left when it was killed.
    sweep_scratch()
    dispatcher = CeleryDispatcher(services.sessions, app, settings, reap=True)

    def child_init(**_: Any) -> None:
        # Connections opened by the main process are not the child's to use or close.
        services.engine.dispose(close=False)
        lower_priority(settings.job_nice, settings.job_idle_scheduling)
        _exit_with_worker()

    worker_process_init.connect(child_init, weak=False)
    dispatcher.start()
    try:
        app.worker_main(
            [
                # No banner on stdout: every line of output is a log record (JSON or text).
                "--quiet",
                "worker",
                f"--concurrency={max(1, concurrency)}",
                f"--queues={settings.celery_queue}",
                f"--hostname=allmicro-{os.getpid()}@%h",
                f"--loglevel={settings.log_level}",
                "--without-gossip",
                "--without-mingle",
                "--pool=prefork",
            ]
        )
    finally:
        dispatcher.stop()
        services.close()


def _serve_metrics(port: int) -> None:
    """The job counters of this worker and its pool processes, for Prometheus to scrape."""
    from allmicro_data.metrics import serve_exposition

    serve_exposition("0.0.0.0", port, None)  # noqa: S104 - scraped from outside
