"""The API's documentation pages, Swagger UI at /docs and ReDoc at /redoc, from our own static
files (`make web` copies them from npm): they work offline and load nothing from elsewhere.

FastAPI's page builders write an inline script (Swagger UI's start-up); its hash goes into each
page's Content-Security-Policy, which allows only what these two pages need and only on them.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

VENDOR = "/static/vendor"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _policy(html: str, *, workers: bool = False) -> str:
    """Scripts from this server plus the page's own inline ones (by hash); styles inline too
    (both explorers set them from script); images from data: URLs (Swagger UI's icons)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    policy = (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    # ReDoc searches in a web worker it starts from a blob: URL.
    return policy + ("; worker-src 'self' blob:" if workers else "")


def _page(built: HTMLResponse, *, workers: bool = False) -> HTMLResponse:
    html = bytes(built.body).decode()
    response = HTMLResponse(html)
    response.headers["Content-Security-Policy"] = _policy(html, workers=workers)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def install(app: FastAPI) -> None:
    """Add /docs, its OAuth2 redirect and /redoc to an app made with docs_url=redoc_url=None."""
    router = APIRouter(include_in_schema=False)
    title = f"{app.title} API"

    def swagger_ui(request: Request) -> HTMLResponse:
        return _page(
            get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=title,
                swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
                swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
                swagger_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
                oauth2_redirect_url=OAUTH2_REDIRECT,
            )
        )

    def oauth2_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    def redoc(request: Request) -> HTMLResponse:
        return _page(
            get_redoc_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=title,
                redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
                redoc_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
                with_google_fonts=False,
            ),
            workers=True,
        )

    router.add_api_route("/docs", swagger_ui, methods=["GET", "HEAD"])
    router.add_api_route(OAUTH2_REDIRECT, oauth2_redirect, methods=["GET", "HEAD"])
    router.add_api_route("/redoc", redoc, methods=["GET", "HEAD"])
    app.include_router(router)
