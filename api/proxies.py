"""Requests through a reverse proxy: X-Forwarded-For/-Proto believed only from trusted proxies, and HSTS over HTTPS.

Behind a proxy every connection comes from the proxy's address. Its X-Forwarded-For names the
client and X-Forwarded-Proto says whether the client used HTTPS; but anyone can send those
headers, so they count only when the peer is one of `trusted_proxies` (ALLMICRO_TRUSTED_PROXIES,
default loopback). Everything downstream — `request.client` (login throttling, the audit log)
and `request.url.scheme` (Secure cookies, HSTS) — then sees the client as the proxy saw it.
This runs in the application, not in uvicorn's own proxy handling (which `allmicro serve` turns
off), so the setting holds whichever server runs the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application


class ForwardedRequests:
    """ASGI middleware: the client and scheme from a trusted proxy's X-Forwarded-* headers
    (uvicorn's parsing: the right-most address no trusted proxy added), then
    Strict-Transport-Security on every response to a request made over HTTPS."""

    def __init__(self, app: ASGIApp, trusted_proxies: list[str], hsts_seconds: int) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_seconds}" if hsts_seconds > 0 else None
        self.forwarded = ProxyHeadersMiddleware(
            cast("ASGI3Application", self._after_forwarding), trusted_hosts=trusted_proxies
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.forwarded(scope, receive, send)  # type: ignore[arg-type]

    async def _after_forwarding(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.hsts is None or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return
        hsts = self.hsts

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Strict-Transport-Security"] = hsts
            await send(message)

        await self.app(scope, receive, send_with_hsts)
