"""The measurement tools in headless Chromium on the Zeiss SEM sample: a distance agrees with the
calibration and the scale bar, a line profile's CSV is the pyramid's pixels, a region is measured
and saved, a viewer sees it read-only, and the keyboard alone measures a distance."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from tests.api.test_end_to_end import USER_PASSWORD
from tests.api.test_lifecycle import _created, ingest
from tests.api.test_rois import MANIFEST_PIXEL_SIZE, ZEISS, _level0
from tests.conftest import LiveServer, PostgresDatabases, module_server
from tests.web.conftest import check_page_at_both_sizes
from tests.web.test_viewer import sign_in

TIMEOUT_MS = 30_000
CONTRIBUTOR = "mara@coatings.example"
VIEWER = "vera@coatings.example"
UNITS = {"Å": 1e-10, "nm": 1e-9, "µm": 1e-6, "mm": 1e-3, "m": 1.0}


@dataclass
class Sample:
    server: LiveServer
    image: str
    pixels: np.ndarray[Any, Any]
    sx: float


@pytest.fixture(scope="module", params=["sqlite"])
def sample(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Sample]:
    with (
        module_server(request, tmp_path_factory, postgres_databases, "measure-web") as server,
        server.client() as admin,
    ):
        org = _created(admin.post("/api/organisations", json={"name": "Coat", "kind": "partner"}))
        project = _created(admin.post("/api/projects", json={"name": "Coatings"}))
        for email, role in ((CONTRIBUTOR, "contributor"), (VIEWER, "viewer")):
            body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
            user = _created(admin.post("/api/users", json=body))
            _created(
                admin.post(f"/api/projects/{project}/members", json={"user_id": user, "role": role})
            )
        dataset = _created(admin.post(f"/api/projects/{project}/datasets", json={"name": "Day"}))
        image = ingest(server, dataset, ZEISS.name, ZEISS.read_bytes(), CONTRIBUTOR)
        sx = admin.get(f"/api/images/{image}").json()["pixel_size"]["x"]
        yield Sample(server, image, _level0(server, image), sx)


def open_image(browser: Any, sample: Sample, email: str) -> Any:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, sample.server.url, email)
    page.goto(f"{sample.server.url}/images/{sample.image}")
    expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")
    expect(page.locator("#measure-panel")).to_have_attribute("data-ready", "true")
    return page


def on_screen(page: Any, x: float, y: float) -> tuple[float, float]:
    """Where the image's full-resolution pixel position (x, y) is on the page."""
    found = page.evaluate(
        """([x, y]) => {
            const viewer = window.allmicroImage.viewer;
            const at = viewer.world.getItemAt(0).imageToViewerElementCoordinates(
                new OpenSeadragon.Point(x, y));
            const box = viewer.element.getBoundingClientRect();
            return [box.left + at.x, box.top + at.y];
        }""",
        [x, y],
    )
    return float(found[0]), float(found[1])


def click_image(page: Any, *points: tuple[float, float]) -> list[tuple[float, float]]:
    # Choosing a tool in the side panel may have scrolled the viewer out of sight.
    page.locator("#viewer").scroll_into_view_if_needed()
    placed = []
    for x, y in points:
        sx, sy = on_screen(page, x, y)
        page.mouse.click(round(sx), round(sy))
        placed.append((round(sx), round(sy)))
    return placed


def shown_length(page: Any) -> float:
    """The length the panel shows, in metres (its text, unit and all)."""
    label = page.locator("#measure-result dd").first.text_content() or ""
    match = re.fullmatch(r"([\d.,]+)\s*(Å|nm|µm|mm|m)", label.strip())
    assert match, label
    return float(match[1].replace(",", "")) * UNITS[match[2]]


def test_distance_profile_and_regions_in_the_browser(browser: Any, sample: Sample) -> None:
    from playwright.sync_api import expect

    page = open_image(browser, sample, CONTRIBUTOR)
    result = page.locator("#measure-result")

    # A distance across the sample, 400 pixels long: the panel's length is the catalogue's
    # calibration, the sample's own, and what the screen shows, each within 1 %.
    page.click("button[data-tool=line]")
    (ax, ay), (bx, by) = click_image(page, (50, 100), (450, 100))
    expect(result).to_have_attribute("data-length", re.compile(r"\d"))
    metres = float(result.get_attribute("data-length") or "nan")
    assert abs(metres - 400 * sample.sx) / (400 * sample.sx) < 0.01
    assert abs(metres - 400 * MANIFEST_PIXEL_SIZE) / (400 * MANIFEST_PIXEL_SIZE) < 0.01
    assert abs(shown_length(page) - metres) / metres < 0.005
    # What the screen says: the viewer's calibrated scale bar (its length in metres over its
    # width on screen) gives the clicks' distance on screen in metres; it must agree too.
    bar = page.locator("#scalebar")
    expect(bar).to_be_visible()
    bar_metres = float(bar.get_attribute("data-metres") or "nan")
    bar_pixels = page.evaluate(
        "() => document.getElementById('scalebar-bar').getBoundingClientRect().width"
    )
    by_scale_bar = math.hypot(bx - ax, by - ay) * bar_metres / bar_pixels
    assert abs(metres - by_scale_bar) / by_scale_bar < 0.01, (metres, by_scale_bar)

    # A line profile: its CSV is the level-0 pixels along the line, read here with zarr.
    page.click("button[data-tool=profile]")
    click_image(page, (120, 90), (300, 220))
    link = page.locator("#measure-profile-csv")
    expect(page.locator("#measure-profile")).to_be_visible()
    expect(page.locator("#measure-profile-plot polyline")).to_have_count(1)
    href = link.get_attribute("href") or ""
    query = {k: float(v[0]) for k, v in parse_qs(urlparse(href).query).items() if k != "format"}
    response = page.request.get(f"{sample.server.url}{href}")
    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO(response.text())))
    x0, y0, x1, y1 = query["x0"], query["y0"], query["x1"], query["y1"]
    n = math.floor(math.hypot(x1 - x0, y1 - y0)) + 1
    f = np.arange(n) / (n - 1)
    xs = np.floor(x0 + (x1 - x0) * f).astype(int)
    ys = np.floor(y0 + (y1 - y0) * f).astype(int)
    assert [int(r["value"]) for r in rows] == sample.pixels[ys, xs].tolist()

    # A rectangle: its statistics, then saved on the image under a name.
    page.click("button[data-tool=rectangle]")
    click_image(page, (100, 50), (200, 150))
    expect(result).to_contain_text("Mean")
    page.fill("#measure-name", "coating layer")
    page.click("#measure-save button[type=submit]")
    expect(page.locator("#measure-rois li")).to_have_count(1)
    expect(page.locator("#measure-rois li")).to_contain_text("coating layer")
    expect(page.locator(".measure-overlay g.saved")).to_have_count(1)
    check_page_at_both_sizes(page, "image-measure")
    page.context.close()

    # A viewer sees the saved region, drawn and listed, and cannot change it.
    page = open_image(browser, sample, VIEWER)
    expect(page.locator("#measure-rois li")).to_have_count(1)
    expect(page.locator(".measure-overlay g.saved")).to_have_count(1)
    assert page.locator("#measure-save").count() == 0
    assert page.locator("#measure-rois .danger-link").count() == 0
    page.locator("#measure-rois li button").first.click()
    expect(page.locator("#measure-result")).to_contain_text("Mean")
    page.context.close()


