"""Display settings that stick, on one server with one ingest of the FEI sample (a 16-bit frame
whose bottom 29 rows are the instrument's data bar): the bar is left out of the histogram and
the default window, hidden in the viewer until asked for; histogram handles and auto-contrast
change the tiles' pixels; the view in the address reproduces the tiles in a fresh browser;
saved settings apply (user over image default), and only contributors set an image's default."""

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
from sqlalchemy import create_engine, null, select, update

from allmicro_data.catalogue.models import Image
from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.conftest import LiveServer, PostgresDatabases, module_server
from tests.web.conftest import FEI, check_page_at_both_sizes
from tests.web.test_viewer import TIMEOUT_MS, sign_in

OWNER = "darja@display.example"  # contributor
VIEWER = "luka@display.example"  # viewer
REGION = [0, 442, 0, 512]  # what the FEI reader finds: rows 442-470 are the data bar


@dataclass
class Lab:
    server: LiveServer
    image: str


def _created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module", params=["sqlite"])
def lab(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Lab]:
    with (
        module_server(request, tmp_path_factory, postgres_databases, "display") as server,
        server.client() as admin,
    ):
        org = _created(
            admin.post("/api/organisations", json={"name": "SEM lab", "kind": "partner"})
        )
        project = _created(admin.post("/api/projects", json={"name": "Coatings"}))
        for email, role in ((OWNER, "contributor"), (VIEWER, "viewer")):
            body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
            user = _created(admin.post("/api/users", json=body))
            _created(
                admin.post(f"/api/projects/{project}/members", json={"user_id": user, "role": role})
            )
        dataset = _created(admin.post(f"/api/projects/{project}/datasets", json={"name": "SEM"}))
        with server.client(OWNER, USER_PASSWORD) as owner:
            job = wait_for_job(owner, upload(owner, dataset, FEI.name, FEI.read_bytes())["job_id"])
            assert job["status"] == "succeeded", job["error"]
            (image,) = job["image_ids"]
        yield Lab(server, image)


