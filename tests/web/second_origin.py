"""A second origin for browser tests of third-party clients: a static HTTP server on another
loopback port that serves the test's own pages, the npm bundles (node_modules) and the bundles
esbuild builds for the test (zarrita is ESM only: it is bundled into one script here).

A page served from it is cross-origin to the live server (same host, other port), so what it
fetches from the server goes through CORS exactly as a viewer on another site would.

Use it from a test module (the live server must know the origin before it starts):

    from tests.web.second_origin import SecondOrigin, second_origin_site
    ...
    @pytest.fixture(scope="module")
    def site(tmp_path_factory) -> Iterator[SecondOrigin]:
        with second_origin_site(tmp_path_factory.mktemp("site")) as site:
            yield site
    # then start the server with {"ALLMICRO_CORS_ORIGINS": site.origin}
    page.goto(site.page("viewer.html", "<!doctype html>..."))

Scripts for pages: `site.script(TUS)`, `site.script(OPENSEADRAGON)`, `site.script(ZARRITA)`, or
any `/node_modules/<package>/<file>` path (Mirador's UMD build, say).
"""

from __future__ import annotations

import contextlib
import html
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "node_modules"
ESBUILD = NODE_MODULES / ".bin" / "esbuild"

# Where each client's browser script is served from (paths of the second origin).
TUS = "/node_modules/tus-js-client/dist/tus.min.js"
OPENSEADRAGON = "/node_modules/openseadragon/build/openseadragon/openseadragon.min.js"
OPENSEADRAGON_IMAGES = "/node_modules/openseadragon/build/openseadragon/images/"
# zarrita as one classic script: `window.zarr` is the package's module namespace.
ZARRITA = "/build/zarrita.js"

# Bundles built with esbuild at fixture time: served path -> (entry source, global name).
BUNDLES = {ZARRITA: ('export * from "zarrita";\n', "zarr")}


def _unavailable(reason: str) -> None:
    # In CI a missing npm package is a failure (`make web` installs them); elsewhere a skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def build_bundles(build_dir: Path) -> None:
    """Bundle each of BUNDLES into build_dir with esbuild (a fraction of a second each)."""
    if not ESBUILD.is_file():
        _unavailable(f"{ESBUILD} is missing: `make web` installs esbuild from npm")
    build_dir.mkdir(parents=True, exist_ok=True)
    for served, (source, global_name) in BUNDLES.items():
        name = served.removeprefix("/build/")
        entry = build_dir / f"{name}.entry.js"
        entry.write_text(source)
        subprocess.run(
            [
                str(ESBUILD),
                str(entry),
                "--bundle",
                "--format=iife",
                f"--global-name={global_name}",
                "--minify",
                "--log-level=warning",
                f"--outfile={build_dir / name}",
            ],
            # The entry lives outside the repository: resolve packages from its node_modules.
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
            check=True,
            capture_output=True,
            timeout=60,
        )


class _Handler(SimpleHTTPRequestHandler):
    """Serves /node_modules/… from the repository's node_modules, /build/… from the bundles and
    everything else from the pages directory; never anything outside those three."""

    def __init__(self, *args: Any, pages: Path, build: Path, **kwargs: Any) -> None:
        self.roots = {"/node_modules/": NODE_MODULES, "/build/": build}
        self.pages = pages
        super().__init__(*args, directory=str(pages), **kwargs)

    def translate_path(self, path: str) -> str:
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                self.directory = str(root)
                return super().translate_path("/" + path.removeprefix(prefix))
        self.directory = str(self.pages)
        return super().translate_path(path)

    def end_headers(self) -> None:
        # Every test run builds new pages: the browser must not keep an old one.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class SecondOrigin:
    """The running site: its origin (what ALLMICRO_CORS_ORIGINS must list) and its pages."""

    origin: str
    pages: Path

    def page(self, name: str, body: str) -> str:
        """Writes a page (HTML) under `name`; its URL on this origin."""
        (self.pages / name).write_text(body, encoding="utf-8")
        return f"{self.origin}/{name}"

    def script(self, path: str) -> str:
        """A script tag loading `path` (one of TUS, OPENSEADRAGON, ZARRITA, a node_modules path)."""
        return f'<script src="{html.escape(path)}"></script>'


@contextlib.contextmanager
def second_origin_site(directory: Path) -> Iterator[SecondOrigin]:
    """Serves a site from `directory` (pages in pages/, bundles built into build/) on a free
    loopback port, in a thread, until the block ends."""
    pages, build = directory / "pages", directory / "build"
    pages.mkdir(parents=True, exist_ok=True)
    build_bundles(build)
    handler = partial(_Handler, pages=pages, build=build)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="second-origin", daemon=True)
    thread.start()
    try:
        yield SecondOrigin(origin=f"http://127.0.0.1:{server.server_address[1]}", pages=pages)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
