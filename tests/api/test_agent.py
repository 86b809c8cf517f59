"""The upload agent against a real server: resume after a SIGKILLed server, watch a folder, never twice."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from allmicro_data.ingest.agent import Outcome, Watcher, open_transport
from tests.api.test_end_to_end import FEI, USER_PASSWORD
from tests.api.test_uploads import new_project
from tests.conftest import ALLMICRO, LiveServer, free_port, wait_until

GIB = 1024**3


def agent_command(server: LiveServer, tmp_path: Path, dataset_id: str, *args: str) -> list[str]:
    return [
        ALLMICRO,
        *args,
        "--server",
        server.url,
        "--dataset",
        dataset_id,
        "--state",
        str(tmp_path / "agent-state.sqlite3"),
        "--log-file",
        str(tmp_path / "agent.log"),
        "--no-progress",
    ]


def agent_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLMICRO_")}
    env["ALLMICRO_TOKEN"] = token
    return env


def sparse_file(path: Path, size: int) -> str:
    """A large file made in an instant: holes, with random blocks at the start, middle and end."""
    marks = [(0, os.urandom(1 << 20)), (size // 2, os.urandom(1 << 20))]
    marks.append((size - (1 << 20), os.urandom(1 << 20)))
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset, block in marks:
            handle.seek(offset)
            handle.write(block)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def acknowledged_offset(catalogue: Path) -> int:
    with sqlite3.connect(catalogue, timeout=10) as db:
        row = db.execute("SELECT max(upload_offset) FROM upload").fetchone()
    return int(row[0] or 0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_agent_resumes_after_the_server_is_killed_mid_upload(
    live_server: LiveServer, tmp_path: Path
) -> None:
    _, dataset_id = new_project(live_server, "maja@ijs.example", "Institut Jozef Stefan")
    token = live_server.token("maja@ijs.example", USER_PASSWORD)
    big = tmp_path / "tomogram.raw"
    sha256 = sparse_file(big, GIB)
    catalogue = Path(live_server.env["ALLMICRO_DATABASE_URL"].removeprefix("sqlite:///"))

    command = agent_command(live_server, tmp_path, dataset_id, "upload", str(big))
    agent = subprocess.Popen(
        [*command, "--chunk-size", str(16 << 20), "--retry-for", "120"],
        env=agent_env(token),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        acked = wait_until(
            lambda: (o := acknowledged_offset(catalogue)) >= GIB // 4 and o,
            timeout=60,
            interval=0.02,
            what="a quarter of the upload",
        )
        assert acked < GIB, "the upload finished before the server could be killed"
        live_server.stop(signal.SIGKILL)
        live_server.start()
        output, _ = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, output
    log = (tmp_path / "agent.log").read_text()
    resumed = [int(n) for n in re.findall(r"resuming \S+ at offset (\d+)", log)]
    assert resumed, log
    # It went on from what the server had acknowledged, not from the start.
    assert resumed[0] >= acked > 0

    client = live_server.client("maja@ijs.example", USER_PASSWORD)
    file_id = re.findall(r"uploaded as file (\S+),", log)[-1]
    stored = client.get(f"/api/files/{file_id}").raise_for_status().json()
    assert stored["sha256"] == sha256
    assert stored["size"] == GIB
    raw = Path(live_server.env["ALLMICRO_DATA_DIR"]) / "objects" / "raw" / sha256
    assert raw.stat().st_size == GIB

    # A second run knows the file: nothing is sent again.
    again = subprocess.run(
        command, env=agent_env(token), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "already uploaded" in again.stdout
    with sqlite3.connect(catalogue) as db:
        assert db.execute("SELECT count(*) FROM upload").fetchone()[0] == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_watch_uploads_each_finished_file_once_and_fails_with_a_reason(
    live_server: LiveServer, tmp_path: Path
) -> None:
    _, dataset_id = new_project(live_server, "ivo@zrc.example", "ZRC SAZU")
    token = live_server.token("ivo@zrc.example", USER_PASSWORD)
    folder = tmp_path / "acquisitions"
    (folder / "session 2").mkdir(parents=True)
    shutil.copy(FEI, folder / FEI.name)
    (folder / "session 2" / "stack.mrc").write_bytes(os.urandom(200_000))
    (folder / "session 2" / "writing.tmp").write_bytes(b"not yet")
    command = agent_command(live_server, tmp_path, dataset_id, "watch", str(folder))
    options = ["--recursive", "--once", "--settle", "0.3", "--interval", "0.1"]

    first = subprocess.run(
        [*command, *options], env=agent_env(token), capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    client = live_server.client("ivo@zrc.example", USER_PASSWORD)
    jobs = client.get(f"/api/datasets/{dataset_id}/jobs").json()
    assert jobs["total"] == 2
    log = (tmp_path / "agent.log").read_text()
    assert "writing.tmp" not in log
    file_ids = re.findall(r"uploaded as file (\S+),", log)
    paths = {client.get(f"/api/files/{f}").json()["relative_path"] for f in file_ids}
    assert paths == {FEI.name, "session 2/stack.mrc"}

    second = subprocess.run(
        [*command, *options], env=agent_env(token), capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert client.get(f"/api/datasets/{dataset_id}/jobs").json()["total"] == 2
    assert (tmp_path / "agent.log").read_text().count("already uploaded") == 2

    wrong_token = subprocess.run(
        [*command, *options], env=agent_env("amd_wrong"), capture_output=True, text=True
    )
    assert wrong_token.returncode == 3
    assert "token" in wrong_token.stderr
    no_token = subprocess.run(
        [*command, *options], env=agent_env(""), capture_output=True, text=True
    )
    assert no_token.returncode == 2
    assert "ALLMICRO_TOKEN" in no_token.stderr
    other = agent_command(live_server, tmp_path, "no-such-dataset", "watch", str(folder))
    missing = subprocess.run(
        [*other, *options], env=agent_env(token), capture_output=True, text=True
    )
    assert missing.returncode == 3
    assert "no-such-dataset" in missing.stderr
    assert token not in (tmp_path / "agent.log").read_text()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP proxy (proxy.py) on a free port; its access log records what went through."""
    port = free_port()
    log = tmp_path / "proxy.log"
    command = [str(Path(ALLMICRO).with_name("proxy")), "--hostname", "127.0.0.1"]
    command += ["--port", str(port), "--num-workers", "1", "--num-acceptors", "1"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
            timeout=30,
            what="the proxy to listen",
        )
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_agent_goes_through_the_proxy_the_environment_names(
    live_server: LiveServer, tmp_path: Path, proxy: tuple[str, Path]
) -> None:
    proxy_url, proxy_log = proxy
    _, dataset_id = new_project(live_server, "ana@elettra.example", "Elettra Sincrotrone")
    token = live_server.token("ana@elettra.example", USER_PASSWORD)
    env = {**agent_env(token), "HTTP_PROXY": proxy_url, "http_proxy": proxy_url}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    acquisition = tmp_path / "stack.raw"
    acquisition.write_bytes(os.urandom(11 << 20))  # several chunks, then the last 8 MiB
    command = agent_command(live_server, tmp_path, dataset_id, "upload", str(acquisition))
    done = subprocess.run(
        [*command, "--chunk-size", str(1 << 20)], env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    file_id = re.findall(r"uploaded as file (\S+),", (tmp_path / "agent.log").read_text())[-1]
    client = live_server.client("ana@elettra.example", USER_PASSWORD)
    stored = client.get(f"/api/files/{file_id}").raise_for_status().json()
    assert stored["sha256"] == hashlib.sha256(acquisition.read_bytes()).hexdigest()
    # The proxy logs the first request of each connection it carries: the agent's first
    # request went through it, and all the others take the same connection.
    port = live_server.url.rsplit(":", 1)[1]
    assert f"GET 127.0.0.1:{port}/api/datasets/{dataset_id} - 200" in proxy_log.read_text()


class _ClosesSilently(http.server.BaseHTTPRequestHandler):
    """Answers one request per connection, then closes it without saying so (as a server does
    when a kept-alive connection has been idle too long)."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[int]] = set()

    def do_GET(self) -> None:
        self.connections.add(self.client_address[1])
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class _CountsClosedConnections(http.server.ThreadingHTTPServer):
    """Counts the connections it has closed, once their socket is really shut."""

    closed = 0

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed += 1


def test_a_connection_the_server_dropped_while_idle_is_replaced_before_use() -> None:
    server = _CountsClosedConnections(("127.0.0.1", 0), _ClosesSilently)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        transport = open_transport(f"http://127.0.0.1:{server.server_port}", {})
        first = transport.request("GET", "/a", {}, b"")
        # Once the server has closed that connection, the agent must notice before it sends
        # again (waiting for the answer alone would race the server's close).
        wait_until(lambda: server.closed, timeout=10, interval=0.01, what="the server's close")
        second = transport.request("GET", "/b", {}, b"")
        transport.close()
    finally:
        server.shutdown()
        server.server_close()
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"ok": True}
    assert len(_ClosesSilently.connections) == 2


class FakeAgent:
    def __init__(self) -> None:
        self.sent: list[tuple[Path, str | None, str | None]] = []

    def send(self, path: Path, relative_path: str | None, group: str | None) -> Outcome:
        self.sent.append((path, relative_path, group))
        return Outcome(path, "uploaded")


def test_a_file_counts_as_finished_only_once_it_stops_changing(tmp_path: Path) -> None:
    agent: Any = FakeAgent()
    (tmp_path / "run 1").mkdir()
    growing = tmp_path / "run 1" / "frame.tif"
    growing.write_bytes(b"a" * 10)
    watcher = Watcher(
        agent, tmp_path, recursive=True, settle=0.5, interval=0.05, group_by_folder=True
    )
    assert watcher.scan() is True  # first sight: not yet known to be finished
    assert agent.sent == []
    growing.write_bytes(b"a" * 20)
    assert watcher.scan() is True  # it changed: the clock starts again
    started = time.monotonic()
    wait_until(lambda: not watcher.scan(), timeout=10, interval=0.05, what="the file to settle")
    assert time.monotonic() - started >= 0.4
    assert agent.sent == [(growing, "run 1/frame.tif", "run 1")]
    assert watcher.scan() is False
    assert len(agent.sent) == 1


def test_watch_groups_an_acquisition_by_the_vendors_naming_rules(tmp_path: Path) -> None:
    agent: Any = FakeAgent()
    (tmp_path / "run 2").mkdir()
    for name in ("acq_1.ser", "acq.emi", "run 2/acq.emi", "cells.tif"):
        (tmp_path / name).write_bytes(b"x")
    watcher = Watcher(
        agent, tmp_path, recursive=True, settle=0.0, interval=0.05, group_by_folder=False
    )

    def all_sent() -> bool:
        watcher.scan()
        return len(agent.sent) == 4

    wait_until(all_sent, timeout=10, interval=0.05, what="the four files to be sent")
    groups = {relative: group for _, relative, group in agent.sent}
    # One acquisition key for X.emi and X_1.ser, another for the same name in another folder,
    # none for a file no rule groups.
    assert groups["acq_1.ser"] == groups["acq.emi"] is not None
    assert groups["run 2/acq.emi"] not in (None, groups["acq.emi"])
    assert groups["cells.tif"] is None
