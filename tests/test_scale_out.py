"""Scale-out: two API processes and two Celery workers on PostgreSQL, Redis and replicated S3;
a worker killed mid-job loses nothing and runs nothing twice."""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
from sqlalchemy import create_engine, text

from tests.api.test_end_to_end import USER_PASSWORD, upload
from tests.api.test_uploads import new_project
from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ALLMICRO,
    TLS,
    LiveServer,
    PostgresDatabases,
    free_port,
    wait_until,
)
from tests.storage.conftest import (  # noqa: F401 - fixtures used by name
    ACCESS_KEY,
    SECRET_KEY,
    SeaweedServer,
    seaweed,
    seaweed_replica,
)

USER = "ana@scale.example"


def _broker_url() -> str:
    url = os.environ.get("ALLMICRO_TEST_BROKER_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("ALLMICRO_TEST_BROKER_URL (Redis) is required in CI")
        pytest.skip("ALLMICRO_TEST_BROKER_URL is not set (redis://127.0.0.1:6379/0)")
    return url


@dataclass
class Worker:
    """`allmicro worker` in a session of its own, so that killing it takes its pool along,
    as when its host is lost."""

    env: dict[str, str]
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [ALLMICRO, "worker", "--concurrency=1", f"--metrics-port={self.metrics_port}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def pids(self) -> set[int]:
        """The worker and its pool processes."""
        assert self.process is not None
        found = {self.process.pid}
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            found |= {int(p) for p in (task / "children").read_text().split()}
        return found

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def metric_values(exposition: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition, by name with labels."""
    values = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def small_tiff(index: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(index)
    tifffile.imwrite(buffer, rng.integers(0, 255, size=(256, 320), dtype=np.uint8))
    return buffer.getvalue()


def large_tiff() -> bytes:
    """Large enough that converting it takes seconds: the worker is killed in the middle."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(99)
    tifffile.imwrite(buffer, rng.integers(0, 65535, size=(6144, 6144), dtype=np.uint16))
    return buffer.getvalue()


@pytest.fixture
def cluster(
    tmp_path: Path,
    postgres_databases: PostgresDatabases | None,
    seaweed: SeaweedServer,  # noqa: F811
    seaweed_replica: SeaweedServer,  # noqa: F811
) -> Iterator[tuple[list[LiveServer], list[Worker], str]]:
    broker = _broker_url()
    if postgres_databases is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is required in CI")
        pytest.skip("ALLMICRO_TEST_DATABASE_URL is not set or the server is unreachable")
    database_url = postgres_databases.create()
    prefix = f"scale-{secrets.token_hex(4)}"
    queue = f"allmicro-test-{secrets.token_hex(4)}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLMICRO_")}
    base.update(
        {
            "ALLMICRO_DATABASE_URL": database_url,
            "ALLMICRO_STORAGE_URL": seaweed.url(prefix),
            "ALLMICRO_REPLICA_URLS": json.dumps([seaweed_replica.url(prefix)]),
            "ALLMICRO_REPLICA_QUORUM": "1",
            "ALLMICRO_S3_ACCESS_KEY": ACCESS_KEY,
            "ALLMICRO_S3_SECRET_KEY": SECRET_KEY,
            "ALLMICRO_QUEUE": "celery",
            "ALLMICRO_BROKER_URL": broker,
            "ALLMICRO_CELERY_QUEUE": queue,
            "ALLMICRO_SECRET_KEY": secrets.token_urlsafe(32),
            "ALLMICRO_ADMIN_EMAIL": ADMIN_EMAIL,
            "ALLMICRO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ALLMICRO_JOB_LEASE_SECONDS": "4",
            "ALLMICRO_JOB_DISPATCH_SECONDS": "1",
            "ALLMICRO_UPGRADE_ON_START": "false",
            "ALLMICRO_LOG_FORMAT": "json",
            # The workers' jobs run beside other tests: not in the idle class (tests/conftest.py).
            "ALLMICRO_JOB_IDLE_SCHEDULING": "false",
        }
    )
    # Production order: the schema is upgraded once, then the processes start; none shares a
    # data_dir with another (each could be on its own host).
    upgraded = subprocess.run(
        [ALLMICRO, "db", "upgrade"],
        env={**base, "ALLMICRO_DATA_DIR": str(tmp_path / "cli")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    servers: list[LiveServer] = []
    workers: list[Worker] = []
    try:
        for n in range(2):
            env = {**base, "ALLMICRO_DATA_DIR": str(tmp_path / f"worker-{n}")}
            workers.append(Worker(env, tmp_path / f"worker-{n}.log", free_port()))
            workers[-1].start()
        for n in range(2):
            port = free_port()
            env = {
                **base,
                "ALLMICRO_DATA_DIR": str(tmp_path / f"api-{n}"),
                "ALLMICRO_HOST": "127.0.0.1",
                "ALLMICRO_PORT": str(port),
            }
            server = LiveServer(f"http://127.0.0.1:{port}", env, tmp_path / f"api-{n}.log")
            server.start()
            servers.append(server)
        yield servers, workers, database_url
    finally:
        for server in servers:
            server.stop()
        for worker in workers:
            worker.stop()
        _drop_queue(broker, queue)


def _drop_queue(broker: str, queue: str) -> None:
    if broker.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker)
        client.delete(queue)
        client.close()


def test_two_apis_two_workers_a_killed_worker_loses_nothing_and_runs_nothing_twice(
    cluster: tuple[list[LiveServer], list[Worker], str],
) -> None:
    servers, workers, database_url = cluster
    _, dataset_id = new_project(servers[0], USER, "Scale-out Lab")
    clients = [server.client(USER, USER_PASSWORD) for server in servers]
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))

    def job_row(job_id: str) -> dict[str, object] | None:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT status, lease_owner, progress, attempts FROM job WHERE id = :id"),
                {"id": job_id},
            ).one_or_none()
        return dict(row._mapping) if row else None

    try:
        big_job = upload(clients[0], dataset_id, "montage.tif", large_tiff())["job_id"]

        def converting() -> dict[str, object] | None:
            row = job_row(big_job)
            running = row and row["status"] == "running" and float(row["progress"] or 0) > 0  # type: ignore[arg-type]
            return row if running else None

        running = wait_until(converting, timeout=60, interval=0.05, what="the large conversion")
        owner_pid = int(str(running["lease_owner"]).split(":")[1])
        victim = next(w for w in workers if owner_pid in w.pids())
        survivor = next(w for w in workers if w is not victim)
        victim.kill()

        jobs = [big_job]
        for index in range(19):
            result = upload(
                clients[index % 2], dataset_id, f"frame-{index:02d}.tif", small_tiff(index)
            )
            jobs.append(result["job_id"])

        def all_done() -> bool:
            with engine.connect() as conn:
                states = conn.execute(
                    text("SELECT status, count(*) FROM job GROUP BY status")
                ).all()
            return dict(states) == {"succeeded": 20}  # type: ignore[arg-type]

        try:
            wait_until(all_done, timeout=90, interval=0.2, what="all 20 jobs succeeded")
        except AssertionError:
            raise AssertionError(f"survivor log:\n{survivor.log()}") from None

        # The killed attempt was the first; the job ran to the end once, on the survivor.
        big = clients[1].get(f"/api/jobs/{big_job}").raise_for_status().json()
        assert big["status"] == "succeeded"
        assert big["attempts"] == 2
        image_ids: list[str] = []
        for client in clients:
            listed = client.get(f"/api/datasets/{dataset_id}/images?limit=100").json()
            assert listed["total"] == 20
            image_ids = sorted(i["id"] for i in listed["items"])
            assert len(set(image_ids)) == 20
        for image_id in image_ids:
            for client in clients:
                tile = client.get(f"/api/images/{image_id}/tiles/0/0/0.png")
                assert tile.status_code == 200, tile.text
        with engine.connect() as conn:
            stuck = conn.execute(
                text("SELECT count(*) FROM job WHERE status IN ('queued', 'running')")
            ).scalar_one()
            images = conn.execute(text("SELECT count(*) FROM image")).scalar_one()
            per_file = conn.execute(
                text("SELECT max(n) FROM (SELECT count(*) AS n FROM image_file GROUP BY file_id) x")
            ).scalar_one()
        assert stuck == 0
        assert images == 20
        assert per_file == 1

        # Every API process reports the installation's figures from the catalogue, and its own
        # requests by route template; the surviving worker ran all 20 successful attempts.
        for server in servers:
            # On the app's port, metrics are for admins.
            assert httpx.get(f"{server.url}/metrics", timeout=10, verify=TLS).status_code == 401
            scraped = server.client().get("/metrics", timeout=10)
            assert scraped.status_code == 200
            figures = metric_values(scraped.text)
            assert figures['allmicro_jobs{status="succeeded"}'] == 20
            assert figures['allmicro_jobs{status="queued"}'] == 0
            assert figures["allmicro_stored_originals"] == 20
            assert figures["allmicro_replica_pending"] == 0
            uploads = [
                v
                for k, v in figures.items()
                if k.startswith("allmicro_http_requests_total{")
                and 'route="/api/datasets/{dataset_id}/files"' in k
                and 'status="201"' in k
            ]
            # The large file and frames 0, 2, … 18 went to the first; frames 1, 3, … 17 to the second.
            assert sum(uploads) == (11 if server is servers[0] else 9)
        worker_figures = metric_values(
            httpx.get(
                f"http://127.0.0.1:{survivor.metrics_port}/metrics", timeout=10, verify=TLS
            ).text
        )
        succeeded = 'allmicro_job_duration_seconds_count{kind="ingest",outcome="succeeded"}'
        assert worker_figures[succeeded] == 20
        assert worker_figures['allmicro_job_bytes_total{kind="ingest",stage="ingest"}'] > 6144**2
        # Each stage of each image is timed: originals fetched from S3, read, pyramid written.
        for stage in ("fetch", "read", "pyramid"):
            timed = f'allmicro_job_stage_duration_seconds_count{{kind="ingest",stage="{stage}"}}'
            assert worker_figures[timed] >= 20, stage
        assert worker_figures['allmicro_job_bytes_total{kind="ingest",stage="pyramid"}'] >= 6144**2

        # JSON logs: every line an object; requests and jobs carry their ids.
        api_lines = [json.loads(line) for line in servers[0].log().splitlines() if line]
        assert any(entry.get("request_id") for entry in api_lines)
        worker_lines = [
            json.loads(line) for line in survivor.log_path.read_text().splitlines() if line
        ]
        assert any(entry.get("job_id") == big_job for entry in worker_lines)
    finally:
        for client in clients:
            client.close()
        engine.dispose()
