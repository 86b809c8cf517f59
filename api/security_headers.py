"""ASGI middleware: every response is served as data unless it is one of our HTML pages.

Much of what this server answers comes from uploaded files: OME-XML, vendor strings in JSON,
metadata CSV, originals, zarr objects. A browser sent to one of them must never run it as a page
of our origin, where it could read the CSRF cookie and act as whoever opened it. So:
- `X-Content-Type-Options: nosniff` on every response: a browser takes the declared type and never
  guesses HTML from the bytes;
- a sandboxing Content-Security-Policy on every response that is not HTML: should a browser render
  an XML, SVG or text document anyway, it runs no script, loads nothing, and has an opaque origin
  (no cookies, no storage, no same-origin requests);
- HTML without a policy of its own (the OpenAPI explorer) gets a baseline that does not hinder its
  scripts; our pages set their own strict one (`api.web.pages.CONTENT_SECURITY_POLICY`).
Routes that hand out documents derived from uploads add `Content-Disposition: attachment`
themselves (`api.streaming.content_disposition`), since only they know the file's name.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from allmicro_data.api.http_middleware import HttpMiddleware

DATA_POLICY = "sandbox; default-src 'none'; frame-ancestors 'none'"
HTML_BASELINE_POLICY = "object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
HTML_TYPES = ("text/html", "application/xhtml+xml")


def is_html(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in HTML_TYPES


class SecurityHeaders(HttpMiddleware):
    """Adds nosniff to every HTTP response and a Content-Security-Policy where it is missing or,
    for anything that is not HTML, replaces it with the sandboxing one."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if not is_html(headers.get("content-type")):
                    headers["Content-Security-Policy"] = DATA_POLICY
                elif "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = HTML_BASELINE_POLICY
            await send(message)

        await self.app(scope, receive, send_with_headers)
