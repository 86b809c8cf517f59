"""A live `allmicro serve` for the benchmarks, and the resident memory of its processes.

The benchmark scripts import it by name (`from serving import …`): Python puts bench/ first on
the path when it runs one of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import httpx

ALLMICRO = str(Path(sys.executable).with_name("allmicro"))
ADMIN, PASSWORD = "admin@example.org", "benchmark password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 120.0) -> None:
    """Until url answers with anything but a 5xx; SystemExit after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no answer from {url}")


class BenchServer:
    """`allmicro serve` on a free port, its data in data_dir, with the benchmark's admin.

    settings (ALLMICRO_* variables) are added to the environment, which otherwise keeps none of
    the caller's ALLMICRO_* variables, unless inherit is set. The server's stderr goes to log
    (or nowhere); it runs in a session of its own, so that stop() ends its job processes too.
    """

    def __init__(
        self,
        data_dir: Path,
        settings: dict[str, str] | None = None,
        *,
        inherit: bool = False,
        admin: tuple[str, str] = (ADMIN, PASSWORD),
        log: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = admin
        self.log = log
        base = {k: v for k, v in os.environ.items() if inherit or not k.startswith("ALLMICRO_")}
        self.env = {
            **base,
            "ALLMICRO_DATA_DIR": str(data_dir),
            "ALLMICRO_PORT": str(self.port),
            "ALLMICRO_ADMIN_EMAIL": admin[0],
            "ALLMICRO_ADMIN_PASSWORD": admin[1],
            **(settings or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: BinaryIO | None = None

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until /healthz answers 200."""
        self._stderr = self.log.open("ab") if self.log else None
        self.process = subprocess.Popen(
            [ALLMICRO, "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr or subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the server did not start; see {self.log or 'its stderr'}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def token(self) -> str:
        response = httpx.post(
            f"{self.url}/api/auth/token",
            data={"username": self.admin[0], "password": self.admin[1]},
        )
        return str(response.raise_for_status().json()["access_token"])

    def client(self, timeout: float = 600.0) -> httpx.Client:
        """A client signed in as the admin."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def ingest(self, sample: Path, project: str, dataset: str, timeout: float = 600.0) -> str:
        """Upload sample into a new project and dataset, wait for its ingest; its image id."""
        with self.client() as client:
            project_id = client.post("/api/projects", json={"name": project}).json()["id"]
            dataset_id = client.post(
                f"/api/projects/{project_id}/datasets", json={"name": dataset}
            ).json()["id"]
            with sample.open("rb") as handle:
                job = client.post(
                    f"/api/datasets/{dataset_id}/files", files={"file": (sample.name, handle)}
                ).json()["job_id"]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                state = client.get(f"/api/jobs/{job}").json()
                if state["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.2)
            if state["status"] != "succeeded":
                raise SystemExit(f"ingest failed: {state}")
            return str(state["image_ids"][0])


def family(pid: int) -> list[int]:
    """The process and all its descendants."""
    pids = [pid]
    for parent in pids:
        try:
            tasks = Path(f"/proc/{parent}/task").iterdir()
            for task in tasks:
                children = (task / "children").read_text().split()
                pids.extend(int(c) for c in children if int(c) not in pids)
        except OSError:
            continue
    return pids


def status_bytes(pid: int, field: str) -> int:
    """A size from /proc/<pid>/status (VmRSS, VmHWM), in bytes; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def total(pids: list[int], field: str) -> int:
    return sum(status_bytes(pid, field) for pid in pids)


class RssSampler(threading.Thread):
    """The largest value measure() gives (resident bytes) when called every interval seconds,
    until stop is set."""

    def __init__(self, measure: Callable[[], int], interval: float) -> None:
        super().__init__(daemon=True)
        self.measure = measure
        self.interval = interval
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.measure())
            self.stop.wait(self.interval)