def picture(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    with PILImage.open(io.BytesIO(response.content)) as opened:
        return np.asarray(opened.convert("L"))


# ------------------------------------------------------------------ API


def test_histogram_and_default_window_leave_the_data_bar_out(lab: Lab) -> None:
    frame = tifffile.imread(FEI)
    sample = frame[REGION[0] : REGION[1], REGION[2] : REGION[3]]
    assert frame.max() > sample.max()  # the bar is brighter than anything in the sample
    with lab.server.client(VIEWER, USER_PASSWORD) as viewer:
        found = viewer.get(f"/api/images/{lab.image}/histogram", params={"bins": 64})
        assert found.status_code == 200, found.text
        histogram = found.json()
        assert histogram["image_region"] == REGION
        assert histogram["level"] == 0  # a 512 px frame is read whole
        assert histogram["pixels"] == sample.size
        assert sum(histogram["counts"]) == sample.size
        assert histogram["min"] == float(sample.min())
        assert histogram["max"] == float(sample.max())
        lo, hi = np.percentile(sample, [0.1, 99.9])
        assert histogram["percentiles"]["0.1"] == pytest.approx(lo)
        assert histogram["percentiles"]["99.9"] == pytest.approx(hi)

        display = viewer.get(f"/api/images/{lab.image}/display").json()
        assert display["image_region"] == REGION
        window = display["channels"][0]["window"]
        # From the sample alone: before, the bar's bright rows stretched it to 65280.
        assert window["end"] <= max(hi, lo + 1)

        for bad in ({"c": 1}, {"z": 3}, {"bins": 1}, {"bins": "x"}):
            refused = viewer.get(f"/api/images/{lab.image}/histogram", params=bad)
            assert refused.status_code in (400, 422), (bad, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")


def test_an_image_read_before_regions_were_recorded_gets_its_region_from_its_ome_xml(
    lab: Lab,
) -> None:
    engine = create_engine(lab.server.env["ALLMICRO_DATABASE_URL"])
    row = select(Image.image_region, Image.updated_at).where(Image.id == lab.image)
    with engine.begin() as connection:
        connection.execute(update(Image).where(Image.id == lab.image).values(image_region=null()))
        before = connection.execute(row).one()
    assert before.image_region is None
    # The admin: a caller whose view of the image the server does not remember yet.
    with lab.server.client() as admin:
        display = admin.get(f"/api/images/{lab.image}/display").json()
    assert display["image_region"] == REGION
    with engine.connect() as connection:
        after = connection.execute(row).one()
    engine.dispose()
    assert after.image_region == REGION
    assert after.updated_at > before.updated_at  # a new version: caches and ETags move on


def test_invert_and_log_are_rendering_parameters(lab: Lab) -> None:
    tile = f"/iiif/3/{lab.image}/full/max/0/default.png"
    with lab.server.client(VIEWER, USER_PASSWORD) as viewer:
        plain = picture(viewer.get(tile, params={"window": "0,65280"}))
        inverted = picture(viewer.get(tile, params={"window": "0,65280", "invert": "1"}))
        assert np.array_equal(inverted, 255 - plain)
        logarithmic = picture(viewer.get(tile, params={"window": "0,65280", "log": "1"}))
        # A logarithmic scale lifts the dim values of the bar and keeps black and white.
        assert (logarithmic >= plain).all() and (logarithmic > plain).any()
        assert logarithmic[plain == 0].max() == 0
        assert logarithmic[plain == 255].min() == 255


def test_saved_renderings_follow_the_access_rules(lab: Lab) -> None:
    url = f"/api/images/{lab.image}/rendering"
    with (
        lab.server.client(VIEWER, USER_PASSWORD) as viewer,
        lab.server.client(OWNER, USER_PASSWORD) as owner,
    ):
        assert viewer.get(url).json() == {"settings": None, "updated_at": None, "may_edit": False}
        assert owner.get(url).json()["may_edit"] is True
        refused = viewer.put(url, json={"window": "0,100"})
        assert refused.status_code == 403, refused.text
        assert viewer.delete(url).status_code == 403
        bad = owner.put(url, json={"window": "100,0"})
        assert bad.status_code == 422, bad.text
        assert owner.put(url, json={"cmap": "nope"}).status_code == 422
        assert owner.put(url, json={"what": 1}).status_code == 422
        assert owner.put(url, json={"c": "0,1"}).status_code == 422  # one channel only
        assert owner.put(url, json={"window": "0,1;0,2"}).status_code == 422

        mine = viewer.put(f"{url}/mine", json={"window": "0,100", "log": True})
        assert mine.status_code == 200, mine.text
        assert mine.json()["settings"]["window"] == "0,100"
        assert owner.get(f"{url}/mine").json()["settings"] is None  # each user's own
        assert viewer.delete(f"{url}/mine").status_code == 204
        assert viewer.get(f"{url}/mine").json()["settings"] is None
        # Someone who may not see the image learns nothing of it.
        with lab.server.client() as admin:
            org = _created(
                admin.post("/api/organisations", json={"name": "Other", "kind": "company"})
            )
            body = {
                "email": "nina@other.example",
                "organisation_id": org,
                "password": USER_PASSWORD,
            }
            _created(admin.post("/api/users", json=body))
        with lab.server.client("nina@other.example", USER_PASSWORD) as outsider:
            for method in ("GET", "PUT", "DELETE"):
                for path in (url, f"{url}/mine"):
                    answer = outsider.request(method, path, json={} if method == "PUT" else None)
                    assert answer.status_code == 404, (method, path, answer.text)
            assert outsider.get(f"/api/images/{lab.image}/histogram").status_code == 404


# ------------------------------------------------------------------ the browser

CANVAS_STATS = """() => {
    const canvas = window.allmicroViewer.drawer.canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let drawn = 0, bright = 0, sum = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] === 0) continue;
        drawn += 1;
        sum += data[i];
        if (data[i] > 200) bright += 1;
    }
    return {drawn: drawn, bright: bright, mean: drawn ? sum / drawn : 0};
}"""


def _loaded(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")


def _query(page: Any) -> str:
    return str(page.locator("#viewer").get_attribute("data-tile-query") or "")


def test_viewer_hides_the_bar_and_histogram_and_auto_contrast_change_the_tiles(
    lab: Lab, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    server = lab.server
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, server.url, OWNER)
    page.goto(f"{server.url}/images/{lab.image}")
    viewer = page.locator("#viewer")
    _loaded(page)
    expect(viewer).to_have_attribute("data-histograms", "loaded")
    # The data bar is hidden: none of its bright pixels is drawn; the sample is.
    expect(viewer).to_have_attribute("data-data-bar", "hidden")
    hidden = page.evaluate(CANVAS_STATS)
    assert hidden["drawn"] > 0 and hidden["bright"] == 0, hidden
    region = page.evaluate("() => window.allmicroImage.imageRegion")
    assert [region["y0"], region["y1"], region["x0"], region["x1"]] == REGION
    assert page.evaluate("() => window.allmicroImage.formatLength(2e-10)") == "2 Å"
    check_page_at_both_sizes(page, "image-display")
    page.set_viewport_size({"width": 1440, "height": 900})

    page.check("input[name=data-bar]")
    expect(viewer).to_have_attribute("data-data-bar", "shown")
    page.wait_for_function("() => window.location.hash.includes('bar=1')")
    shown = page.evaluate(CANVAS_STATS)
    assert shown["bright"] > 0, shown

    # A typed window: the tiles are asked for again; the bar's pixels are dimmer.
    default_query = _query(page)
    page.fill("input[name=window-hi-0]", "60000")
    expect(viewer).to_have_attribute("data-tile-query", re.compile(r"window=0%2C60000"))
    _loaded(page)
    typed = page.evaluate(CANVAS_STATS)
    assert typed["mean"] < shown["mean"], (typed, shown)

    # Dragging the histogram's upper handle to the middle halves the window.
    box = page.locator("canvas.histogram").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    expect(viewer).to_have_attribute("data-tile-query", re.compile(r"window=0%2C(29|30)\d{3}$"))
    _loaded(page)
    dragged = page.evaluate(CANVAS_STATS)
    assert dragged["mean"] > typed["mean"], (dragged, typed)
    high = float(page.locator("input[name=window-hi-0]").input_value())
    assert 29000 < high < 31000

    # Auto-contrast: the sample's percentiles, as the server's default picks them. Its tiles are
    # the first ones again, which the browser may take from its cache without a request: the
    # canvas and the tiles' own pixels are what show the change.
    page.click("button[name=auto-0]")
    expect(viewer).to_have_attribute("data-tile-query", default_query)
    _loaded(page)
    auto = page.evaluate(CANVAS_STATS)
    assert auto["mean"] > dragged["mean"], (auto, dragged)
    # The tile's own pixels: the bar's rows are brighter than under the dragged window.
    with server.client(OWNER, USER_PASSWORD) as owner:
        whole = f"/iiif/3/{lab.image}/full/max/0/default.png"
        bar = slice(REGION[1], None)
        wide = picture(owner.get(whole, params={"window": f"0,{high:g}"}))[bar]
        narrow = picture(owner.get(whole + default_query))[bar]
        assert narrow.mean() > wide.mean()
    context.close()


def test_view_link_and_saved_settings_reproduce_the_tiles(
    lab: Lab, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    server = lab.server
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, server.url, OWNER)
    page.goto(f"{server.url}/images/{lab.image}")
    _loaded(page)
    page.fill("input[name=window-hi-0]", "20000")
    page.check("input[name=invert]")
    page.select_option("select[name=cmap]", "magma")
    expect(page.locator("#viewer")).to_have_attribute("data-tile-query", re.compile("invert=1"))
    expect(page.locator("#viewer")).to_have_attribute("data-tile-query", re.compile("cmap=magma"))
    _loaded(page)
    page.evaluate("() => window.allmicroViewer.viewport.zoomTo(2.5, null, true)")
    page.wait_for_function("() => window.location.hash.includes('zoom=2.5')")
    link = page.url
    query = _query(page)
    stats = page.evaluate(CANVAS_STATS)
    centre = page.evaluate("() => window.allmicroViewer.viewport.getCenter(true)")

    # The contributor saves this look as the image's default.
    page.click("button[name=save-default]")
    expect(page.locator("#rendering-status")).to_have_text("Saved.")
    context.close()

    # The link in a fresh browser (another person): the same tiles, the same view.
    fresh = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    other = fresh.new_page()
    other.set_default_timeout(TIMEOUT_MS)
    sign_in(other, server.url, VIEWER)
    other.goto(link)
    _loaded(other)
    assert _query(other) == query
    assert other.evaluate("() => window.allmicroViewer.viewport.getZoom(true)") == pytest.approx(
        2.5, rel=1e-3
    )
    again = other.evaluate("() => window.allmicroViewer.viewport.getCenter(true)")
    assert again["x"] == pytest.approx(centre["x"], abs=1e-3)
    assert again["y"] == pytest.approx(centre["y"], abs=1e-3)
    assert other.evaluate(CANVAS_STATS) == pytest.approx(stats, rel=0.01)

    # Without a link, the viewer gets the image's default; they may not change it, only theirs.
    other.goto("about:blank")
    other.goto(f"{server.url}/images/{lab.image}")
    _loaded(other)
    assert _query(other) == query
    assert other.locator("button[name=save-default]").count() == 0
    other.uncheck("input[name=invert]")
    expect(other.locator("#viewer")).to_have_attribute(
        "data-tile-query", re.compile(r"^(?!.*invert).*cmap=magma")
    )
    other.click("button[name=save-mine]")
    expect(other.locator("#rendering-status")).to_have_text("Saved.")
    mine = _query(other)
    other.goto("about:blank")
    other.goto(f"{server.url}/images/{lab.image}")
    _loaded(other)
    assert _query(other) == mine  # their own wins over the image's default
    fresh.close()
