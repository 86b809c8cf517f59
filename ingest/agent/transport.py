"""How the agent reaches the server: one kept-alive http.client connection, or httpx behind a proxy.

The direct path uses the standard library alone: it starts in a fraction of httpx's time (no TLS
set-up for plain HTTP, no CA bundle, none of httpx's imports), trusts the system's certificate
store for HTTPS and hands file bodies to the kernel (socket.sendfile, so the bytes are not copied
through Python). httpx is imported only when a proxy from the environment stands in between.
"""

from __future__ import annotations

import http.client
import json
import select
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from allmicro_data.ingest.agent.errors import AgentError
from allmicro_data.ingest.agent.files import native

READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """A server's response: status, headers (names in lower case), body."""

    status_code: int
    headers: dict[str, str]
    content: bytes = b""
    reason_phrase: str = ""

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class FilePart:
    """A request body read from a file: length bytes from offset."""

    path: Path
    offset: int
    length: int


# A request's body: bytes in memory, or a part of a file the transport reads itself.
Body = bytes | FilePart


class Unreachable(Exception):
    """The request did not get an answer (connection refused, cut, timed out)."""


class Transport(Protocol):
    def request(self, method: str, url: str, headers: dict[str, str], body: Body) -> Answer: ...

    def close(self) -> None: ...


def open_transport(server: str, headers: dict[str, str]) -> Transport:
    """A direct connection to the server, or through the proxy the environment names for it."""
    parts = urlsplit(server)
    proxies = urllib.request.getproxies()
    if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.netloc):
        return _ProxiedTransport(headers)
    return _DirectTransport(server, headers)


class _DirectTransport:
    """One kept-alive http.client connection; bodies from files go by sendfile, which has the
    kernel copy them from the file to the socket without passing through Python."""

    CONNECT_TIMEOUT = 15.0
    # Long enough for the server to verify and store a large file after the last byte.
    READ_TIMEOUT = 600.0

    def __init__(self, server: str, headers: dict[str, str]) -> None:
        parts = urlsplit(server)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._headers = headers
        self._tls: ssl.SSLContext | None = None
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is not None and _dropped(self._connection):
            # The server closed the idle connection (uvicorn does after 5 s): a new one.
            self.close()
        if self._connection is None:
            connection: http.client.HTTPConnection
            if self._https:
                if self._tls is None:
                    # The system's trust store (Windows' too), as browsers on the PC use.
                    self._tls = ssl.create_default_context()
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.CONNECT_TIMEOUT, context=self._tls
                )
            else:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.CONNECT_TIMEOUT
                )
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(self.READ_TIMEOUT)
            self._connection = connection
        return self._connection

    def request(self, method: str, url: str, headers: dict[str, str], body: Body) -> Answer:
        target = urlsplit(url)
        part = body if isinstance(body, FilePart) else None
        content = body if isinstance(body, bytes) else b""
        source = open(native(part.path), "rb") if part is not None else None  # noqa: SIM115
        try:
            connection = self._connect()
            connection.putrequest(
                method,
                (target.path or "/") + (f"?{target.query}" if target.query else ""),
                skip_accept_encoding=True,
            )
            length = part.length if part is not None else len(content)
            if method in ("POST", "PUT", "PATCH") or length:
                connection.putheader("Content-Length", str(length))
            for name, value in {**self._headers, **headers}.items():
                if name.lower() != "content-length":
                    connection.putheader(name, value)
            connection.endheaders()
            if source is not None and part is not None:
                assert connection.sock is not None
                sent = connection.sock.sendfile(source, part.offset, part.length)
                if sent != part.length:
                    raise _FileShrank(part.path)
            elif content:
                connection.send(content)
            answer = connection.getresponse()
            received = answer.read()
        except _FileShrank as exc:
            self.close()
            raise AgentError(f"{exc.path} became shorter while it was being uploaded") from None
        except (OSError, http.client.HTTPException) as exc:
            # The connection's state is unknown after a failure: start a fresh one next time.
            self.close()
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        finally:
            if source is not None:
                source.close()
        if answer.will_close:
            self.close()
        return Answer(
            answer.status,
            {name.lower(): value for name, value in answer.getheaders()},
            received,
            answer.reason,
        )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """True if an idle kept-alive connection was closed by the other side (or is unusable):
    between requests nothing may arrive on it, so being readable means EOF or an error."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _FileShrank(Exception):
    def __init__(self, path: Path) -> None:
        self.path = path


class _ProxiedTransport:
    """Through a proxy from the environment (HTTP(S)_PROXY, NO_PROXY): httpx, which speaks to
    proxies of every kind; file bodies are read in blocks and streamed."""

    def __init__(self, headers: dict[str, str]) -> None:
        import httpx

        self._httpx = httpx
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(connect=15.0, read=600.0, write=120.0, pool=15.0),
            follow_redirects=False,
        )

    def request(self, method: str, url: str, headers: dict[str, str], body: Body) -> Answer:
        content: bytes | Iterator[bytes] = body if isinstance(body, bytes) else b""
        if isinstance(body, FilePart):
            headers = {**headers, "Content-Length": str(body.length)}
            content = _file_chunk(body.path, body.offset, body.length)
        try:
            response = self._client.request(method, url, headers=headers, content=content)
        except self._httpx.TransportError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        return Answer(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.content,
            response.reason_phrase,
        )

    def close(self) -> None:
        self._client.close()


def _file_chunk(path: Path, offset: int, length: int) -> Iterator[bytes]:
    with open(native(path), "rb") as handle:
        handle.seek(offset)
        remaining = length
        while remaining > 0:
            block = handle.read(min(READ_BLOCK, remaining))
            if not block:
                raise AgentError(f"{path} became shorter while it was being uploaded")
            remaining -= len(block)
            yield block
