"""ASGI middleware: Cross-Origin Resource Sharing for the viewer and upload routes, on every
response (errors and redirects too, so a browser client can read why it failed) and preflight.

Two policies, by path:
- capability URLs (`/zarr/c/...`, `/iiif/3/c/...`) carry their credential in the URL itself: any
  origin may read them (`Access-Control-Allow-Origin: *`), which is what napari, vizarr,
  neuroglancer, OpenSeadragon and Mirador need; so may the IIIF auth probe, whose answer
  depends only on the token sent to it;
- the bearer-token routes (`/zarr/{id}`, `/iiif/3/{id}`, `/api/uploads/`) answer only the
  origins listed in `ALLMICRO_CORS_ORIGINS` (none by default), echoing the caller's origin with
  `Vary: Origin`, never `*`. The token travels in the Authorization header, which a page of an
  allowed origin sends explicitly; cookies are never allowed cross-origin (no
  Access-Control-Allow-Credentials), so a foreign page cannot act with a signed-in browser.
Every other path is left alone: the web pages and the rest of the API are same-origin only.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allmicro_data.api.http_middleware import HttpMiddleware

# URLs that carry their credential (a capability) or none at all (the IIIF auth probe, which
# answers only from the bearer token a viewer sends it).
CAPABILITY_PREFIXES = ("/zarr/c/", "/iiif/3/c/", "/iiif/auth/2/probe/")
VIEWING_PREFIXES = ("/zarr/", "/iiif/")
UPLOADS = "/api/uploads"
VIEWING_METHODS = "GET, HEAD, OPTIONS"
UPLOAD_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = ", ".join(
    (
        "Authorization",
        "Content-Type",
        "Range",
        "If-None-Match",
        "Tus-Resumable",
        "Upload-Length",
        "Upload-Offset",
        "Upload-Metadata",
        "Upload-Checksum",
        "Upload-Defer-Length",
        "Upload-Concat",
        "X-HTTP-Method-Override",
        "X-Allmicro-Sha256",
    )
)
# Tus-* cannot be a wildcard in Expose-Headers: each is named.
EXPOSE_HEADERS = ", ".join(
    (
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Expires",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Tus-Checksum-Algorithm",
        "ETag",
        "Content-Length",
        "Content-Range",
        "Link",
        "Retry-After",
        "X-Allmicro-File-Id",
        "X-Allmicro-Job-Id",
        # A finished upload whose file the dataset already held (not processed again).
        "X-Allmicro-Already-Present",
    )
)
MAX_AGE = "86400"


def _is_uploads(path: str) -> bool:
    return path == UPLOADS or path.startswith(UPLOADS + "/")


class Cors(HttpMiddleware):
    """Adds CORS headers to every response of the capability, viewing and upload routes, and
    answers their preflights (204) itself."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        super().__init__(app)
        self.allowed_origins = frozenset(allowed_origins)

    def _headers(self, path: str, origin: str | None) -> dict[str, str] | None:
        """The CORS headers for a response to `path` from `origin`; None: the path has none."""
        if path.startswith(CAPABILITY_PREFIXES):
            return {"Access-Control-Allow-Origin": "*"}
        if not (path.startswith(VIEWING_PREFIXES) or _is_uploads(path)):
            return None
        # The answer depends on Origin even when it is refused: caches must keep them apart.
        headers = {"Vary": "Origin"}
        if origin is not None and origin in self.allowed_origins:
            headers["Access-Control-Allow-Origin"] = origin
        return headers

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        request_headers = Headers(scope=scope)
        cors = self._headers(path, request_headers.get("origin"))
        if cors is None:
            await self.app(scope, receive, send)
            return
        uploads = _is_uploads(path)
        # A bare OPTIONS on the upload routes is tus discovery, which the router answers.
        preflight = scope["method"] == "OPTIONS" and (
            not uploads or "access-control-request-method" in request_headers
        )
        if preflight:
            headers = dict(cors)
            if "Access-Control-Allow-Origin" in headers:
                headers["Access-Control-Allow-Methods"] = (
                    UPLOAD_METHODS if uploads else VIEWING_METHODS
                )
                headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
                headers["Access-Control-Max-Age"] = MAX_AGE
            await Response(status_code=204, headers=headers)(scope, receive, send)
            return
        if "Access-Control-Allow-Origin" in cors:
            cors["Access-Control-Expose-Headers"] = EXPOSE_HEADERS

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in cors.items():
                    if name == "Vary":
                        headers.add_vary_header(value)
                    else:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_cors)
