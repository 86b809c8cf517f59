"""IIIF viewers on another origin, in Chromium: Mirador (from npm) opens a dataset's manifest
through a dataset capability URL and draws the first image's tiles (no credentials at all); and
a viewer page signs its user in with the IIIF Authorization Flow 2.0 windows (our sign-in page,
the token page in a frame posting the token, the probe and the image service with it)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from tests.api.test_end_to_end import upload, wait_for_job
from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    TLS,
    LiveServer,
    PostgresDatabases,
    module_server,
    wait_until,
)
from tests.web.conftest import check_page_at_both_sizes
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
    site: SecondOrigin,
) -> Iterator[LiveServer]:
    # The site's pages may receive IIIF access tokens; capability URLs need no such listing.
    env = {"ALLMICRO_CORS_ORIGINS": site.origin}
    with module_server(request, tmp_path_factory, postgres_databases, "mirador", env) as server:
        yield server


@dataclass(frozen=True)
class Dataset:
    image_ids: list[str]  # in the manifest's order
    manifest: str  # its capability manifest URL


@pytest.fixture(scope="module")
def dataset(server: LiveServer) -> Dataset:
    client = server.client()
    project = client.post("/api/projects", json={"name": "Mirador"}).json()["id"]
    dataset = client.post(f"/api/projects/{project}/datasets", json={"name": "Grid scans"}).json()
    ids = {}
    for name, period in (("grid_2.tif", 40), ("grid_1.tif", 16)):
        job = wait_for_job(
            client, upload(client, dataset["id"], name, stripes(900, 700, period))["job_id"]
        )
        assert job["status"] == "succeeded", job
        ids[name] = job["image_ids"][0]
    minted = client.post(f"/api/datasets/{dataset['id']}/capabilities", json={})
    assert minted.status_code == 201, minted.text
    return Dataset([ids["grid_1.tif"], ids["grid_2.tif"]], minted.json()["manifest"])


def test_mirador_on_another_origin_shows_the_first_images_tiles(
    browser: Any, site: SecondOrigin, server: LiveServer, dataset: Dataset
) -> None:
    manifest_url = dataset.manifest
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
    manifest = httpx.get(manifest_url, timeout=30, verify=TLS).raise_for_status().json()
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


# A viewer's side of the Authorization Flow: a frame on the token service, and the message it
# posts (IIIF Auth 2.0 §3.3); then the probe and the image service with the token.
VIEWER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A IIIF viewer</title></head>
<body><main><h1>A IIIF viewer</h1></main>
<script>
  const asked = new URLSearchParams(location.search);
  window.tokenMessage = new Promise((resolve) => {
    window.addEventListener("message", (event) => resolve({origin: event.origin, data: event.data}));
  });
  const frame = document.createElement("iframe");
  frame.title = "IIIF access token";
  frame.src = `${asked.get("token")}?messageId=viewer-1&origin=${encodeURIComponent(location.origin)}`;
  document.body.append(frame);
</script></body></html>"""

WITH_TOKEN = """async ({probe, info, token}) => {
  const headers = {Authorization: `Bearer ${token}`};
  const probed = await (await fetch(probe, {headers})).json();
  const described = await fetch(info, {headers});
  return {probe: probed.status, info: described.status, id: (await described.json()).id};
}"""


def test_a_viewer_elsewhere_signs_in_through_the_authorization_flow_windows(
    browser: Any, site: SecondOrigin, server: LiveServer, dataset: Dataset
) -> None:
    image = dataset.image_ids[0]
    info = httpx.get(f"{server.url}/iiif/3/{image}/info.json", timeout=30, verify=TLS)
    assert info.status_code == 401
    access = info.json()["service"][0]["service"][0]
    token_service, logout_service = (s["id"] for s in access["service"])
    context = browser.new_context()
    page = context.new_page()

    # The access service's window: our sign-in page, back to the window once signed in.
    page.goto(f"{access['id']}?origin={site.origin}")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("input[name=username]", ADMIN_EMAIL)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(re.compile(re.escape(f"{access['id']}?origin=")))
    page.get_by_role("heading", name="Signed in").wait_for()
    check_page_at_both_sizes(page, "iiif-access")

    # The viewer frames the token service and receives a token for its origin.
    viewer = context.new_page()
    viewer.goto(f"{site.page('viewer.html', VIEWER_PAGE)}?token={token_service}")
    message = viewer.evaluate("() => window.tokenMessage")
    assert message["origin"] == server.url
    assert message["data"]["type"] == "AuthAccessToken2", message
    assert message["data"]["messageId"] == "viewer-1"
    used = viewer.evaluate(
        WITH_TOKEN,
        {
            "probe": f"{server.url}/iiif/auth/2/probe/{image}",
            "info": f"{server.url}/iiif/3/{image}/info.json",
            "token": message["data"]["accessToken"],
        },
    )
    assert used == {"probe": 200, "info": 200, "id": f"{server.url}/iiif/3/{image}"}

    # The logout service's window signs the session out.
    page.goto(logout_service)
    check_page_at_both_sizes(page, "iiif-logout")
    page.get_by_role("button", name="Sign out").last.click()
    page.get_by_role("heading", name="Signed out").wait_for()
    assert page.evaluate("async () => (await fetch('/api/me')).status") == 401
    context.close()
