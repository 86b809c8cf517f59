"""ASGI middleware: a request id for every request, and each request counted in the metrics.

It lives in api/, not beside the metric definitions in allmicro_data/metrics.py, so that worker
processes, which import those definitions, never import Starlette.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from allmicro_data import logs
from allmicro_data.api.http_middleware import HttpMiddleware
from allmicro_data.metrics import LATENCY, REQUESTS

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestObserver(HttpMiddleware):
    """A request id for every request (taken from X-Request-Id when sane, so a proxy's id follows
    the request), put in the logs and the response; and the request counted under its route
    template, not its path, so that ids do not explode the label space."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = MutableHeaders(scope=scope).get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append("X-Request-Id", rid)
                LATENCY.labels(scope["method"], _route(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUESTS.labels(scope["method"], _route(scope), str(status)).inc()
            logs.request_id.reset(token)


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
