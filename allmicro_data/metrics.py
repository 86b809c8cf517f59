"""Prometheus metrics: requests, jobs and storage, counted in every process and read at /metrics.

A server or worker runs several processes (job pool, Celery pool), so counters are kept in
prometheus-client's multiprocess mode when its directory was set before the client was imported
(`_share_metrics` in cli.py). Figures that describe the whole installation (job queue depth,
stored originals, replica backlog, the last scrub) are read from the catalogue at scrape time, so
every API process reports the same numbers. The HTTP counters below are filled by the API's
middleware, `api.request_observer`, kept there so that workers never import Starlette.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "allmicro_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "allmicro_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts streaming)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOB_DURATION = Histogram(
    "allmicro_job_duration_seconds",
    "Time from claim to outcome of one job attempt",
    ["kind", "outcome"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
)
JOB_BYTES = Counter(
    "allmicro_job_bytes",
    "Bytes through each stage of succeeded jobs: originals for fetch, read and the whole ingest, "
    "decoded pixels for pyramid",
    ["kind", "stage"],
)
JOB_THROUGHPUT = Histogram(
    "allmicro_job_bytes_per_second",
    "Bytes per second of one job stage (see allmicro_job_bytes for what is counted)",
    ["kind", "stage"],
    buckets=(1e5, 1e6, 5e6, 1e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 5e9),
)
STAGE_DURATION = Histogram(
    "allmicro_job_stage_duration_seconds",
    "Time of one stage of a job: fetch originals, read metadata, write the pyramid",
    ["kind", "stage"],
    buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
STORAGE_ERRORS = Counter(
    "allmicro_storage_errors", "Object store operations that failed", ["where"]
)


def observe_stage(kind: str, stage: str, seconds: float, nbytes: int) -> None:
    JOB_BYTES.labels(kind, stage).inc(nbytes)
    if seconds > 0:
        JOB_THROUGHPUT.labels(kind, stage).observe(nbytes / seconds)


@contextmanager
def stage(kind: str, name: str, nbytes: int) -> Iterator[None]:
    """Time a stage of a job; its figures are recorded only when it completes."""
    started = time.monotonic()
    yield
    seconds = time.monotonic() - started
    STAGE_DURATION.labels(kind, name).observe(seconds)
    observe_stage(kind, name, seconds, nbytes)


class CatalogueCollector(Collector):
    """Installation-wide figures from the catalogue, read when scraped."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from allmicro_data.catalogue.models import File, Job, JobStatus, ReplicaPending, ScrubRun

        with self.sessions() as session:
            by_status = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            oldest = session.scalar(
                select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED)
            )
            originals, original_bytes = session.execute(
                select(func.count(), func.coalesce(func.sum(File.size), 0))
            ).one()
            pending = session.scalar(select(func.count()).select_from(ReplicaPending))
            scrub = session.scalars(
                select(ScrubRun)
                .where(ScrubRun.finished_at.is_not(None))
                .order_by(ScrubRun.finished_at.desc())
                .limit(1)
            ).first()
        jobs = GaugeMetricFamily(
            "allmicro_jobs", "Jobs in the catalogue by status", labels=["status"]
        )
        for status in JobStatus:
            jobs.add_metric([status.value], float(by_status.get(status, 0)))
        yield jobs
        age = 0.0 if oldest is None else max(0.0, time.time() - oldest.timestamp())
        yield GaugeMetricFamily(
            "allmicro_job_oldest_queued_seconds", "Age of the oldest queued job", value=age
        )
        yield GaugeMetricFamily(
            "allmicro_stored_originals", "Originals in the catalogue", value=float(originals)
        )
        yield GaugeMetricFamily(
            "allmicro_stored_original_bytes",
            "Bytes of originals in the catalogue",
            value=float(original_bytes),
        )
        yield GaugeMetricFamily(
            "allmicro_replica_pending",
            "Objects a replica still has to receive or drop",
            value=float(pending or 0),
        )
        if scrub is not None:
            copies = GaugeMetricFamily(
                "allmicro_scrub_last_copies",
                "Copies the last finished scrub found, by state",
                labels=["state"],
            )
            for state in ("ok", "missing", "corrupt", "unreachable", "repaired", "unrecoverable"):
                copies.add_metric([state], float(getattr(scrub, state)))
            yield copies
            assert scrub.finished_at is not None
            yield GaugeMetricFamily(
                "allmicro_scrub_last_finished_timestamp_seconds",
                "When the last scrub finished",
                value=scrub.finished_at.timestamp(),
            )


def process_metrics() -> bytes:
    """The counters of this process, or of all processes sharing the multiprocess directory."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def exposition(sessions: sessionmaker[Session] | None) -> bytes:
    """Everything /metrics shows: this server's counters and the catalogue's figures."""
    text = process_metrics()
    if sessions is not None:
        catalogue = CollectorRegistry()
        catalogue.register(CatalogueCollector(sessions))
        text += generate_latest(catalogue)
    return text


def serve_exposition(
    host: str, port: int, sessions: sessionmaker[Session] | None
) -> ThreadingHTTPServer:
    """`exposition` over plain HTTP, without credentials, on a port of its own (a thread):
    for Prometheus on a private network. Stop it with shutdown()."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(sessions)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
