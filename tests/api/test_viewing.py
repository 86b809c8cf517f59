"""Viewing: IIIF Image API 3.0 pixels, syntax and caching; OME-Zarr over HTTP and capability URLs."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import fsspec
import httpx
import numpy as np
import pytest
import tifffile
import zarr
from ome_types import from_xml
from ome_zarr.format import FormatV04
from ome_zarr.io import ZarrLocation
from ome_zarr.reader import Reader
from PIL import Image as PILImage
from zarr.storage import FsspecStore

from allmicro_data import capabilities
from allmicro_data.catalogue.models import AccessToken, User, utcnow
from allmicro_data.modalities import family
from tests.api.test_end_to_end import FEI, upload, wait_for_job
from tests.conftest import SAMPLES, TLS, LiveServer

HEIGHT, WIDTH = 1300, 1500


def synthetic_tiff() -> bytes:
    """A 16-bit image big enough for three pyramid levels, with structure in every direction."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    data = (2000 + 1500 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + xx + 0.5 * yy).astype(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, tile=(256, 256))
    return buffer.getvalue()


class Viewer:
    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.client = server.client()
        project = self.client.post("/api/projects", json={"name": "viewing"}).json()["id"]
        self.dataset = self.client.post(
            f"/api/projects/{project}/datasets", json={"name": "views"}
        ).json()["id"]
        self.image = self._ingest("gradient.tif", synthetic_tiff())
        self.fei = self._ingest(FEI.name, FEI.read_bytes())

    def _ingest(self, name: str, data: bytes) -> str:
        job = wait_for_job(self.client, upload(self.client, self.dataset, name, data)["job_id"])
        assert job["status"] == "succeeded", job
        image_id: str = job["image_ids"][0]
        return image_id

    def pyramid_dir(self, image_id: str) -> Path:
        data_dir = Path(self.server.env["ALLMICRO_DATA_DIR"])
        return data_dir / "objects" / "images" / image_id / "image.ome.zarr"

    def level(self, image_id: str, level: int) -> np.ndarray[Any, Any]:
        return np.asarray(
            zarr.open_array(str(self.pyramid_dir(image_id) / str(level)), mode="r")[:]
        )

    def window(self, image_id: str) -> tuple[float, float]:
        attrs = json.loads((self.pyramid_dir(image_id) / ".zattrs").read_text())
        window = attrs["omero"]["channels"][0]["window"]
        return window["start"], window["end"]

    def get(self, image_id: str, path: str, **params: Any) -> httpx.Response:
        return self.client.get(f"/iiif/3/{image_id}/{path}", params=params)


@pytest.fixture(scope="module")
def viewer(shared_server: LiveServer) -> Viewer:
    return Viewer(shared_server)