def test_the_keyboard_alone_measures_a_distance(browser: Any, sample: Sample) -> None:
    from playwright.sync_api import expect

    page = open_image(browser, sample, VIEWER)
    page.focus("button[data-tool=line]")
    page.keyboard.press("Enter")
    expect(page.locator("button[data-tool=line]")).to_have_attribute("aria-pressed", "true")
    page.focus("#viewer .openseadragon-canvas")
    page.keyboard.press("Enter")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    result = page.locator("#measure-result")
    expect(result).to_have_attribute("data-length", re.compile(r"\d"))
    # Three steps of the viewer's arrow-key pan, in image pixels, however fast they came.
    steps = page.evaluate(
        """(() => {
            const viewer = window.allmicroImage.viewer, item = viewer.world.getItemAt(0);
            const moved = viewer.viewport.deltaPointsFromPixels(
                new OpenSeadragon.Point(3 * viewer.pixelsPerArrowPress, 0));
            return item.viewportToImageCoordinates(moved).x
                - item.viewportToImageCoordinates(new OpenSeadragon.Point(0, 0)).x;
        })()"""
    )
    metres = float(result.get_attribute("data-length") or "0")
    assert steps > 0 and abs(metres - steps * sample.sx) < 0.01 * steps * sample.sx, metres
    page.keyboard.press("Escape")
    expect(page.locator("button[data-tool=line]")).to_have_attribute("aria-pressed", "false")
    page.context.close()


def test_a_phone_measures_by_tapping(browser: Any, sample: Sample) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(
        viewport={"width": 390, "height": 844}, locale="en-GB", has_touch=True, is_mobile=True
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, sample.server.url, VIEWER)
    page.goto(f"{sample.server.url}/images/{sample.image}")
    expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")
    expect(page.locator("#measure-panel")).to_have_attribute("data-ready", "true")
    page.locator("button[data-tool=line]").tap()
    page.locator("#viewer").scroll_into_view_if_needed()
    for x, y in ((100, 60), (300, 60)):
        sx, sy = on_screen(page, x, y)
        page.touchscreen.tap(round(sx), round(sy))
    result = page.locator("#measure-result")
    expect(result).to_have_attribute("data-length", re.compile(r"\d"))
    metres = float(result.get_attribute("data-length") or "nan")
    # A tap lands on a whole CSS pixel: at this zoom, within a pixel or two of the image.
    assert abs(metres - 200 * sample.sx) < 3 * sample.sx, metres / sample.sx
    context.close()


def shown(page: Any, label: str) -> str:
    """The value the measurement panel shows under a label."""
    result = page.locator("#measure-result")
    for dt, dd in zip(result.locator("dt").all(), result.locator("dd").all(), strict=True):
        if dt.text_content() == label:
            return dd.text_content() or ""
    raise AssertionError(f"no {label!r} in {result.text_content()!r}")


def test_polygons_end_on_finish_and_angles_read_in_degrees(browser: Any, sample: Sample) -> None:
    from playwright.sync_api import expect

    page = open_image(browser, sample, VIEWER)
    result = page.locator("#measure-result")
    page.click("button[data-tool=angle]")
    click_image(page, (300, 50), (100, 50), (100, 250))
    expect(result).to_contain_text("°")
    assert abs(float(shown(page, "Angle").rstrip("°")) - 90) < 1
    page.click("button[data-tool=polygon]")
    finish = page.locator("#measure-finish")
    expect(finish).to_be_visible()
    click_image(page, (50, 50), (150, 50), (150, 150), (50, 150))
    # A polygon goes on until it is finished: still being drawn after four points.
    expect(page.locator(".measure-overlay g.drawing")).to_have_count(1)
    finish.click()
    expect(page.locator(".measure-overlay g.drawing")).to_have_count(0)
    expect(result).to_contain_text("Mean")
    # A square of 100 by 100 pixels, its corners placed within a screen pixel.
    assert abs(int(shown(page, "Pixels").replace(",", "")) - 10_000) < 400
    page.context.close()
