"""The HTTP protocol `allmicro serve` runs, over real HTTP: bodies arrive whole, piece by piece as
read; the uvicorn internals it relies on still exist; and the stock protocol it can fall back to
serves uploads as well."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from allmicro_data.api.http_server import (
    UVICORN_INTERNALS,
    LargeBodyHttpToolsProtocol,
    receive_pieces,
)
from tests.api.test_end_to_end import FEI, USER_PASSWORD
from tests.api.test_uploads import create, new_project, patch
from tests.conftest import TLS, _running_server, _server_env, free_port, wait_until

# uvloop reads at most this much from a socket at once.
ONE_READ = 256 * 1024


@dataclass
class Received:
    """What the test application saw of each request body."""

    sizes: list[list[int]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    receivers: list[Any] = field(default_factory=list)


def recording_app(received: Received) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        sizes: list[int] = []
        digest = hashlib.sha256()
        received.receivers.append(getattr(receive, "__func__", receive))
        while True:
            message = await receive()
            body = message.get("body", b"")
            assert isinstance(body, bytes)
            sizes.append(len(body))
            digest.update(body)
            if len(sizes) % 8 == 0:
                # An application that is busy now and then: pieces pile up meanwhile.
                await asyncio.get_running_loop().run_in_executor(None, hashlib.sha256, body * 4)
            if not message.get("more_body"):
                break
        received.sizes.append(sizes)
        received.digests.append(digest.hexdigest())
        answer = digest.hexdigest().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


@pytest.fixture
def server() -> Iterator[tuple[str, Received]]:
    received = Received()
    port = free_port()
    config = uvicorn.Config(
        recording_app(received),
        host="127.0.0.1",
        port=port,
        http=LargeBodyHttpToolsProtocol,
        loop="uvloop",
        log_level="warning",
        lifespan="off",
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    wait_until(lambda: running.started, timeout=20, interval=0.02, what="uvicorn to start")
    try:
        yield f"127.0.0.1:{port}", received
    finally:
        running.should_exit = True
        thread.join(timeout=20)


def test_large_bodies_arrive_byte_for_byte_as_the_socket_gave_them(
    server: tuple[str, Received],
) -> None:
    address, received = server
    body = os.urandom(96 << 20)
    answer = httpx.post(f"http://{address}/", content=body, timeout=60, verify=TLS)
    assert answer.text == hashlib.sha256(body).hexdigest()
    sizes = received.sizes[0]
    assert sum(sizes) == len(body)
    # The application reads through our receive, which hands over each piece as it was read
    # (stock uvicorn's copies pieces into one buffer and out again), never joined into more.
    assert received.receivers[0] is receive_pieces
    assert max(sizes) <= ONE_READ
    assert len(sizes) >= len(body) // ONE_READ


def test_chunked_and_pipelined_bodies_stay_whole(server: tuple[str, Received]) -> None:
    address, received = server
    bodies = [os.urandom(n) for n in (3 << 20, 0, 12345, 9 << 20)]

    def chunks(data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    with httpx.Client(base_url=f"http://{address}", timeout=60, verify=TLS) as client:
        # One connection, kept alive: each body ends where it should.
        for body in bodies:
            assert client.post("/", content=body).text == hashlib.sha256(body).hexdigest()
        chunked = client.post("/", content=chunks(bodies[-1]))
        assert chunked.text == hashlib.sha256(bodies[-1]).hexdigest()

    # Two requests written back to back before either answer is read (HTTP pipelining).
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        for body in bodies[:2]:
            sock.sendall(
                f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )
            sock.sendall(body)
        answers = b""
        expected = [hashlib.sha256(body).hexdigest().encode() for body in bodies[:2]]
        while not all(digest in answers for digest in expected):
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
    assert received.digests[-2:] == [digest.decode() for digest in expected]


def test_requests_without_a_body_method_keep_uvicorns_own_receive(
    server: tuple[str, Received],
) -> None:
    address, received = server
    with httpx.Client(base_url=f"http://{address}", timeout=60, verify=TLS) as client:
        assert client.get("/").text == hashlib.sha256(b"").hexdigest()
        assert client.post("/", content=b"x").text == hashlib.sha256(b"x").hexdigest()
    assert received.receivers == [RequestResponseCycle.receive, receive_pieces]


def test_uvicorn_still_has_the_internals_the_uncopied_protocol_relies_on() -> None:
    """The canary of the pin in pyproject.toml: a uvicorn that renames or drops what
    api/http_server.py overrides fails here, not in production under uploads."""
    classes = {"HttpToolsProtocol": HttpToolsProtocol, "RequestResponseCycle": RequestResponseCycle}
    missing = []
    for what, names in UVICORN_INTERNALS.items():
        cls_name, kind = what.split()
        cls = classes[cls_name]
        source = inspect.getsource(cls)
        for name in names:
            if kind == "methods":
                present = callable(getattr(cls, name, None))
            else:
                # Instance attributes exist once __init__ or a callback assigns them.
                present = hasattr(cls, name) or bool(re.search(rf"self\.{name}\b\s*[:=]", source))
            if not present:
                missing.append(f"{cls_name}.{name}")
    signatures = {
        "HttpToolsProtocol.on_body": (HttpToolsProtocol.on_body, ["self", "body"]),
        "HttpToolsProtocol.on_headers_complete": (HttpToolsProtocol.on_headers_complete, ["self"]),
        "RequestResponseCycle.receive": (RequestResponseCycle.receive, ["self"]),
    }
    for name, (function, parameters) in signatures.items():
        if list(inspect.signature(function).parameters) != parameters:
            missing.append(f"{name}{inspect.signature(function)}")
    assert not missing, (
        f"uvicorn {uvicorn.__version__} changed what api/http_server.py relies on: {missing}. "
        "Run servers with ALLMICRO_HTTP_PROTOCOL=stock meanwhile; then adapt api/http_server.py "
        "(bench/http_receive.py shows whether it still pays) or drop it, and move the uvicorn "
        "pin in pyproject.toml."
    )


def test_uploads_work_with_the_stock_protocol(tmp_path: Any) -> None:
    """ALLMICRO_HTTP_PROTOCOL=stock, the fallback should uvicorn's internals change: a tus
    upload in two PATCHes arrives byte for byte, its checksum checked."""
    env = _server_env(tmp_path / "server-data", f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    env.update({"ALLMICRO_JOB_WORKERS": "0", "ALLMICRO_HTTP_PROTOCOL": "stock"})
    server = _running_server(env, tmp_path / "server.log")
    try:
        _, dataset_id = new_project(server, "maja@ijs.example", "Institut Jozef Stefan")
        data = FEI.read_bytes() + os.urandom(8 << 20)
        sha256 = hashlib.sha256(data).hexdigest()
        with server.client("maja@ijs.example", USER_PASSWORD) as client:
            created = create(client, len(data), filename="big.tif", dataset_id=dataset_id)
            assert created.status_code == 201, created.text
            location = created.headers["location"]
            half = len(data) // 2
            first = patch(client, location, 0, data[:half])
            assert first.status_code == 204, first.text
            last = patch(client, location, half, data[half:], **{"X-Allmicro-Sha256": sha256})
            assert last.status_code == 204, last.text
            file_id = last.headers["x-allmicro-file-id"]
            assert client.get(f"/api/files/{file_id}").json()["sha256"] == sha256
            assert client.get(f"/api/files/{file_id}/download").content == data
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, LargeBodyHttpToolsProtocol),
        ("uncopied", LargeBodyHttpToolsProtocol),
        ("stock", "httptools"),
    ],
)
def test_allmicro_serve_runs_the_protocol_of_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, setting: str | None, expected: Any
) -> None:
    """Only the wiring: the app, logging and metrics set-up are left out (tested elsewhere)."""
    from allmicro_data import cli, logs
    from allmicro_data.api import app
    from allmicro_data.settings import get_settings

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda application, **options: seen.update(options))
    monkeypatch.setattr(app, "create_app", lambda settings: "the app")
    monkeypatch.setattr(logs, "configure_logging", lambda *args: None)
    monkeypatch.setattr(cli, "_share_metrics", lambda directory: None)
    monkeypatch.setenv("ALLMICRO_DATA_DIR", str(tmp_path))
    if setting is not None:
        monkeypatch.setenv("ALLMICRO_HTTP_PROTOCOL", setting)
    else:
        monkeypatch.delenv("ALLMICRO_HTTP_PROTOCOL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.main, ["serve", "--port", "9"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert seen["http"] == expected
    assert seen["port"] == 9
    # The app reads X-Forwarded-* itself, from the trusted proxies only (api/proxies.py).
    assert seen["proxy_headers"] is False