def windowed(data: np.ndarray[Any, Any], lo: float, hi: float) -> np.ndarray[Any, Any]:
    """The 8-bit rendering the API promises, written out independently of its code."""
    scaled = (data.astype(np.float64) - lo) * 255.0 / (hi - lo)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def png(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(PILImage.open(io.BytesIO(response.content)))


def test_iiif_pixels_equal_the_zarr_levels_rendered_with_the_same_window(viewer: Viewer) -> None:
    image = viewer.image
    lo, hi = viewer.window(image)
    level0, level1 = viewer.level(image, 0), viewer.level(image, 1)
    assert level1.shape == (650, 750)

    got = png(viewer.get(image, "0,0,512,512/max/0/default.png"))
    np.testing.assert_array_equal(got, windowed(level0[:512, :512], lo, hi))

    got = png(viewer.get(image, "100,200,300,250/max/90/gray.png"))
    expected = np.rot90(windowed(level0[200:450, 100:400], lo, hi), k=-1)
    np.testing.assert_array_equal(got, expected)

    # Half size reads level 1; mirroring flips left-right.
    got = png(viewer.get(image, "full/750,/!0/default.png"))
    np.testing.assert_array_equal(got, windowed(level1, lo, hi)[:, ::-1])

    got = png(viewer.get(image, "pct:50,50,50,50/375,/180/bitonal.png"))
    expected = np.rot90(windowed(level1[325:650, 375:750], lo, hi), k=2)
    np.testing.assert_array_equal(got > 0, expected >= 128)

    got = png(viewer.get(image, "square/max/270/color.png"))
    side = min(HEIGHT, WIDTH)
    x0 = (WIDTH - side) // 2
    grey = np.rot90(windowed(level0[:, x0 : x0 + side], lo, hi), k=1)
    assert got.shape == (side, side, 3)
    np.testing.assert_array_equal(got[..., 0], grey)
    np.testing.assert_array_equal(got[..., 2], grey)

    got = png(viewer.get(image, "700,600,200,100/max/0/default.png", window="1000,3000"))
    np.testing.assert_array_equal(got, windowed(level0[600:700, 700:900], 1000, 3000))

    raw = viewer.get(image, "0,0,64,32/max/0/default.png", raw=1)
    assert raw.status_code == 200, raw.text
    values = np.asarray(PILImage.open(io.BytesIO(raw.content)))
    np.testing.assert_array_equal(values.astype(np.uint16), level0[:32, :64])


def test_iiif_formats_sizes_and_colour_maps(viewer: Viewer) -> None:
    image = viewer.image
    for fmt in ("jpg", "webp", "png"):
        response = viewer.get(image, f"full/!200,200/0/default.{fmt}")
        assert response.status_code == 200
        picture = PILImage.open(io.BytesIO(response.content))
        assert picture.size == (200, round(HEIGHT * 200 / WIDTH))
    upscaled = viewer.get(image, "0,0,10,10/^40,40/0/default.png")
    assert PILImage.open(io.BytesIO(upscaled.content)).size == (40, 40)
    coloured = png(viewer.get(image, "0,0,100,100/max/0/default.png", cmap="viridis"))
    assert coloured.shape == (100, 100, 3)
    assert not np.array_equal(coloured[..., 0], coloured[..., 1])
    brighter = png(viewer.get(image, "0,0,100,100/max/0/default.png", gamma=2.0))
    plain = png(viewer.get(image, "0,0,100,100/max/0/default.png"))
    assert brighter.mean() > plain.mean()


@pytest.mark.parametrize(
    "path",
    [
        "a,b/max/0/default.png",
        "5000,5000,10,10/max/0/default.png",
        "0,0,100,100/200,/0/default.png",
        "0,0,100,100/max/45/default.png",
        "full/max/0/sepia.png",
        "full/max/0/default.gif",
        "full/0,0/0/default.png",
        "pct:x/max/0/default.png",
    ],
)
def test_iiif_bad_requests_answer_400(viewer: Viewer, path: str) -> None:
    response = viewer.get(viewer.image, path)
    assert response.status_code == 400, path
    assert response.headers["content-type"] == "application/problem+json"


def test_iiif_info_json_and_http_caching(viewer: Viewer) -> None:
    info = viewer.get(viewer.image, "info.json").json()
    assert info["type"] == "ImageService3" and info["profile"] == "level2"
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
    assert info["tiles"][0]["scaleFactors"] == [1, 2, 4]
    assert {"width": 375, "height": 325} in info["sizes"]
    assert info["id"].endswith(f"/iiif/3/{viewer.image}")
    fei = viewer.get(viewer.fei, "info.json").json()
    detail = viewer.client.get(f"/api/images/{viewer.fei}").json()
    # Beside the IIIF auth probe (tests/api/test_iiif_services.py): millimetres per pixel.
    (service,) = [s for s in fei["service"] if s["type"] == "Service"]
    assert service["profile"] == "http://iiif.io/api/annex/services/physdim"
    assert service["physicalScale"] == pytest.approx(detail["pixel_size"]["x"] * 1000)
    assert service["physicalUnits"] == "mm"
    assert viewer.client.get(f"/iiif/3/{viewer.image}").status_code == 303

    first = viewer.get(viewer.image, "0,0,512,512/512,/0/default.jpg")
    etag = first.headers["etag"]
    assert etag.startswith('"') and "immutable" in first.headers["cache-control"]
    assert viewer.get(viewer.image, "0,0,512,512/512,/0/default.jpg").headers["etag"] == etag
    again = viewer.client.get(
        f"/iiif/3/{viewer.image}/0,0,512,512/512,/0/default.jpg", headers={"If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b""
    contrast = viewer.get(viewer.image, "0,0,512,512/512,/0/default.jpg", window="0,5000")
    assert contrast.headers["etag"] != etag
    head = viewer.client.head(f"/iiif/3/{viewer.image}/0,0,512,512/512,/0/default.jpg")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(first.content)


def test_viewing_is_as_private_as_the_image(viewer: Viewer, shared_server: LiveServer) -> None:
    admin = viewer.client
    org = admin.post("/api/organisations", json={"name": "Outsider Co", "kind": "company"}).json()
    admin.post(
        "/api/users",
        json={
            "email": "out@example.org",
            "organisation_id": org["id"],
            "password": "outsider password",
        },
    )
    outsider = shared_server.client("out@example.org", "outsider password")
    for path in (
        f"/iiif/3/{viewer.image}/info.json",
        f"/iiif/3/{viewer.image}/full/max/0/default.jpg",
        f"/zarr/{viewer.image}/.zattrs",
        f"/api/images/{viewer.image}/thumbnail.jpg",
        f"/api/images/{viewer.image}/display",
    ):
        assert outsider.get(path).status_code == 404, path
        assert httpx.get(f"{shared_server.url}{path}", verify=TLS).status_code == 401, path
    assert outsider.post(f"/api/images/{viewer.image}/capabilities", json={}).status_code == 404


def _read_over_http(url: str, headers: dict[str, str] | None = None) -> list[np.ndarray[Any, Any]]:
    # ome-zarr opens sub-locations (labels, levels) by URL, so the header goes into fsspec's
    # defaults for HTTP rather than into one store.
    saved = fsspec.config.conf.get("http")
    fsspec.config.conf["http"] = {"headers": headers or {}}
    try:
        store = FsspecStore.from_url(url, read_only=True)
        nodes = list(Reader(ZarrLocation(store, fmt=FormatV04()))())
        levels = [np.asarray(level) for level in nodes[0].data] if nodes else []
    finally:
        if saved is None:
            fsspec.config.conf.pop("http", None)
        else:
            fsspec.config.conf["http"] = saved
    assert levels, f"ome-zarr found no image at {url}"
    return levels


def test_ome_zarr_reader_opens_the_pyramid_by_token_and_by_capability(viewer: Viewer) -> None:
    server = viewer.server
    on_disk = [viewer.level(viewer.image, level) for level in range(3)]
    token = {"Authorization": f"Bearer {server.token()}"}
    by_token = _read_over_http(f"{server.url}/zarr/{viewer.image}/", token)
    for got, expected in zip(by_token, on_disk, strict=True):
        np.testing.assert_array_equal(got, expected)

    minted = viewer.client.post(f"/api/images/{viewer.image}/capabilities", json={})
    assert minted.status_code == 201
    # Any origin's viewer may read a capability URL (tests/api/test_cors.py: the rest of CORS).
    preflight = httpx.options(
        minted.json()["url"].rstrip("/") + "/.zattrs",
        headers={"Origin": "https://viewer.example.org", "Access-Control-Request-Method": "GET"},
        verify=TLS,
    )
    assert preflight.headers["access-control-allow-origin"] == "*"
    by_capability = _read_over_http(minted.json()["url"])
    np.testing.assert_array_equal(by_capability[0], on_disk[0])

    per_dataset = viewer.client.post(f"/api/datasets/{viewer.dataset}/capabilities", json={}).json()
    assert set(per_dataset["images"]) == {viewer.image, viewer.fei}
    fei = _read_over_http(per_dataset["images"][viewer.fei])
    np.testing.assert_array_equal(fei[0], tifffile.imread(FEI))

    key = (Path(server.env["ALLMICRO_DATA_DIR"]) / "secret.key").read_bytes().strip()
    expired, _ = capabilities.mint(
        key,
        kind="image",
        target=viewer.image,
        user=User(id="someone"),
        credential=AccessToken(id="their-token", user_id="someone"),
        lifetime=timedelta(seconds=60),
        now=utcnow() - timedelta(minutes=5),
    )
    assert httpx.get(f"{server.url}/zarr/c/{expired}/.zattrs", verify=TLS).status_code == 404
    forged = minted.json()["url"].replace("/zarr/c/c2.", "/zarr/c/c2.x")
    assert httpx.get(f"{forged}.zattrs", verify=TLS).status_code == 404

    audit = viewer.client.get("/api/audit", params={"action": "capability.use"}).json()["items"]
    assert len({e["object_id"] for e in audit}) == 2
    mints = viewer.client.get("/api/audit", params={"action": "capability.mint"}).json()
    assert mints["total"] == 2


FLUORESCENCE = [
    ("DAPI", 358, 461, "0000FF"),
    ("GFP", 488, 510, "00FF00"),
    ("mCherry", 587, 610, "FF0000"),
]


def fluorescence_ome_tiff() -> bytes:
    """A 3-channel OME-TIFF whose OME-XML names each channel, its wavelengths and its colour;
    channel i is bright only in the i-th third of the columns, dim noise elsewhere."""
    data = np.random.default_rng(16).integers(0, 50, (3, 96, 120)).astype(np.uint16)
    for i in range(3):
        data[i, :, 40 * i : 40 * (i + 1)] += 4000

    def signed_rgba(hex_rgb: str) -> int:
        value = (int(hex_rgb, 16) << 8) | 0xFF  # OME Color is a signed 32-bit RGBA
        return value - (1 << 32) if value >= 1 << 31 else value

    channel = {
        "Name": [name for name, *_ in FLUORESCENCE],
        "ExcitationWavelength": [ex for _, ex, _, _ in FLUORESCENCE],
        "EmissionWavelength": [em for _, _, em, _ in FLUORESCENCE],
        "Color": [signed_rgba(colour) for *_, colour in FLUORESCENCE],
    }
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer, data, ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 0.1, "Channel": channel}
    )
    return buffer.getvalue()


def test_fluorescence_channels_keep_names_and_colours_everywhere(viewer: Viewer) -> None:
    image_id = viewer._ingest("cells.ome.tif", fluorescence_ome_tiff())
    names = [name for name, *_ in FLUORESCENCE]
    colours = [colour for *_, colour in FLUORESCENCE]

    channels = viewer.client.get(f"/api/images/{image_id}").json()["acquisition"]["channels"]
    assert [c["name"] for c in channels] == names
    assert [c["color"] for c in channels] == colours
    assert [round(c["emission_wavelength"] * 1e9) for c in channels] == [461, 510, 610]

    ome = from_xml(viewer.client.get(f"/api/images/{image_id}/ome.xml").text)
    ome_channels = ome.images[0].pixels.channels
    assert [c.name for c in ome_channels] == names
    assert [c.color.as_hex().upper().lstrip("#") for c in ome_channels] == ["00F", "0F0", "F00"]
    assert [c.emission_wavelength for c in ome_channels] == [461, 510, 610]

    omero = viewer.client.get(f"/zarr/{image_id}/.zattrs").json()["omero"]
    assert [c["label"] for c in omero["channels"]] == names
    assert [c["color"] for c in omero["channels"]] == colours

    # The image page's viewer starts from the display defaults it fetches from this URL.
    display = viewer.client.get(f"/api/images/{image_id}/display").json()
    assert [(c["label"], c["color"]) for c in display["channels"]] == list(
        zip(names, colours, strict=True)
    )
    assert f"/api/images/{image_id}/display" in viewer.client.get(f"/images/{image_id}").text

    # What the viewer shows without parameters: each third of the picture in its channel's colour.
    picture = png(viewer.get(image_id, "full/max/0/default.png"))
    for i, colour in enumerate(colours):
        rgb = picture[48, 40 * i + 20, :3]
        expected = [int(colour[k : k + 2], 16) for k in (0, 2, 4)]
        assert np.abs(rgb.astype(int) - expected).max() <= 40, (FLUORESCENCE[i][0], rgb)


@pytest.mark.parametrize(
    ("sample", "names"),
    [
        (
            "leica/LeicaLASX_wavelength-sweep_example.lif",
            ["x_y_lambdaEmi", "x_y_lambdaExc", "x_y_z_t_lambdaEmi"],
        ),
        ("zeiss-czi/two_scenes_mosaic.czi", ["scene 1", "scene 2"]),
        ("nikon/cluster.nd2", []),  # one position: the image is named as the file
    ],
)
def test_optical_vendor_file_ends_as_ready_viewable_images(
    viewer: Viewer, sample: str, names: list[str]
) -> None:
    path = SAMPLES / sample
    job = wait_for_job(
        viewer.client, upload(viewer.client, viewer.dataset, path.name, path.read_bytes())["job_id"]
    )
    assert job["status"] == "succeeded", job
    images = [viewer.client.get(f"/api/images/{i}").json() for i in job["image_ids"]]
    # Every image of the project file is its own image, named as in the file.
    expected = [f"{path.name} [{n}]" for n in names] if names else [path.name]
    assert sorted(image["name"] for image in images) == sorted(expected)
    for image in images:
        # Light microscopy: fluorescence where channels state emission wavelengths, else optical.
        assert image["acquisition"]["modality"] in family("optical")
        info = viewer.client.get(f"/iiif/3/{image['id']}/info.json")
        assert info.status_code == 200, info.text
        tile = viewer.get(image["id"], "full/max/0/default.png")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png", tile.text
        # The viewer's channel defaults are the file's channel names and colours.
        channels = image["acquisition"]["channels"]
        display = viewer.client.get(f"/api/images/{image['id']}/display").json()["channels"]
        assert [(c["label"], c["color"]) for c in display] == [
            (c["name"] or f"channel {i}", c["color"] or "FFFFFF") for i, c in enumerate(channels)
        ]


@pytest.mark.parametrize(
    "sample",
    ["blockfile/test1.blo", "hamamatsu/test_hamamatsu_streak_FOCUS.tif"],
)
def test_detector_files_end_as_ready_viewable_images(viewer: Viewer, sample: str) -> None:
    """A 4D-STEM blockfile is shown as its virtual bright field, equal to the sum over the
    detector axes made here from rosettasciio's eager read; a streak TIFF as itself."""
    path = SAMPLES / sample
    uploaded = upload(viewer.client, viewer.dataset, path.name, path.read_bytes())
    job = wait_for_job(viewer.client, uploaded["job_id"])
    assert job["status"] == "succeeded", job
    (image_id,) = job["image_ids"]
    image = viewer.client.get(f"/api/images/{image_id}").json()
    # Served only once its pyramid is complete: an image the API shows is ready.
    assert image["levels"] >= 1 and image["ngff_version"]
    tile = viewer.get(image_id, "full/max/0/default.png")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    if path.suffix == ".blo":
        from rsciio.blockfile import file_reader

        frames = np.asarray(file_reader(str(path), lazy=False)[0]["data"])
        assert image["shape"] == [3, 2] and image["dtype"] == "uint32"
        assert image["vendor"]["geometry"]["detector_shape"] == [144, 144]
        stored = viewer.level(image_id, 0).squeeze()
        np.testing.assert_array_equal(stored, frames.astype(np.uint64).sum(axis=(2, 3)))
        # The 4D original stays downloadable byte for byte.
        download = viewer.client.get(f"/api/files/{uploaded['file_id']}/download")
        assert download.content == path.read_bytes()


@pytest.mark.parametrize(
    ("sample", "images", "analyses"),
    [
        (
            "phenom/Elid2Version1.elid",
            ["Image 1", "385test - spectrum", "Image 1"],
            ["Image 1, Spot 1", "Image 1, Region 2", "Image 1, Map 3", "Image 1, Line 4"],
        ),
        ("jeol/Dummy-Data_0000000.img", ["BF"], []),
        ("bruker/P45_the_default_job.bcf", ["BSE", "SE"], ["EDX"]),
    ],
)
def test_em_container_ends_as_ready_viewable_images(
    viewer: Viewer, sample: str, images: list[str], analyses: list[str]
) -> None:
    """Each image of a Phenom ELID, a JEOL Analysis Station file or a Bruker BCF is served; the
    spectra and maps acquired on it are catalogued in its metadata, without a pyramid."""
    path = SAMPLES / sample
    job = wait_for_job(
        viewer.client, upload(viewer.client, viewer.dataset, path.name, path.read_bytes())["job_id"]
    )
    assert job["status"] == "succeeded", job
    served = [viewer.client.get(f"/api/images/{i}").json() for i in job["image_ids"]]
    assert len(served) == len(images)
    for image, name in zip(served, images, strict=True):
        assert image["name"] in (path.name, f"{path.name} [{name}]")
        # Calibrated, except the colour picture a Phenom project imported without a scale.
        assert image["levels"] >= 1 and (image["pixel_size"]["x"] or name == "385test - spectrum")
        tile = viewer.get(image["id"], "full/max/0/default.png")
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    first = served[0]
    listed = [a["name"] for a in first["vendor"].get("analyses", [])]
    assert listed[: len(analyses)] == analyses
    if analyses:
        assert first["vendor"]["analyses"][0]["acquisition"]["accelerating_voltage"] > 0
