"""The HTTP protocol `allmicro serve` runs: uvicorn's httptools protocol, taking request bodies in large pieces.

Stock uvicorn stops reading the socket as soon as 64 KiB of body wait for the application, and
copies every piece twice on the way (into a bytearray, then out of it as bytes). For an upload
that means a pause and a resume of the socket for every read of ~250 KB, and the sender stalls
on a closed TCP window each time: on this 2-core machine uvicorn took a 2 GiB body in at about
700 MB/s, a raw socket at 3.5 GB/s (bench/http_receive.py). Here the pieces that arrive while the
application is busy are kept as they are and joined once when it asks for them, and reading
pauses only past BODY_HIGH_WATER: about 1.8 GB/s, the same bytes.

What this touches of uvicorn beyond its public `http=` protocol option — `on_body`, the request
cycle's `body` and `message_event`, `flow` — is pinned by the version range in pyproject.toml
and checked by tests/api/test_http_server.py.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Body bytes one connection may hold for an application that has not asked for them yet.
BODY_HIGH_WATER = 4 * 1024 * 1024


class BodyParts:
    """Request body pieces received since the application last asked, joined when it does.

    uvicorn hands the application `bytes(cycle.body)`; a single piece comes back as itself,
    several are copied once, into one bytes object.
    """

    __slots__ = ("_parts", "_size")

    def __init__(self, first: bytes) -> None:
        self._parts = [first]
        self._size = len(first)

    def append(self, part: bytes) -> None:
        self._parts.append(part)
        self._size += len(part)

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)


class LargeBodyHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with body pieces kept whole and a larger read-ahead."""

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
