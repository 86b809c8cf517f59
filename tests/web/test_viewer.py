"""The image viewer in headless Chromium: sign-in, search, tiles, scale bar, contrast, isolation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from PIL import Image as PILImage
from PIL import ImageStat

from tests.api.test_end_to_end import USER_PASSWORD
from tests.conftest import SAMPLES, TLS
from tests.web.conftest import FEI, OUTSIDER, OWNER, Network, ingest_fei

TIMEOUT_MS = 30_000
UNITS = {"pm": 1e-12, "nm": 1e-9, "µm": 1e-6, "mm": 1e-3, "m": 1.0}


def manifest_pixel_size(sample: Path) -> float:
    """The x pixel size the sample corpus measured for a file, in metres."""
    manifest = json.loads((SAMPLES / "MANIFEST.json").read_text())
    relative = sample.relative_to(SAMPLES).as_posix()
    (entry,) = [f for f in manifest["files"] if f["path"] == relative]
    (x,) = [p for p in entry["expected"]["pixel_size"] if p["axis"] == "x"]
    assert x["unit"] == "m"
    return float(x["value"])


def sign_in(page: Any, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", USER_PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{base_url}/projects", timeout=TIMEOUT_MS)


def test_browser_signs_in_searches_and_views_a_calibrated_image(
    network: Network, browser: Any, viewer_files: None, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = network.server
    image_id = ingest_fei(network)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    tiles: list[tuple[str, int, str | None]] = []

    def note_tile(response: Any) -> None:
        if "/iiif/3/" in response.url and not response.url.endswith("/info.json"):
            tiles.append((response.url, response.status, response.headers.get("etag")))

    page.on("response", note_tile)

    sign_in(page, server.url, OWNER)
    page.fill("header input[name=q]", "Helios")
    page.press("header input[name=q]", "Enter")
    expect(page.locator("#result-count")).to_have_text("1 image found")
    # The filters narrow by normalised fields (pixel size in nm, modality from the catalogue).
    page.select_option("select[name=modality]", "SEM")
    page.fill("input[name=pixel_min_nm]", "3000")
    page.fill("input[name=pixel_max_nm]", "4000")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#result-count")).to_have_text("1 image found")
    page.fill("input[name=pixel_max_nm]", "1000")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#result-count")).to_have_text("0 images found")
    page.go_back()
    page.click(f".card a[href='/images/{image_id}']")
    page.wait_for_url(f"{server.url}/images/{image_id}")

    viewer = page.locator("#viewer")
    expect(viewer).to_have_attribute("data-state", "loaded")
    assert tiles, "the viewer loaded no tiles"
    assert all(status == 200 for _, status, _ in tiles), tiles
    first_urls = {url for url, _, _ in tiles}
    first_etags = {etag for _, _, etag in tiles}
    assert None not in first_etags

    # The scale bar: its length in metres over its width on screen must be the sample's pixel
    # size divided by the zoom, where the zoom is the image's width on screen over its pixels.
    label = page.locator("#scalebar-label").text_content() or ""
    match = re.fullmatch(r"(\d+) (pm|nm|µm|mm|m)", label.strip())
    assert match, label
    assert int(match[1]) in (1, 2, 5, 10, 20, 50, 100, 200, 500)
    bar_metres = int(match[1]) * UNITS[match[2]]
    bar_box = page.locator("#scalebar-bar").bounding_box()
    assert bar_box is not None and bar_box["width"] > 20
    image_on_screen = page.evaluate(
        """() => {
            const viewer = window.allmicroViewer;
            const item = viewer.world.getItemAt(0);
            return viewer.viewport.viewportToViewerElementRectangle(item.getBounds(true)).width;
        }"""
    )
    zoom = image_on_screen / 512  # screen pixels per image pixel; the sample is 512 wide
    measured = bar_metres / bar_box["width"] * zoom
    expected = manifest_pixel_size(FEI)
    assert abs(measured - expected) / expected < 0.01, (label, bar_box, image_on_screen)

    # Contrast: the high end of the window moves, the tiles are asked for again with new URLs.
    seen = len(tiles)
    page.locator("input[name=window-hi-0]").fill("2000")
    expect(viewer).to_have_attribute("data-tile-query", re.compile(r"window="))
    expect(viewer).to_have_attribute("data-state", "loaded")
    changed = tiles[seen:]
    assert changed, "moving the contrast control fetched no tiles"
    assert all(status == 200 for _, status, _ in changed), changed
    assert all("window=" in url and url not in first_urls for url, _, _ in changed)
    assert {etag for _, _, etag in changed}.isdisjoint(first_etags)

    shot = tmp_path / "image-page.png"
    viewer.screenshot(path=str(shot))
    with PILImage.open(shot) as picture:
        grey = picture.convert("L")
        assert grey.size[0] > 600
        # A blank (or single-colour) viewer has no variance; tiles, data bar and scale bar do.
        assert ImageStat.Stat(grey).var[0] > 100
    page.screenshot(path=str(tmp_path / "whole-page.png"), full_page=True)

    # "Open in napari / vizarr": a capability URL that works without any credentials.
    page.click("#make-link")
    expect(page.locator("#vizarr-link")).to_have_attribute(
        "href", re.compile(r"source=http.*zarr%2Fc%2F")
    )
    command = page.locator("#napari-command").input_value()
    capability = re.search(r"'(http[^']+/zarr/c/[^']+/)'", command)
    assert capability, command
    metadata = [httpx.get(capability[1] + name, verify=TLS) for name in (".zattrs", "zarr.json")]
    assert 200 in [r.status_code for r in metadata], [r.status_code for r in metadata]
    context.close()

    # Someone from another company gets the same 404 as for an image that does not exist.
    outsider = browser.new_context(locale="en-GB")
    other = outsider.new_page()
    other.set_default_timeout(TIMEOUT_MS)
    sign_in(other, server.url, OUTSIDER)
    response = other.goto(f"{server.url}/images/{image_id}")
    assert response is not None and response.status == 404
    expect(other.locator("h1")).to_have_text("Not found")
    assert other.locator("#viewer").count() == 0
    other.goto(f"{server.url}/search?q=Helios")
    expect(other.locator("#result-count")).to_have_text("0 images found")
    outsider.close()
