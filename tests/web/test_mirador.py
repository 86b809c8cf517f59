"""Mirador (from npm) on another origin opens a dataset's IIIF manifest through a dataset
capability URL and draws the first image's tiles: a third-party viewer with no credentials."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from tests.api.test_end_to_end import upload, wait_for_job
from tests.conftest import LiveServer, PostgresDatabases, module_server, wait_until
from tests.web.second_origin import NODE_MODULES, SecondOrigin, second_origin_site

MIRADOR = "/node_modules/mirador/dist/mirador.min.js"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mirador on another origin</title>
<script src="{mirador}"></script></head>
<body><main id="mirador" style="position: absolute; inset: 0"></main>
<script>
  window.mirador = Mirador.viewer({{
    id: "mirador",
    windows: [{{ manifestId: new URLSearchParams(location.search).get("manifest") }}],
    window: {{ allowClose: false, sideBarOpen: false }},
    workspaceControlPanel: {{ enabled: false }},
  }});
</script></body></html>"""


def stripes(width: int, height: int, period: int) -> bytes:
    """An 8-bit picture of bright and dark stripes: a drawn tile is easy to tell from none."""
    xx = np.arange(width)[None, :].repeat(height, axis=0)
    data = np.where((xx // period) % 2 == 0, 230, 20).astype(np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondOrigin]:
    if not (NODE_MODULES / MIRADOR.removeprefix("/node_modules/")).is_file():
        pytest.skip("Mirador is missing: `make web` installs it from npm")
    with second_origin_site(tmp_path_factory.mktemp("mirador-origin")) as site:
        yield site


@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    # No ALLMICRO_CORS_ORIGINS: a capability URL needs none.
    with module_server(request, tmp_path_factory, postgres_databases, "mirador") as server:
        yield server


@pytest.fixture(scope="module")
def manifest_url(server: LiveServer) -> str:
    client = server.client()
    project = client.post("/api/projects", json={"name": "Mirador"}).json()["id"]
    dataset = client.post(f"/api/projects/{project}/datasets", json={"name": "Grid scans"}).json()
    for name, period in (("grid_2.tif", 40), ("grid_1.tif", 16)):
        job = wait_for_job(
            client, upload(client, dataset["id"], name, stripes(900, 700, period))["job_id"]
        )
        assert job["status"] == "succeeded", job
    minted = client.post(f"/api/datasets/{dataset['id']}/capabilities", json={})
    assert minted.status_code == 201, minted.text
    manifest: str = minted.json()["manifest"]
    return manifest


def test_mirador_on_another_origin_shows_the_first_images_tiles(
    browser: Any, site: SecondOrigin, server: LiveServer, manifest_url: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    tiles: list[str] = []
    failures: list[str] = []

    def seen(response: Any) -> None:
        url = response.url
        if url.startswith(f"{server.url}/iiif/3/c/") and url.endswith(".jpg"):
            (tiles if response.status == 200 else failures).append(url)

    page.on("response", seen)
    page.on("requestfailed", lambda request: failures.append(f"{request.url}: failed"))
    manifest = httpx.get(manifest_url, timeout=30).raise_for_status().json()
    first = manifest["items"][0]
    first_service = first["items"][0]["items"][0]["body"]["service"][0]["id"]
    assert first["label"] == {"none": ["grid_1.tif"]}

    page.goto(f"{site.page('mirador.html', PAGE.format(mirador=MIRADOR))}?manifest={manifest_url}")
    # Mirador names the window after the manifest, and its canvas after the first image.
    page.get_by_text("Grid scans").first.wait_for(timeout=60_000)
    page.get_by_text("grid_1.tif").filter(visible=True).first.wait_for(timeout=60_000)

    def first_tile_loaded() -> bool:
        page.wait_for_timeout(200)  # Playwright delivers response events while it runs
        return any(url.startswith(f"{first_service}/") for url in tiles)

    wait_until(first_tile_loaded, timeout=60, what="a tile of the first image loaded by Mirador")
    canvas = page.locator(".openseadragon-canvas canvas").first
    canvas.wait_for(timeout=10_000)

    def drawn() -> bool:
        picture = np.asarray(PILImage.open(io.BytesIO(canvas.screenshot())).convert("L"))
        # The stripes, not an empty canvas: bright and dark pixels both cover a good share.
        return bool((picture > 150).mean() > 0.1 and (picture < 60).mean() > 0.1)

    wait_until(drawn, timeout=60, what="the first image's stripes drawn on the canvas")
    assert not failures, failures
    context.close()
