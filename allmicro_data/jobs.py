"""Background jobs: the Job row is the truth (status, attempts, lease, progress); runners only execute.

A runner claims a job by taking its lease in the catalogue, renews the lease by heartbeat while
the job runs, and records the outcome. A runner that dies stops renewing; once the lease has
expired, any runner puts the job back in the queue (or fails it, after max_attempts).
"""

from __future__ import annotations

import enum
import importlib
import json
import logging
import multiprocessing
import os
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from pydantic import SecretStr
from sqlalchemy import CursorResult, and_, case, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from allmicro_data import logs, metrics, notifications
from allmicro_data.catalogue.models import (
    File,
    Image,
    ImageFile,
    ImageStatus,
    Job,
    JobKind,
    JobStatus,
    utcnow,
)
from allmicro_data.scratch import sweep_scratch
from allmicro_data.settings import DEFAULT_JOB_LARGE_FILE_BYTES, Settings
from allmicro_data.storage import is_storage_full

if TYPE_CHECKING:
    from allmicro_data.services import Services

log = logging.getLogger(__name__)

# What runs each kind of job, as "module:function"; the function takes (JobContext) and returns
# nothing. Kept as import paths so the core does not import the ingest package at start-up.
HANDLERS: dict[JobKind, str] = {JobKind.INGEST: "allmicro_data.ingest.pipeline:run_ingest_job"}

RETRY_BACKOFF_SECONDS = (5.0, 30.0, 120.0, 600.0)
STORAGE_FULL_MESSAGE = "storage full: the server has no space left to store this image"


# A store that is full is not the job's fault: it waits (settings.storage_full_retry_seconds,
# doubled after each try up to this factor) and tries again for as long as it takes.
STORAGE_FULL_MAX_FACTOR = 16
STORAGE_FULL_RETRIES = "storage_full_retries"


class JobFailure(Exception):
    """A job cannot succeed. `transient` failures (I/O, network) are retried with backoff;
    permanent ones (bad input) fail the job at once; `storage_full` ones wait for space without
    counting as attempts. The message is shown to the user."""

    def __init__(
        self, message: str, *, transient: bool = False, storage_full: bool = False
    ) -> None:
        super().__init__(message)
        self.transient = transient or storage_full
        self.storage_full = storage_full


def storage_full_delay(base_seconds: float, retries: int) -> float:
    """Seconds before the retries-th try of a job that found the store full."""
    return base_seconds * min(2 ** max(0, retries - 1), STORAGE_FULL_MAX_FACTOR)


# Paths in the system temp folder (and our scratch directories wherever they are) say nothing to
# a user and tell an attacker how the server is laid out: errors keep only the file's name.
_SCRATCH_PATH = re.compile(
    rf"(?:{re.escape(tempfile.gettempdir().rstrip('/'))}/"
    r"|/[^\s'\"]*?allmicro-(?:ingest|tia|mrc)-)[^\s'\"]*"
)


def public_error(message: str) -> str:
    """An error message fit to show a user: server temp paths replaced by the file's name."""
    return _SCRATCH_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], message)


class LeaseLost(Exception):
    """Another runner took the job over (our lease expired); stop without recording anything."""


def _changed(session: Session, statement: Any) -> int:
    """Rows an UPDATE changed."""
    result = cast(CursorResult[Any], session.execute(statement))
    return int(result.rowcount or 0)


def enqueue(
    session: Session,
    kind: JobKind,
    *,
    dataset_id: str | None = None,
    file_id: str | None = None,
    payload: dict[str, Any] | None = None,
    created_by_id: str | None = None,
    max_attempts: int = 3,
) -> Job:
    job = Job(
        kind=kind,
        status=JobStatus.QUEUED,
        dataset_id=dataset_id,
        file_id=file_id,
        payload=payload or {},
        created_by_id=created_by_id,
        max_attempts=max_attempts,
    )
    session.add(job)
    session.flush()
    return job


