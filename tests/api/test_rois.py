"""Measurements on an image over HTTP: region statistics and line profiles equal the pyramid's
full-resolution pixels read with zarr; ROIs are saved by contributors, listed by viewers,
exported as CSV and as OME ROIs in a schema-valid OME-XML; viewers cannot change them, outsiders
do not see them, and bad shapes are refused with problem+json."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import zarr

from tests.api.test_end_to_end import FEI, USER_PASSWORD
from tests.api.test_lifecycle import _created, ingest
from tests.conftest import LiveServer, PostgresDatabases, module_server

ZEISS = (
    Path(__file__).parents[1] / "data" / "samples" / "zeiss-sem" / "test_tiff_Zeiss_SEM_512pix.tif"
)
MANIFEST_PIXEL_SIZE = 1.1649976e-08  # MANIFEST.json: CZ_SEM field width / 512 px
CONTRIBUTOR = "cora@coatings.example"
VIEWER = "vito@coatings.example"
OUTSIDER = "otto@elsewhere.example"


@dataclass
class Measured:
    server: LiveServer
    image: str
    pixels: np.ndarray[Any, Any]  # level 0 of the stored pyramid, read with zarr
    sx: float  # metres per pixel, as the catalogue holds them
    sy: float


def _level0(server: LiveServer, image_id: str) -> np.ndarray[Any, Any]:
    data_dir = Path(server.env["ALLMICRO_DATA_DIR"])
    (root,) = [p for p in data_dir.rglob("*.zarr") if image_id in str(p)]
    group = zarr.open_group(str(root), mode="r")
    return np.asarray(group["0"][...])


@pytest.fixture(scope="module", params=["sqlite"])
def measured(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Measured]:
    with (
        module_server(request, tmp_path_factory, postgres_databases, "rois") as server,
        server.client() as admin,
    ):
        org = _created(admin.post("/api/organisations", json={"name": "Coat", "kind": "partner"}))
        other = _created(admin.post("/api/organisations", json={"name": "Else", "kind": "company"}))
        project = _created(admin.post("/api/projects", json={"name": "Coatings"}))
        for email, role, home in (
            (CONTRIBUTOR, "contributor", org),
            (VIEWER, "viewer", org),
            (OUTSIDER, None, other),
        ):
            body = {"email": email, "organisation_id": home, "password": USER_PASSWORD}
            user = _created(admin.post("/api/users", json=body))
            if role:
                member = {"user_id": user, "role": role}
                _created(admin.post(f"/api/projects/{project}/members", json=member))
        dataset = _created(admin.post(f"/api/projects/{project}/datasets", json={"name": "Day"}))
        image = ingest(server, dataset, ZEISS.name, ZEISS.read_bytes(), CONTRIBUTOR)
        size = admin.get(f"/api/images/{image}").json()["pixel_size"]
        # The catalogue's calibration is the sample's (its width and height round apart).
        for axis in ("x", "y"):
            assert size[axis] == pytest.approx(MANIFEST_PIXEL_SIZE, rel=1e-4)
        yield Measured(server, image, _level0(server, image), size["x"], size["y"])


def client(measured: Measured, email: str) -> httpx.Client:
    return measured.server.client(email, USER_PASSWORD)


def centres_inside(shape: tuple[int, int], inside: Any) -> np.ndarray[Any, Any]:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.asarray(inside(cols + 0.5, rows + 0.5))


def even_odd(vertices: list[list[float]]) -> Any:
    """Pixel centres inside a polygon by the crossing rule, written here apart from the server."""

    def inside(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result = np.zeros(x.shape, dtype=bool)
        for (ax, ay), (bx, by) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
            crosses = (ay > y) != (by > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = ax + (y - ay) * (bx - ax) / (by - ay)
            result ^= crosses & (x < at)
        return result

    return inside


def test_region_statistics_equal_numpy_over_the_same_pixels(measured: Measured) -> None:
    pixels = measured.pixels
    polygon = [[40.3, 30.2], [200.7, 60.1], [150.2, 180.6], [60.9, 140.4]]
    cases = {
        "rectangle": (
            [[10, 20], [110, 70]],
            lambda x, y: (x > 10) & (x < 110) & (y > 20) & (y < 70),
        ),
        "ellipse": (
            [[100, 50], [300, 150]],
            lambda x, y: ((x - 200) / 100) ** 2 + ((y - 100) / 50) ** 2 <= 1,
        ),
        "polygon": (polygon, even_odd(polygon)),
    }
    with client(measured, VIEWER) as c:
        for kind, (points, inside) in cases.items():
            response = c.post(
                f"/api/images/{measured.image}/measure", json={"kind": kind, "points": points}
            )
            assert response.status_code == 200, response.text
            got = response.json()
            values = pixels[centres_inside(pixels.shape, inside)].astype(np.float64)
            assert got["pixels"] == values.size, kind
            assert got["mean"] == pytest.approx(values.mean(), rel=1e-9), kind
            assert got["std"] == pytest.approx(values.std(), rel=1e-9), kind
            assert (got["min"], got["max"]) == (values.min(), values.max()), kind
            assert got["calibrated"] is True
        # The geometric area, in m², with the sample's pixel size.
        rect = c.post(
            f"/api/images/{measured.image}/measure",
            json={"kind": "rectangle", "points": [[10, 20], [110, 70]]},
        ).json()
        assert rect["area"] == pytest.approx(100 * measured.sx * 50 * measured.sy, rel=1e-6)
        line = c.post(
            f"/api/images/{measured.image}/measure",
            json={"kind": "line", "points": [[10, 10], [310, 310]]},
        ).json()
        assert line["length"] == pytest.approx(
            math.hypot(300 * measured.sx, 300 * measured.sy), rel=1e-6
        )
        angle = c.post(
            f"/api/images/{measured.image}/measure",
            json={"kind": "angle", "points": [[100, 10], [10, 10], [10, 100]]},
        ).json()
        assert angle["angle_deg"] == pytest.approx(90)


def test_a_line_profile_csv_equals_the_pyramid_pixels_along_the_line(measured: Measured) -> None:
    x0, y0, x1, y1 = 12.5, 7.25, 401.0, 230.75
    with client(measured, VIEWER) as c:
        response = c.get(
            f"/api/images/{measured.image}/profile",
            params={"x0": x0, "y0": y0, "x1": x1, "y1": y1, "format": "csv"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        as_json = c.get(
            f"/api/images/{measured.image}/profile",
            params={"x0": x0, "y0": y0, "x1": x1, "y1": y1},
        ).json()
    # One sample per pixel of length, each in the pixel its position falls in.
    n = math.floor(math.hypot(x1 - x0, y1 - y0)) + 1
    assert len(rows) == n == len(as_json["samples"])
    fractions = np.arange(n) / (n - 1)
    xs = np.floor(x0 + (x1 - x0) * fractions).astype(int)
    ys = np.floor(y0 + (y1 - y0) * fractions).astype(int)
    expected = measured.pixels[ys, xs]
    assert [int(r["value"]) for r in rows] == expected.tolist()
    assert [(int(r["x"]), int(r["y"])) for r in rows] == list(
        zip(xs.tolist(), ys.tolist(), strict=True)
    )
    # Distances in the unit the header names, chosen by the line's length.
    unit = next(k for k in rows[0] if k.startswith("distance_"))
    size = {"distance_nm": 1e-9, "distance_um": 1e-6}[unit]
    total = math.hypot((x1 - x0) * measured.sx, (y1 - y0) * measured.sy)
    assert float(rows[-1][unit]) * size == pytest.approx(total, rel=1e-5)
    assert [s["value"] for s in as_json["samples"]] == expected.tolist()


def test_rois_are_saved_listed_by_viewers_exported_as_csv_and_ome_rois(measured: Measured) -> None:
    import ome_types

    shapes = [
        {"kind": "line", "points": [[10, 10], [110, 10]], "name": "layer thickness"},
        {"kind": "rectangle", "points": [[20, 30], [60, 90]], "name": "coating"},
        {"kind": "ellipse", "points": [[100, 100], [140, 120]]},
        {"kind": "polygon", "points": [[200, 50], [260, 60], [230, 120]]},
        {"kind": "polyline", "points": [[5, 5], [50, 5], [50, 50]]},
        {"kind": "angle", "points": [[100, 10], [10, 10], [10, 100]]},
        {"kind": "point", "points": [[300, 200]]},
    ]
    url = f"/api/images/{measured.image}/rois"
    with client(measured, CONTRIBUTOR) as c:
        made = []
        for shape in shapes:
            response = c.post(url, json=shape)
            assert response.status_code == 201, response.text
            made.append(response.json())
    rect = made[1]["measurement"]
    values = measured.pixels[30:90, 20:60].astype(np.float64)
    assert rect["pixels"] == values.size and rect["mean"] == pytest.approx(values.mean())
    with client(measured, VIEWER) as c:
        listed = c.get(url)
        assert listed.status_code == 200, listed.text
        assert [r["id"] for r in listed.json()] == [r["id"] for r in made]
        assert listed.json()[0]["name"] == "layer thickness"
        assert listed.json()[0]["measurement"]["length"] == pytest.approx(100 * measured.sx)
        exported = c.get(f"{url}.csv")
        assert exported.status_code == 200
        rows = {r["id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
        document = c.get(f"/api/images/{measured.image}/ome.xml").text
    # Lengths by the image's scale (100 pixels of 11.6 nm: µm), areas in its square.
    row = rows[made[0]["id"]]
    assert float(row["length_um"]) == pytest.approx(100 * measured.sx / 1e-6, rel=1e-6)
    row = rows[made[1]["id"]]
    assert float(row["area_um2"]) == pytest.approx(
        40 * measured.sx * 60 * measured.sy / 1e-12, rel=1e-6
    )
    assert int(row["pixels"]) == values.size
    assert float(row["mean"]) == pytest.approx(values.mean())
    assert float(row["std"]) == pytest.approx(values.std())
    assert (float(row["min"]), float(row["max"])) == (values.min(), values.max())
    assert float(rows[made[5]["id"]]["angle_deg"]) == pytest.approx(90)

    ome = ome_types.from_xml(document, validate=True)
    assert len(ome.rois) == len(shapes)
    kinds = [type(roi.union[0]).__name__ for roi in ome.rois]
    assert kinds == ["Line", "Rectangle", "Ellipse", "Polygon", "Polyline", "Polyline", "Point"]
    line, rectangle, ellipse = (ome.rois[i].union[0] for i in range(3))
    assert (line.x1, line.y1, line.x2, line.y2) == (10, 10, 110, 10)
    assert line.text == "layer thickness"
    assert (rectangle.x, rectangle.y, rectangle.width, rectangle.height) == (20, 30, 40, 60)
    assert (ellipse.x, ellipse.y, ellipse.radius_x, ellipse.radius_y) == (120, 110, 20, 10)
    assert {ref.id for ref in ome.images[0].roi_refs} == {roi.id for roi in ome.rois}

    with client(measured, CONTRIBUTOR) as c:
        for roi in made:
            assert c.delete(f"{url}/{roi['id']}").status_code == 204
        assert c.get(url).json() == []


def _problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_viewers_cannot_change_rois_and_outsiders_do_not_see_them(measured: Measured) -> None:
    url = f"/api/images/{measured.image}/rois"
    line = {"kind": "line", "points": [[1, 1], [20, 20]]}
    with client(measured, CONTRIBUTOR) as c:
        kept = c.post(url, json=line).json()["id"]
    with client(measured, VIEWER) as c:
        _problem(c.post(url, json=line), 403)
        _problem(c.delete(f"{url}/{kept}"), 403)
        assert [r["id"] for r in c.get(url).json()] == [kept]
    with client(measured, OUTSIDER) as c:
        for response in (
            c.get(url),
            c.get(f"{url}.csv"),
            c.post(url, json=line),
            c.delete(f"{url}/{kept}"),
            c.post(f"/api/images/{measured.image}/measure", json=line),
            c.get(
                f"/api/images/{measured.image}/profile",
                params={"x0": 0, "y0": 0, "x1": 5, "y1": 5},
            ),
        ):
            _problem(response, 404)
    with client(measured, CONTRIBUTOR) as c:
        _problem(c.delete(f"{url}/not-an-roi"), 404)
        assert c.delete(f"{url}/{kept}").status_code == 204


def test_bad_shapes_are_refused_with_problem_json(measured: Measured) -> None:
    url = f"/api/images/{measured.image}/rois"
    measure = f"/api/images/{measured.image}/measure"
    bad = [
        {"kind": "star", "points": [[1, 1], [2, 2]]},
        {"kind": "line", "points": [[1, 1], [513, 2]]},  # the image is 512 wide
        {"kind": "line", "points": [[1, 1], [2, -1]]},
        {"kind": "line", "points": [[1, 1]]},
        {"kind": "angle", "points": [[1, 1], [2, 2]]},
        {"kind": "polygon", "points": [[i % 500, i % 300] for i in range(1001)]},
        {"kind": "polygon", "points": [[1, 1]] * 5000},
        {"kind": "rectangle", "points": [[5, 5], [5, 40]]},
        {"kind": "line", "points": [[1, 1, 1], [2, 2]]},
        {"kind": "line", "points": [[1, 1], [2, 2]], "z": 1},
        {"kind": "line", "points": [[1, 1], [2, 2]], "name": "bell\x07"},
        {"kind": "line", "points": "no"},
    ]
    with client(measured, CONTRIBUTOR) as c:
        for body in bad:
            _problem(c.post(url, json=body), 422)
        _problem(c.post(measure, json={"kind": "ellipse", "points": [[1, 1], [1, 9]]}), 422)
        _problem(
            c.post(measure, json={"kind": "rectangle", "points": [[1, 1], [9, 9]], "c": 3}), 422
        )
        _problem(
            c.get(
                f"/api/images/{measured.image}/profile",
                params={"x0": "nan", "y0": 0, "x1": 5, "y1": 5},
            ),
            422,
        )
        _problem(
            c.get(
                f"/api/images/{measured.image}/profile",
                params={"x0": 0, "y0": 0, "x1": 900, "y1": 5},
            ),
            422,
        )
        assert c.get(url).json() == []


def test_the_instruments_data_bar_is_left_out_of_measurements(measured: Measured) -> None:
    # The FEI sample's data bar is found by ingest (xT's ResolutionY), the Zeiss one's is not.
    dataset = measured.server.client().get(f"/api/images/{measured.image}").json()["dataset_id"]
    image = ingest(measured.server, dataset, FEI.name, FEI.read_bytes(), CONTRIBUTOR)
    pixels = _level0(measured.server, image)
    with client(measured, VIEWER) as c:
        y0, y1, x0, x1 = c.get(f"/api/images/{image}/display").json()["image_region"]
        height, width = pixels.shape
        assert (y0, x0, x1) == (0, 0, width) and y1 < height  # the bar is at the bottom
        whole = c.post(
            f"/api/images/{image}/measure",
            json={"kind": "rectangle", "points": [[0, 0], [width, height]]},
        ).json()
        profile = c.get(
            f"/api/images/{image}/profile",
            params={"x0": 10.5, "y0": 0.5, "x1": 10.5, "y1": height - 0.5},
        ).json()["samples"]
    sample = pixels[y0:y1, x0:x1].astype(np.float64)
    assert whole["pixels"] == sample.size
    assert whole["mean"] == pytest.approx(sample.mean())
    assert (whole["min"], whole["max"]) == (sample.min(), sample.max())
    assert [s["value"] for s in profile[:y1]] == pixels[:y1, 10].tolist()
    assert all(s["value"] is None for s in profile[y1:])
