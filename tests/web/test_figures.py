"""Figures for reports, side-by-side comparison and the dataset table, on one server with three
small calibrated images: an exported figure's scale bar is as long as its label says and its
pixels are the tiles' pixels; the compare page's viewers follow each other; the table sorts,
chooses columns, downloads and compares a selection. Pages are checked at both sizes."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from allmicro_data.api.figures import FigureRequest, ScaleBar, compose, scale_bar
from allmicro_data.api.iiif import Region
from allmicro_data.catalogue.models import Roi
from allmicro_data.errors import Invalid
from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.conftest import LiveServer, PostgresDatabases, module_server
from tests.web.conftest import FEI, SCREENSHOTS, check_page_at_both_sizes
from tests.web.test_viewer import TIMEOUT_MS, sign_in

OWNER = "irena@coatings.example"
OUTSIDER = "oskar@company-c.example"
UNITS = {"mm": 1e-3, "µm": 1e-6, "nm": 1e-9, "Å": 1e-10}
# Pixel sizes of the three images, in metres.
FINE, MEDIUM = 2.5e-9, 4e-9
# An FEI Helios SEM image with the instrument's data bar under the sample (shared/samples).
HELIOS_NAME = "alpha-helios.tif"
HELIOS_PIXEL = 3.3724e-06  # metres, as MANIFEST.json measured it
# One IIIF picture (and so one figure) holds at most this many pixels on this server: the
# largest image (1100 x 900) exported whole at native resolution is over it.
MAX_AREA = 800_000


# Both compared viewers at rest and showing the same physical place at the same physical scale
# (places within a thousandth of a screen pixel, scales within a millionth).
COMPARE_SETTLED = """() => {
  const a = window.allmicroCompare.view(0), b = window.allmicroCompare.view(1);
  const place = (p, q) => Math.abs(p - q) * a.zoom <= 1e-3;
  const scale = (p, q) => Math.abs(p - q) <= 1e-6 * Math.max(p, q);
  return place(a.x, b.x) && place(a.y, b.y) && scale(a.zoom, b.zoom)
    && window.allmicroCompare.panels.every((panel) => !panel.viewer.isAnimating?.());
}"""
COMPARE_AT_REST = """() => {
  const now = JSON.stringify([window.allmicroCompare.view(0), window.allmicroCompare.view(1)]);
  const resting = now === window.compareLastView
    && window.allmicroCompare.panels.every((panel) => !panel.viewer.isAnimating?.());
  window.compareLastView = now;
  window.compareRestingPolls = resting ? (window.compareRestingPolls || 0) + 1 : 0;
  return window.compareRestingPolls >= 5;
}"""


def imagej_tiff(pixels: np.ndarray[Any, Any], metres_per_pixel: float) -> bytes:
    """An ImageJ TIFF whose X/YResolution and unit say the pixel size (ingest reads them)."""
    per_micrometre = 1e-6 / metres_per_pixel
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        pixels,
        imagej=True,
        resolution=(per_micrometre, per_micrometre),
        metadata={"unit": "um"},
    )
    return buffer.getvalue()


@dataclass
class Lab:
    server: LiveServer
    dataset: str
    # name -> image id
    images: dict[str, str]
    files: dict[str, str]  # image id -> its original's file id


def _created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module", params=["sqlite"])
def lab(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Lab]:
    env = {"ALLMICRO_IIIF_MAX_AREA": str(MAX_AREA)}
    with (
        module_server(request, tmp_path_factory, postgres_databases, "figures", env) as server,
        server.client() as admin,
    ):
        partner = _created(
            admin.post("/api/organisations", json={"name": "Coatings lab", "kind": "partner"})
        )
        company = _created(
            admin.post("/api/organisations", json={"name": "Company C", "kind": "company"})
        )
        for email, org in ((OWNER, partner), (OUTSIDER, company)):
            body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
            user = _created(admin.post("/api/users", json=body))
            if email == OWNER:
                owner = user
        project = _created(admin.post("/api/projects", json={"name": "Hard coatings"}))
        _created(
            admin.post(
                f"/api/projects/{project}/members", json={"user_id": owner, "role": "contributor"}
            )
        )
        dataset = _created(
            admin.post(f"/api/projects/{project}/datasets", json={"name": "TiN cross-sections"})
        )
        rng = np.random.default_rng(19)
        samples = {
            # Two pyramid levels: a figure narrower than its region reads the coarser one.
            "beta-coating.tif": imagej_tiff(
                rng.integers(0, 50_000, (900, 1100), dtype=np.uint16), FINE
            ),
            HELIOS_NAME: FEI.read_bytes(),
            "gamma-substrate.tif": imagej_tiff(
                rng.integers(0, 255, (60, 80), dtype=np.uint8), MEDIUM
            ),
        }
        with server.client(OWNER, USER_PASSWORD) as owner_client:
            jobs = {
                name: upload(owner_client, dataset, name, data)["job_id"]
                for name, data in samples.items()
            }
            images, files = {}, {}
            for name, job_id in jobs.items():
                job = wait_for_job(owner_client, job_id)
                assert job["status"] == "succeeded", job["error"]
                (images[name],) = job["image_ids"]
                files[images[name]] = job["file_id"]
        yield Lab(server=server, dataset=dataset, images=images, files=files)


def _owner(lab: Lab) -> httpx.Client:
    return lab.server.client(OWNER, USER_PASSWORD)


def _png(body: bytes) -> tuple[np.ndarray[Any, Any], dict[str, str]]:
    picture = PILImage.open(io.BytesIO(body))
    picture.load()
    return np.asarray(picture), dict(picture.text)  # type: ignore[attr-defined]


def _label_metres(label: str) -> float:
    value, unit = label.split(" ")
    return float(value) * UNITS[unit]


def _bar_length(pixels: np.ndarray[Any, Any]) -> int:
    """The longest run of white pixels, bounded by black, found in two or more rows in a row:
    the scale bar (the label's strokes and the picture's own white pixels are shorter)."""
    grey = pixels if pixels.ndim == 2 else pixels[..., 0]
    white = (grey == 255) if pixels.ndim == 2 else np.all(pixels == 255, axis=2)
    runs: list[set[int]] = []
    for y in range(grey.shape[0]):
        row = np.concatenate([[False], white[y], [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(row))
        found = set()
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if start > 0 and stop < grey.shape[1] and grey[y, start - 1] == 0 == grey[y, stop]:
                found.add(int(stop - start))
        runs.append(found)
    repeated = [n for y in range(1, len(runs)) for n in runs[y] & runs[y - 1]]
    assert repeated, "no scale bar in the figure"
    return max(repeated)


# ------------------------------------------------------------------ scale bars, without a server


def test_scale_bars_are_round_lengths_labelled_in_the_unit_that_reads_best() -> None:
    assert scale_bar(2.5e-9, 640) == ScaleBar(2e-7, 80, "200 nm")
    assert scale_bar(3.37e-6, 512) == ScaleBar(2e-4, 59, "200 µm")
    assert scale_bar(1e-11, 300) == ScaleBar(5e-10, 50, "5 Å")
    assert scale_bar(1.7e-4, 2000).label == "50 mm"
    with pytest.raises(Invalid):
        scale_bar(0.0, 100)


def test_a_tiff_figure_keeps_a_micrometre_label_and_a_name_in_any_script() -> None:
    asked = FigureRequest(Region(0, 0, 400, 300), 200, 150)
    pixels = np.full((150, 200), 90, dtype=np.uint8)
    figure = compose(
        pixels,
        asked,
        pixel_size=(1e-7, 1e-7),
        with_scale_bar=True,
        shapes=[],
        fmt="tiff",
        description={"image": "Žiga µ-section"},
    )
    assert figure.scale_bar == ScaleBar(5e-6, 25, "5 µm")
    with tifffile.TiffFile(io.BytesIO(figure.body)) as document:
        page = document.pages[0]
        about = json.loads(page.description)
        numerator, denominator = page.tags["XResolution"].value
        drawn = page.asarray()
    assert about["image"] == "Žiga µ-section" and about["scale_bar"]["label"] == "5 µm"
    assert 0.01 * denominator / numerator == pytest.approx(2e-7, rel=1e-6)
    assert _bar_length(drawn) == 25


# ------------------------------------------------------------------ figures over the API


def test_a_figure_has_a_scale_bar_as_long_as_its_label_says(lab: Lab) -> None:
    image = lab.images["beta-coating.tif"]
    with _owner(lab) as c:
        for region, width in (("100,100,800,600", 400), ("0,0,1100,900", 700)):
            response = c.get(
                f"/api/images/{image}/figure",
                params={"region": region, "width": width, "scalebar": 1},
            )
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png"
            assert "attachment" in response.headers["content-disposition"]
            assert "beta-coating_x" in response.headers["content-disposition"]
            pixels, text = _png(response.content)
            region_width = int(region.split(",")[2])
            assert pixels.shape[1] == width
            metres_per_pixel = FINE * region_width / width
            bar = _bar_length(pixels)
            label = text["Scale bar"]
            assert re.fullmatch(r"[125]0* (nm|µm|Å)", label), label
            assert abs(bar * metres_per_pixel - _label_metres(label)) <= metres_per_pixel, (
                bar,
                label,
            )
            # A bar of a fifth of the figure at most, never a speck.
            assert width / 12 <= bar <= width / 5

        # TIFF keeps the figure's physical pixel size in its resolution tags (per centimetre).
        tiff = c.get(
            f"/api/images/{image}/figure",
            params={"region": "100,100,800,600", "width": 400, "format": "tiff", "scalebar": 1},
        )
        assert tiff.status_code == 200, tiff.text
        assert tiff.headers["content-type"] == "image/tiff"
        assert '.tif"' in tiff.headers["content-disposition"]
        with tifffile.TiffFile(io.BytesIO(tiff.content)) as document:
            page = document.pages[0]
            assert page.tags["ResolutionUnit"].value == 3  # centimetre
            for tag in ("XResolution", "YResolution"):
                numerator, denominator = page.tags[tag].value
                metres = 0.01 * denominator / numerator
                assert metres == pytest.approx(FINE * 2, rel=1e-6), tag
            from_tiff = page.asarray()
        assert abs(_bar_length(from_tiff) * FINE * 2 - 2e-7) <= FINE * 2


def test_figure_pixels_are_the_tiles_pixels(lab: Lab) -> None:
    image = lab.images["beta-coating.tif"]
    rendering = {"window": "1000,40000", "gamma": "1.5"}
    with _owner(lab) as c:
        for region, width, size in (
            ("256,128,300,200", 150, "150,"),  # from the second level, resampled
            ("700,500,90,70", None, "max"),  # native resolution
        ):
            params = {"region": region, **rendering}
            if width:
                params["width"] = str(width)
            figure = c.get(f"/api/images/{image}/figure", params=params)
            assert figure.status_code == 200, figure.text
            tile = c.get(f"/iiif/3/{image}/{region}/{size}/0/default.png", params=rendering)
            assert tile.status_code == 200, tile.text
            from_figure, _ = _png(figure.content)
            from_tile, _ = _png(tile.content)
            assert from_figure.shape == from_tile.shape
            assert np.array_equal(from_figure, from_tile), region


def test_saved_rois_are_drawn_on_request(lab: Lab) -> None:
    image = lab.images["beta-coating.tif"]
    url = lab.server.env["ALLMICRO_DATABASE_URL"]
    engine = create_engine(url)
    with Session(engine) as session:
        session.add(Roi(image_id=image, kind="rectangle", points=[[300, 300], [500, 400]]))
        session.add(Roi(image_id=image, kind="line", points=[[10, 10], [20, 20]], z=1))
        session.commit()
    engine.dispose()
    params = {"region": "200,200,400,400"}
    with _owner(lab) as c:
        plain, _ = _png(c.get(f"/api/images/{image}/figure", params=params).content)
        drawn, _ = _png(c.get(f"/api/images/{image}/figure", params={**params, "rois": 1}).content)
    assert plain.ndim == 2  # grey stays grey without annotations
    gold = np.all(drawn == (255, 215, 0), axis=2)
    # The rectangle's edges, from (100, 100) to (300, 200) in the figure; the other plane's
    # line is not drawn.
    assert gold[100, 150] and gold[200, 150] and gold[150, 100] and gold[150, 300]
    assert not gold[150, 150] and not gold[:90, :90].any()


def test_figures_are_refused_to_outsiders_and_beyond_the_limits(lab: Lab) -> None:
    image = lab.images["beta-coating.tif"]
    with lab.server.client(OUTSIDER, USER_PASSWORD) as outsider:
        assert outsider.get(f"/api/images/{image}/figure").status_code == 404
    with _owner(lab) as c:
        too_large = c.get(f"/api/images/{image}/figure")
        assert too_large.status_code == 413
        assert too_large.headers["content-type"] == "application/problem+json"
        assert "width=" in too_large.json()["detail"]
        fits = c.get(f"/api/images/{image}/figure", params={"width": 900})
        assert fits.status_code == 200
        for params in (
            {"width": 2000, "region": "0,0,1100,900"},  # figures never upscale
            {"region": "5000,0,10,10"},
            {"region": "0,0,10,10", "format": "gif"},
            {"region": "0,0,10,10", "z": 3},
            {"region": "0,0,10,10", "width": 1, "scalebar": 1},  # no room for a bar
        ):
            refused = c.get(f"/api/images/{image}/figure", params=params)
            assert 400 <= refused.status_code < 500, (params, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"


def test_compare_and_table_pages_are_404_to_outsiders(lab: Lab) -> None:
    beta, alpha = lab.images["beta-coating.tif"], lab.images[HELIOS_NAME]
    with lab.server.client(OUTSIDER, USER_PASSWORD) as outsider:
        assert outsider.get("/compare", params={"images": f"{beta},{alpha}"}).status_code == 404
        assert outsider.get(f"/datasets/{lab.dataset}/table").status_code == 404
    with _owner(lab) as c:
        # One image the caller may not see (or that does not exist) fails the whole page.
        assert c.get("/compare", params={"images": f"{beta},nope"}).status_code == 404
        for few_or_many in ({"images": beta}, {"image": [beta] * 5}):
            refused = c.get("/compare", params=few_or_many)
            assert refused.status_code == 422
            assert refused.headers["content-type"].startswith("text/html")
        assert c.get("/compare", params={"image": [beta, alpha]}).status_code == 200


# ------------------------------------------------------------------ in Chromium


def _signed_in(browser: Any, lab: Lab) -> tuple[Any, Any]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="en-GB", accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, lab.server.url, OWNER)
    return context, page


def test_the_image_page_exports_the_current_view(
    lab: Lab, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    image = lab.images["beta-coating.tif"]
    context, page = _signed_in(browser, lab)
    page.goto(f"{lab.server.url}/images/{image}")
    expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")
    check_page_at_both_sizes(page, "image-figure-panel")
    page.evaluate(
        "() => { const v = window.allmicroImage.viewer.viewport;"
        " v.zoomTo(v.getHomeZoom() * 3, null, true); }"
    )
    with page.expect_download() as downloading:
        page.click("#figure-export")
    download = downloading.value
    assert re.fullmatch(r"beta-coating_x\d+_y\d+_\d+x\d+_\d+px\.png", download.suggested_filename)
    # For people to look at, beside the pages' screenshots.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    download.save_as(SCREENSHOTS / "figure-export.png")
    page.locator("#figure-panel").screenshot(path=str(SCREENSHOTS / "figure-panel.png"))
    pixels, text = _png(download.path().read_bytes())
    url = page.locator("#figure-form").get_attribute("data-last-url")
    region = re.search(r"region=(\d+)%2C(\d+)%2C(\d+)%2C(\d+)", url or "")
    assert region, url
    x, y, w, h = (int(v) for v in region.groups())
    shown = page.evaluate(
        "() => { const v = window.allmicroImage.viewer;"
        " const r = v.world.getItemAt(0).viewportToImageRectangle(v.viewport.getBounds(true));"
        " return [r.x, r.y, r.width, r.height]; }"
    )
    # The part of the image in view, at native resolution, with its scale bar.
    assert all(abs(a - b) <= 1 for a, b in zip((x, y, x + w, y + h), _corners(shown), strict=True))
    assert w < 1100 and h < 900 and pixels.shape[:2] == (h, w)
    assert abs(_bar_length(pixels) * FINE - _label_metres(text["Scale bar"])) <= FINE
    context.close()


def test_the_image_page_exports_a_saved_roi_with_a_margin(
    lab: Lab, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    image = lab.images["beta-coating.tif"]
    with _owner(lab) as c:
        rois = c.get(f"/api/images/{image}/rois").raise_for_status().json()
    (rectangle,) = [r for r in rois if r["kind"] == "rectangle"]  # test_saved_rois_… saved it
    context, page = _signed_in(browser, lab)
    page.goto(f"{lab.server.url}/images/{image}")
    expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")
    page.check("#figure-area-roi")
    expect(page.locator("#figure-roi")).to_be_visible()
    page.select_option("#figure-roi", rectangle["id"])
    with page.expect_download() as downloading:
        page.click("#figure-export")
    pixels, _ = _png(downloading.value.path().read_bytes())
    url = page.locator("#figure-form").get_attribute("data-last-url") or ""
    region = re.search(r"region=(\d+)%2C(\d+)%2C(\d+)%2C(\d+)", url)
    assert region, url
    # The rectangle (300, 300)-(500, 400) with a margin of a tenth of its larger side, 20 px.
    assert [int(v) for v in region.groups()] == [280, 280, 240, 140]
    assert pixels.shape[:2] == (140, 240)
    context.close()


def test_a_whole_image_figure_leaves_out_the_hidden_data_bar(
    lab: Lab, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    image = lab.images[HELIOS_NAME]
    context, page = _signed_in(browser, lab)
    page.goto(f"{lab.server.url}/images/{image}")
    expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")
    expect(page.locator("#viewer")).to_have_attribute("data-data-bar", "hidden")
    sample = page.evaluate("() => window.allmicroImage.imageRegion")
    assert sample["height"] < 470  # the data bar is below the sample
    page.check("#figure-form input[name=area][value=full]")
    page.select_option("#figure-format", "tiff")
    with page.expect_download() as downloading:
        page.click("#figure-export")
    assert downloading.value.suggested_filename.endswith(".tif")
    with tifffile.TiffFile(downloading.value.path()) as document:
        pixels = document.pages[0].asarray()
        about = json.loads(document.pages[0].description)
    assert pixels.shape[:2] == (sample["height"], sample["width"])
    assert about["region"] == [sample["x"], sample["y"], sample["width"], sample["height"]]
    assert abs(_bar_length(pixels) * HELIOS_PIXEL - _label_metres(about["scale_bar"]["label"])) <= (
        HELIOS_PIXEL
    )
    context.close()


def _corners(box: list[float]) -> tuple[float, ...]:
    """A viewer's rectangle in image pixels, clipped to the 1100 x 900 image, as corners."""
    x, y, w, h = box
    return (max(0, x), max(0, y), min(1100, x + w), min(900, y + h))


