"""The HTTP protocol `allmicro serve` runs: uvicorn's httptools protocol, handing request bodies over uncopied.

Stock uvicorn copies every piece of a request body twice on its way to the application (into a
bytearray, then out of it as bytes), and stops reading the socket whenever 64 KiB wait. For an
upload that is two extra copies of every byte and a pause and a resume of the socket for every
read of ~250 KB: on this 2-core machine stock uvicorn took a 2 GiB body in at about 730 MB/s,
this protocol at about 1.5 GB/s (bench/http_receive.py). Here the pieces the socket gives are
queued as they are, reading pauses only once BODY_HIGH_WATER bytes wait, and the application
receives the queued pieces one per message, without waiting for the socket while some are there.
Only requests that carry bodies (POST, PUT, PATCH) get this receive; the others run uvicorn's.

uvicorn has no public hook for this (its public `http=` option takes a protocol class, nothing
finer), so this subclass reaches into internals: UVICORN_INTERNALS names them. They are pinned
by the version range in pyproject.toml and checked by tests/api/test_http_server.py, which fails
loudly when uvicorn changes them; `ALLMICRO_HTTP_PROTOCOL=stock` (`protocol`) runs uvicorn's own
protocol instead, at stock speed, should a new uvicorn be needed before this is adapted.
"""

from __future__ import annotations

import types
from collections import deque
from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent

# Body bytes one connection may hold for an application that has not asked for them yet; below
# BODY_LOW_WATER the socket is read again.
BODY_HIGH_WATER = 4 * 1024 * 1024
BODY_LOW_WATER = 1024 * 1024
# Requests of other methods (GET, HEAD: tiles, pages, downloads) keep uvicorn's own receive.
BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})

# What of uvicorn this module relies on beyond its public API: the protocol's methods it
# overrides or calls, and the attributes of the protocol and of its request cycle it reads or
# writes. The test of this module checks each exists in the installed uvicorn.
UVICORN_INTERNALS = {
    "HttpToolsProtocol methods": ("on_headers_complete", "on_body", "_should_upgrade"),
    "HttpToolsProtocol attributes": ("cycle", "parser", "flow"),
    "RequestResponseCycle attributes": (
        "receive",
        "body",
        "more_body",
        "message_event",
        "flow",
        "transport",
        "disconnected",
        "response_complete",
        "waiting_for_100_continue",
    ),
}


class BodyParts:
    """Pieces of request body received and not yet handed to the application, oldest first.

    `bytes()` of it (what stock uvicorn's receive would take) joins them: a single piece comes
    back as itself.
    """

    __slots__ = ("_parts", "_size")

    def __init__(self, first: bytes) -> None:
        self._parts = deque((first,))
        self._size = len(first)

    def append(self, part: bytes) -> None:
        self._parts.append(part)
        self._size += len(part)

    def popleft(self) -> bytes:
        part = self._parts.popleft()
        self._size -= len(part)
        return part

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


class LargeBodyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with body pieces queued whole and a larger read-ahead."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before and self.parser.get_method() in BODY_METHODS:
            # A new request: its application task has not started yet, so it will find this
            # receive (an upgrade to a websocket makes no cycle).
            self.cycle.receive = types.MethodType(receive_pieces, self.cycle)  # type: ignore[method-assign]

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        pending = cycle.body
        if isinstance(pending, BodyParts):
            pending.append(body)
        elif pending:
            # Something other than this class put bytes there: keep them first.
            parts = BodyParts(bytes(pending))
            parts.append(body)
            cycle.body = parts  # type: ignore[assignment]
        else:
            cycle.body = BodyParts(body)  # type: ignore[assignment]
        if len(cycle.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()


async def receive_pieces(cycle: RequestResponseCycle) -> ASGIReceiveEvent:
    """The request cycle's receive: the oldest queued body piece, else what the socket brings.

    Pieces that arrived before the client went away are still handed over, then the disconnect.
    """
    if cycle.waiting_for_100_continue and not cycle.transport.is_closing():
        cycle.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        cycle.waiting_for_100_continue = False
    pending = cycle.body
    if not pending and not cycle.disconnected and not cycle.response_complete:
        cycle.flow.resume_reading()
        await cycle.message_event.wait()
        cycle.message_event.clear()
        pending = cycle.body
    if cycle.response_complete or (cycle.disconnected and not pending):
        return {"type": "http.disconnect"}
    if isinstance(pending, BodyParts):
        piece = pending.popleft()
        if not pending:
            cycle.body = bytearray()
        elif len(pending) < BODY_LOW_WATER and not cycle.disconnected:
            cycle.flow.resume_reading()
    else:
        piece = bytes(pending)
        cycle.body = bytearray()
    return {"type": "http.request", "body": piece, "more_body": cycle.more_body or bool(cycle.body)}


def protocol(name: str) -> type[HttpToolsProtocol] | str:
    """The `http=` protocol for uvicorn of settings.http_protocol: 'uncopied' (this module's)
    or 'stock' (uvicorn's own httptools protocol, by the name uvicorn knows it by)."""
    if name == "stock":
        return "httptools"
    if name == "uncopied":
        return LargeBodyHttpToolsProtocol
    raise ValueError(f"unknown HTTP protocol {name!r}: 'uncopied' or 'stock'")