def new_owner() -> str:
    """A lease owner name that says where the job runs, unique per claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _fail_images(session: Session, file_ids: list[str], message: str) -> None:
    """Images of these files left `processing` by a failed job are failed with its reason: an
    image is processing only while a job that will finish it is alive."""
    if not file_ids:
        return
    images = select(ImageFile.image_id).where(
        ImageFile.file_id.in_(file_ids), ImageFile.role == "primary"
    )
    session.execute(
        update(Image)
        .where(Image.id.in_(images), Image.status == ImageStatus.PROCESSING)
        .values(status=ImageStatus.FAILED, error=message, updated_at=utcnow())
    )


def reap_expired(sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    """Put jobs whose runner vanished back in the queue, or fail them after max_attempts."""
    now = now or utcnow()
    expired = and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    gave_up = "the worker running this job stopped before finishing, on every attempt; giving up"
    with sessions.begin() as session:
        exhausted_jobs = list(
            session.scalars(
                select(Job).where(
                    expired, Job.attempts >= Job.max_attempts, Job.file_id.is_not(None)
                )
            )
        )
        exhausted_files = [job.file_id for job in exhausted_jobs]
        exhausted = _changed(
            session,
            update(Job)
            .where(expired, Job.attempts >= Job.max_attempts)
            .values(
                status=JobStatus.FAILED,
                error=gave_up,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
            ),
        )
        _fail_images(session, [f for f in exhausted_files if f is not None], gave_up)
        for job in exhausted_jobs:
            notifications.upload_job_failed(session, job)
        requeued = _changed(
            session,
            update(Job)
            .where(expired, Job.attempts < Job.max_attempts)
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None),
        )
    if exhausted or requeued:
        log.warning("expired job leases: %d requeued, %d failed", requeued, exhausted)
    return requeued + exhausted


class Lane(enum.Enum):
    """Which queued jobs a runner may take: a small file never waits behind a long job."""

    ANY = "any"  # small files first, then large ones, each oldest first
    SMALL = "small"  # only jobs of files up to the large-file size (and jobs without a file)
    LARGE = "large"  # only jobs of larger files, oldest first


DEFAULT_LARGE_FILE_BYTES = DEFAULT_JOB_LARGE_FILE_BYTES


def large_file(large_file_bytes: int) -> Any:
    """The SQL test for a job of a large file (a job without a file is small); the query must
    join File on Job.file_id (an outer join)."""
    return and_(File.size.is_not(None), File.size > large_file_bytes)


def size_first(large_file_bytes: int) -> tuple[Any, ...]:
    """The order runners take queued jobs in: small files before large ones, each oldest first.
    Within a lane jobs keep their arrival order, so no file is passed over for ever."""
    return (case((large_file(large_file_bytes), 1), else_=0), Job.created_at)


def claim(
    sessions: sessionmaker[Session],
    owner: str,
    lease_seconds: float,
    *,
    job_id: str | None = None,
    lane: Lane = Lane.ANY,
    large_file_bytes: int = DEFAULT_LARGE_FILE_BYTES,
) -> str | None:
    """Take the lease of one runnable job (the given one, or the first in size_first order
    within the lane); its id, or None."""
    now = utcnow()
    runnable = and_(
        Job.status == JobStatus.QUEUED, or_(Job.not_before.is_(None), Job.not_before <= now)
    )
    with sessions() as session:
        if job_id is None:
            query = select(Job.id).outerjoin(File, File.id == Job.file_id).where(runnable)
            if lane is Lane.SMALL:
                query = query.where(~large_file(large_file_bytes))
            elif lane is Lane.LARGE:
                query = query.where(large_file(large_file_bytes))
            candidates = session.scalars(
                query.order_by(*size_first(large_file_bytes)).limit(8)
            ).all()
        else:
            candidates = [job_id]
    for candidate in candidates:
        with sessions.begin() as session:
            # The WHERE repeats the runnable test: of two runners racing, one updates one row.
            taken = _changed(
                session,
                update(Job)
                .where(Job.id == candidate, runnable)
                .values(
                    status=JobStatus.RUNNING,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=Job.attempts + 1,
                    started_at=now,
                    error=None,
                    dispatched_at=None,
                ),
            )
        if taken == 1:
            return candidate
    return None


def job_is_large(sessions: sessionmaker[Session], job_id: str, large_file_bytes: int) -> bool:
    """Whether the job is one of a file larger than large_file_bytes (the large lane)."""
    with sessions() as session:
        size = session.scalar(
            select(File.size).join(Job, Job.file_id == File.id).where(Job.id == job_id)
        )
    return size is not None and size > large_file_bytes


def renew(
    sessions: sessionmaker[Session],
    job_id: str,
    owner: str,
    lease_seconds: float,
    progress: float | None = None,
) -> bool:
    """Extend our lease (and record progress); False when the lease is no longer ours."""
    values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["progress"] = max(0.0, min(100.0, progress))
    with sessions.begin() as session:
        done = _changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.RUNNING)
            .values(**values),
        )
    return done == 1


def succeed(sessions: sessionmaker[Session], job_id: str, owner: str) -> bool:
    with sessions.begin() as session:
        done = _changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.RUNNING)
            .values(
                status=JobStatus.SUCCEEDED,
                progress=100.0,
                error=None,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=utcnow(),
            ),
        )
    return done == 1


def fail(
    sessions: sessionmaker[Session],
    job_id: str,
    owner: str,
    message: str,
    *,
    transient: bool,
    storage_full: bool = False,
    storage_full_retry_seconds: float = 180.0,
) -> bool:
    """Record a failure: retry later if transient and attempts remain, else fail for good; a
    full store is waited for (growing delays, not counted as attempts), however long it takes.
    Images the job left processing are failed with the reason meanwhile."""
    now = utcnow()
    message = public_error(message)
    with sessions.begin() as session:
        job = session.get(Job, job_id)
        if job is None or job.lease_owner != owner or job.status is not JobStatus.RUNNING:
            return False
        job.lease_owner = None
        job.lease_expires_at = None
        if job.file_id is not None:
            _fail_images(session, [job.file_id], message)
        job.error = message
        if storage_full:
            retries = int((job.payload or {}).get(STORAGE_FULL_RETRIES, 0)) + 1
            delay = storage_full_delay(storage_full_retry_seconds, retries)
            job.payload = {**(job.payload or {}), STORAGE_FULL_RETRIES: retries}
            job.attempts = max(0, job.attempts - 1)
            job.status = JobStatus.QUEUED
            job.not_before = now + timedelta(seconds=delay)
            job.error = f"{message} (trying again in {delay:.0f} s)"
        elif transient and job.attempts < job.max_attempts:
            delay = RETRY_BACKOFF_SECONDS[min(job.attempts, len(RETRY_BACKOFF_SECONDS)) - 1]
            job.status = JobStatus.QUEUED
            job.not_before = now + timedelta(seconds=delay)
        else:
            job.status = JobStatus.FAILED
            job.finished_at = now
            notifications.upload_job_failed(session, job)
    return True


def rerun(session: Session, job: Job) -> Job:
    """Queue a finished job again from scratch (admins re-running an ingest)."""
    if job.status is JobStatus.RUNNING:
        from allmicro_data.errors import Conflict

        raise Conflict("the job is running")
    job.status = JobStatus.QUEUED
    job.attempts = 0
    job.progress = 0.0
    job.error = None
    job.not_before = None
    job.finished_at = None
    if job.payload and STORAGE_FULL_RETRIES in job.payload:
        job.payload = {k: v for k, v in job.payload.items() if k != STORAGE_FULL_RETRIES}
    session.flush()
    return job


# ---------------------------------------------------------------- execution


@dataclass(frozen=True)
class WorkerConfig:
    """What a job process needs: the server's settings, whole (picklable and hashable).

    Job processes are spawned (embedded runner) or forked by Celery. Settings rebuilt there from
    the environment would lose whatever the server was given in code: replicas, quorum, S3 keys.
    """

    # Settings as JSON, secrets included: never part of a repr, so never in a log.
    settings_json: str = field(repr=False)
    lease_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        document = settings.model_dump(mode="json")
        for name, value in settings:
            if isinstance(value, SecretStr):
                document[name] = value.get_secret_value()
        return cls(json.dumps(document, sort_keys=True), settings.job_lease_seconds)

    def settings(self) -> Settings:
        """The settings again, as given: every field is set, so the environment adds nothing."""
        return Settings(**json.loads(self.settings_json))


class JobContext:
    """Handed to a job handler: the job, the services, and a progress reporter."""

    def __init__(self, services: Services, job: Job, owner: str, lease_seconds: float) -> None:
        self.services = services
        self.job = job
        self.owner = owner
        self._lease_seconds = lease_seconds
        self._progress = 0.0
        self._lost = threading.Event()
        self.finished = False

    def report(self, fraction: float) -> None:
        """Progress as a fraction 0..1; raises LeaseLost if another runner took over."""
        self._progress = 100.0 * max(0.0, min(1.0, fraction))
        if self._lost.is_set():
            raise LeaseLost(self.job.id)

    def finish_in(self, session: Session) -> None:
        """Record success in the handler's own transaction, fenced by our lease: the job's
        results and its success commit together, or (lease lost) not at all."""
        self._end_in(
            session,
            status=JobStatus.SUCCEEDED,
            progress=100.0,
            error=None,
            finished_at=utcnow(),
        )

    def defer_in(
        self, session: Session, not_before: datetime, payload: dict[str, Any], reason: str
    ) -> None:
        """Queue the job again for not_before, fenced by our lease: it waits for something that
        is not there yet (the other files of its acquisition), and says what in its error. A
        wait is not a failed attempt."""
        self._end_in(
            session,
            status=JobStatus.QUEUED,
            not_before=not_before,
            payload=payload,
            error=reason,
            attempts=Job.attempts - 1,
            progress=0.0,
        )

    def _end_in(self, session: Session, **values: Any) -> None:
        """Leave the running state with these values, fenced by our lease: if another runner
        has taken the job meanwhile, nothing changes and LeaseLost is raised."""
        done = _changed(
            session,
            update(Job)
            .where(
                Job.id == self.job.id,
                Job.lease_owner == self.owner,
                Job.status == JobStatus.RUNNING,
            )
            .values(lease_owner=None, lease_expires_at=None, **values),
        )
        if done != 1:
            self._lost.set()
            raise LeaseLost(self.job.id)
        self.finished = True

    def heartbeat(self) -> bool:
        if self.finished:
            return False
        ok = renew(
            self.services.sessions, self.job.id, self.owner, self._lease_seconds, self._progress
        )
        if not ok:
            self._lost.set()
        return ok


_process_services: dict[WorkerConfig, Any] = {}


def _services_for(config: WorkerConfig) -> Any:
    services = _process_services.get(config)
    if services is None:
        from allmicro_data.logs import configure_logging
        from allmicro_data.services import Services

        settings = config.settings()
        if not logging.getLogger().handlers:
            # A spawned job process starts with bare logging: log as the server does, so that
            # its lines (JSON with job ids, say) reach the server's log collector alike.
            configure_logging(settings.log_level, settings.log_format)
        services = Services.from_settings(settings)
        _process_services[config] = services
    return services


def _handler(kind: JobKind) -> Callable[[JobContext], None]:
    module_name, func_name = HANDLERS[kind].split(":")
    func: Callable[[JobContext], None] = getattr(importlib.import_module(module_name), func_name)
    return func


def execute(config: WorkerConfig, job_id: str, owner: str) -> str:
    """Run a claimed job to its outcome in this process; returns the final status."""
    services = _services_for(config)
    sessions = services.sessions
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            return "missing"
        session.expunge(job)
    ctx = JobContext(services, job, owner, config.lease_seconds)
    stop = threading.Event()
    started = time.monotonic()
    logs.job_id.set(job_id)

    def beat() -> None:
        while not stop.wait(config.lease_seconds / 3):
            if not ctx.heartbeat():
                return

    beater = threading.Thread(target=beat, name=f"lease-{job_id[:8]}", daemon=True)
    beater.start()
    outcome = _run_handler(sessions, ctx, job, owner, stop, beater)
    seconds = time.monotonic() - started
    metrics.JOB_DURATION.labels(job.kind.value, outcome).observe(seconds)
    if outcome == "succeeded" and job.file_id is not None:
        with sessions() as session:
            size = session.scalar(select(File.size).where(File.id == job.file_id))
        metrics.observe_stage(job.kind.value, "ingest", seconds, size or 0)
    logs.job_id.set(None)
    return outcome


def _run_handler(
    sessions: sessionmaker[Session],
    ctx: JobContext,
    job: Job,
    owner: str,
    stop: threading.Event,
    beater: threading.Thread,
) -> str:
    job_id = job.id
    retry_seconds = float(ctx.services.settings.storage_full_retry_seconds)
    try:
        _handler(job.kind)(ctx)
    except LeaseLost:
        log.warning("job %s: lease lost, another runner has it", job_id)
        return "lease-lost"
    except JobFailure as exc:
        log.warning("job %s failed (transient=%s): %s", job_id, exc.transient, exc)
        fail(
            sessions,
            job_id,
            owner,
            str(exc),
            transient=exc.transient,
            storage_full=exc.storage_full,
            storage_full_retry_seconds=retry_seconds,
        )
        return "failed"
    except Exception as exc:
        if is_storage_full(exc):
            log.warning("job %s: the store or a scratch disk is full: %s", job_id, exc)
            fail(
                sessions,
                job_id,
                owner,
                STORAGE_FULL_MESSAGE,
                transient=True,
                storage_full=True,
                storage_full_retry_seconds=retry_seconds,
            )
            return "failed"
        # Unknown errors may be passing (a database restart): retry within max_attempts,
        # keeping the reason for the user and the traceback for the log.
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        fail(
            sessions, job_id, owner, f"internal error: {type(exc).__name__}: {exc}", transient=True
        )
        return "failed"
    finally:
        stop.set()
        beater.join()
    if not ctx.finished and not succeed(sessions, job_id, owner):
        log.warning("job %s: finished, but its lease was lost; another runner has it", job_id)
        return "lease-lost"
    log.info("job %s succeeded", job_id)
    return "succeeded"


def lower_priority(nice: int, idle: bool = False) -> None:
    """Make this job process yield the CPU to request handling: ingest is batch work, and a
    viewer waiting for a tile must not wait for a pyramid (its threads inherit the niceness
    and the scheduling class). idle: also the SCHED_IDLE class (Linux; settings.job_idle_scheduling)."""
    if idle and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            log.warning("could not put job process %d in the idle class", os.getpid())
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:
            log.warning("could not lower the priority of job process %d", os.getpid())


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread alone yield the CPU to request handling, by nice more than its
    process (Linux schedules threads one by one; elsewhere a no-op): the server's own ingest
    work, writing and hashing uploads, beside the threads that answer viewers."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(
            os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice)
        )
    except OSError:
        log.warning("could not lower the priority of thread %d", thread)


def _job_process_init(nice: int, idle: bool) -> None:
    lower_priority(nice, idle)
    _exit_with_parent()


def _exit_with_parent() -> None:
    """Job processes end when the process that started them dies: a job must not go on in an
    orphan while the restarted server, seeing its lease expire, runs it again."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class EmbeddedRunner:
    """The default runner: a thread that claims jobs and runs them in a local process pool.

    A free worker starts a waiting large job (settings.job_large_file_bytes) first: it would
    otherwise start last, when the small files run out, and end the day alone; a single worker
    takes small files first. While every worker holds a large job, one more process runs small
    files, one at a time, so that a small file never queues behind a tomogram and no file waits
    while a worker is free. Job processes run niced (settings.job_nice), in the idle
    scheduling class if settings.job_idle_scheduling."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: WorkerConfig,
        *,
        workers: int = 2,
        poll_seconds: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.workers = max(1, workers)
        self.poll_seconds = poll_seconds
        settings = config.settings()
        self.large_file_bytes = settings.job_large_file_bytes
        self.nice = settings.job_nice
        self.idle = settings.job_idle_scheduling
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._running: dict[Future[str], str] = {}
        self._large: set[str] = set()

    def start(self) -> None:
        # Scratch directories of job processes a previous server left when it was killed.
        sweep_scratch()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for work now (called after enqueueing)."""
        self._wake.set()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: job processes must not inherit the server's threads and open connections.
        return ProcessPoolExecutor(
            # One more than the workers: the process for small files while all hold large jobs.
            max_workers=self.workers + 1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_job_process_init,
            initargs=(self.nice, self.idle),
        )

    def _loop(self) -> None:
        self._pool = self._new_pool()
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("job runner tick failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _tick(self) -> None:
        for future in [f for f in self._running if f.done()]:
            job_id = self._running.pop(future)
            self._large.discard(job_id)
            try:
                future.result()
            except Exception as exc:
                # The job process died (killed, out of memory, crashed interpreter). Its lease
                # will expire and the job runs again; a fresh pool replaces the broken one.
                log.error("job %s: worker process died: %s", job_id, exc)
                if self._pool is not None:
                    self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
        reap_expired(self.sessions)
        while not self._stop.is_set():
            large = len(self._large)
            if len(self._running) < self.workers:
                # A free worker starts a waiting large job at once (the longest job must not
                # start last and end the day alone), else a small one; one worker alone takes
                # small files first.
                lanes = [Lane.LARGE, Lane.ANY] if self.workers > 1 else [Lane.ANY]
            elif large == len(self._running):
                # Every worker holds a large job: one more process, for small files only, so
                # that a small file never waits behind them.
                lanes = [Lane.SMALL]
            else:
                return
            owner = new_owner()
            claimed = None
            for lane in lanes:
                claimed = claim(
                    self.sessions,
                    owner,
                    self.config.lease_seconds,
                    lane=lane,
                    large_file_bytes=self.large_file_bytes,
                )
                if claimed is not None:
                    break
            if claimed is None:
                return
            if lane is Lane.LARGE or (
                lane is Lane.ANY and job_is_large(self.sessions, claimed, self.large_file_bytes)
            ):
                self._large.add(claimed)
            assert self._pool is not None
            future = self._pool.submit(execute, self.config, claimed, owner)
            future.add_done_callback(lambda _f: self._wake.set())
            self._running[future] = claimed