def _names(page: Any) -> list[str]:
    return [
        n.strip() for n in page.locator("#image-table tbody td[data-column=name]").all_inner_texts()
    ]


def test_the_table_sorts_chooses_columns_downloads_and_compares(
    lab: Lab, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    context, page = _signed_in(browser, lab)
    page.goto(f"{lab.server.url}/datasets/{lab.dataset}")
    page.click("#table-view-link")
    page.wait_for_url(f"{lab.server.url}/datasets/{lab.dataset}/table")
    check_page_at_both_sizes(page, "dataset-table")
    assert _names(page) == [HELIOS_NAME, "beta-coating.tif", "gamma-substrate.tif"]

    # Sorting by pixel size: finest first, then coarsest first.
    page.click("th[data-column=pixel_size] button")
    assert _names(page) == ["beta-coating.tif", "gamma-substrate.tif", HELIOS_NAME]
    expect(page.locator("th[data-column=pixel_size]")).to_have_attribute("aria-sort", "ascending")
    page.click("th[data-column=pixel_size] button")
    assert _names(page) == [HELIOS_NAME, "gamma-substrate.tif", "beta-coating.tif"]

    # Columns chosen stay chosen in this browser.
    page.click("#column-chooser summary")
    page.uncheck("#column-chooser input[data-column=magnification]")
    page.check("#column-chooser input[data-column=format]")
    expect(page.locator("th[data-column=magnification]")).to_be_hidden()
    expect(page.locator("th[data-column=format]")).to_be_visible()
    page.reload()
    expect(page.locator("th[data-column=magnification]")).to_be_hidden()
    expect(page.locator("th[data-column=format]")).to_be_visible()
    expect(page.locator("tbody td[data-column=format]").first).to_be_visible()

    # Two rows selected: the ZIP holds exactly their originals and a manifest of them.
    chosen = ["beta-coating.tif", "gamma-substrate.tif"]
    for name in chosen:
        page.check(f"tr[data-image-id='{lab.images[name]}'] input[name=image]")
    with page.expect_download() as downloading:
        page.click("#download-selection")
    with zipfile.ZipFile(downloading.value.path()) as archive:
        names = archive.namelist()
        originals = sorted(n for n in names if n.endswith(".tif"))
        assert [n.rsplit("/", 1)[-1] for n in originals] == chosen
        (manifest,) = [n for n in names if n.endswith("SHA256SUMS")]
        sums = dict(
            reversed(line.split(maxsplit=1))
            for line in archive.read(manifest).decode().splitlines()
            if line.strip()
        )
        for name in originals:
            listed = [digest for path, digest in sums.items() if path.lstrip("*").endswith(name)]
            assert listed == [hashlib.sha256(archive.read(name)).hexdigest()], name
        assert not any(n.endswith(HELIOS_NAME) for n in names)

    # The same two, compared side by side: pan and zoom one, the other follows.
    page.click("#compare-selection")
    page.wait_for_url(re.compile(r".*/compare\?images=.*"))
    for index in (0, 1):
        expect(page.locator(f"#compare-viewer-{index}")).to_have_attribute("data-state", "loaded")
    expect(page.locator("#compare-grid")).to_have_attribute("data-linked", "physical")
    check_page_at_both_sizes(page, "compare")
    # The viewers fit themselves again after the phone size: read the view once it has not
    # moved for half a second.
    page.wait_for_function(COMPARE_AT_REST, polling=100)
    before = page.evaluate("() => window.allmicroCompare.view(1)")
    box = page.locator("#compare-viewer-0").bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 30, steps=5)
    page.mouse.up()
    # Settled: both show the same physical place at the same physical scale.
    page.wait_for_function(COMPARE_SETTLED)
    after = page.evaluate("() => [window.allmicroCompare.view(0), window.allmicroCompare.view(1)]")
    # The wheel changed the scale (in, up to the viewer's largest magnification, which a small
    # image's fitted view on a wide screen may be near or beyond), and the follower took it.
    assert abs(after[1]["zoom"] / before["zoom"] - 1) > 0.05, (before, after)
    assert abs(after[1]["x"] - before["x"]) > 0 or abs(after[1]["y"] - before["y"]) > 0
    context.close()
