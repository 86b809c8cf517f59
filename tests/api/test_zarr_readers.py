"""OME-Zarr as third-party readers see it, from a server writing NGFF 0.4 (the default) and one
set to write NGFF 0.5 sharded: consolidated metadata (one round trip opens an image), a dataset
capability's root as a bioformats2raw collection (ome-zarr-py, ngff-zarr, ome-zarr-models),
strong ETags, and the same tiles from both layouts."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
import zarr
from ome_types import from_xml
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from tests.api.test_end_to_end import upload, wait_for_job
from tests.api.test_viewing import png, synthetic_tiff, windowed
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, TLS, LiveServer, _server_env


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> LiveServer:
    directory = tmp_path_factory.mktemp(name)
    server_env = _server_env(directory / "data", f"sqlite:///{directory / 'catalogue.sqlite3'}")
    server_env.update(env)
    url = f"http://127.0.0.1:{server_env['ALLMICRO_PORT']}"
    return LiveServer(url=url, env=server_env, log_path=directory / "server.log")


def small_tiff() -> bytes:
    """An 8-bit image of another size, so a collection's images differ."""
    yy, xx = np.mgrid[0:600, 0:700]
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, ((xx * 3 + yy) % 251).astype(np.uint8))
    return buffer.getvalue()


@dataclass
class Dataset:
    server: LiveServer
    client: httpx.Client
    id: str
    images: list[str]  # the gradient, then the small image

    def pyramid_dir(self, image_id: str) -> Path:
        data_dir = Path(self.server.env["ALLMICRO_DATA_DIR"])
        return data_dir / "objects" / "images" / image_id / "image.ome.zarr"

    def capability(self, image_id: str | None = None) -> str:
        path = f"/api/images/{image_id}" if image_id else f"/api/datasets/{self.id}"
        minted = self.client.post(f"{path}/capabilities", json={})
        assert minted.status_code == 201, minted.text
        url: str = minted.json()["url"]
        return url

    def elsewhere(self) -> Dataset:
        """Another dataset on the same server, for images the collection tests must not see."""
        project = self.client.post("/api/projects", json={"name": "more"}).json()["id"]
        made = self.client.post(f"/api/projects/{project}/datasets", json={"name": "more"})
        return Dataset(self.server, self.client, made.json()["id"], [])

    def ingest(self, name: str, data: bytes) -> str:
        job = wait_for_job(self.client, upload(self.client, self.id, name, data)["job_id"])
        assert job["status"] == "succeeded", job
        image_id: str = job["image_ids"][0]
        return image_id


def _dataset(server: LiveServer) -> Dataset:
    client = server.client()
    project = client.post("/api/projects", json={"name": "readers"}).json()["id"]
    dataset_id = client.post(f"/api/projects/{project}/datasets", json={"name": "two"}).json()["id"]
    jobs = [
        upload(client, dataset_id, name, data)["job_id"]
        for name, data in (("gradient.tif", synthetic_tiff()), ("small.tif", small_tiff()))
    ]
    images = []
    for job_id in jobs:
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded", job
        images.append(job["image_ids"][0])
    return Dataset(server, client, dataset_id, images)


def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dataset, Dataset]]:
    v05_env = {
        "ALLMICRO_PYRAMID_NGFF": "0.5",
        "ALLMICRO_PYRAMID_SHARD": "true",
        "ALLMICRO_PYRAMID_CHUNK": "256",
        "ALLMICRO_PYRAMID_CODEC": "zstd:3",
    }
    servers: list[LiveServer] = []

    def start(name: str, env: dict[str, str]) -> Dataset:
        server = _server(tmp_path_factory, name, **env)
        servers.append(server)  # stopped below even if it never answers
        server.start()
        return _dataset(server)

    # Both servers start and ingest at once: most of the time is waiting for them.
    try:
        with ThreadPoolExecutor(2) as pool:
            made = list(pool.map(start, ("ngff-04", "ngff-05"), ({}, v05_env)))
        yield made[0], made[1]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dataset, Dataset]]:
    """A server writing NGFF 0.4 (the default) and one writing 0.5 sharded, each with a dataset
    of the same two images."""
    yield from _servers(tmp_path_factory)


@pytest.fixture(scope="module")
def v04(servers: tuple[Dataset, Dataset]) -> Dataset:
    return servers[0]


@pytest.fixture(scope="module")
def v05(servers: tuple[Dataset, Dataset]) -> Dataset:
    return servers[1]


class CountingProxy:
    """A plain HTTP proxy in front of a server that records every path asked for, so a test
    can count what a reader fetched (no mock: the server answers every request)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.paths: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.paths.append(self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.get(
                    f"{proxy.upstream}{self.path}", headers=headers, timeout=30, verify=TLS
                )
                self.send_response(answer.status_code)
                for name in ("content-type", "etag", "content-range"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_ingest_writes_the_configured_layout_and_serves_the_same_tiles(
    v04: Dataset, v05: Dataset
) -> None:
    image = v05.images[0]
    root = v05.pyramid_dir(image)
    assert not (root / ".zattrs").exists()
    ome = json.loads((root / "zarr.json").read_text())["attributes"]["ome"]
    assert ome["version"] == "0.5"
    level0 = json.loads((root / "0" / "zarr.json").read_text())
    (sharding,) = level0["codecs"]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [256, 256]
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["bytes", "zstd"]

    # The check test_viewing makes of a default (NGFF 0.4) server: tiles are the stored pixels
    # rendered through the stored window, here across chunk and shard borders.
    data = tifffile.imread(io.BytesIO(synthetic_tiff()))
    window = ome["omero"]["channels"][0]["window"]
    lo, hi = window["start"], window["end"]
    got = png(v05.client.get(f"/iiif/3/{image}/200,200,512,300/max/0/default.png"))
    np.testing.assert_array_equal(got, windowed(data[200:500, 200:712], lo, hi))
    half = png(v05.client.get(f"/iiif/3/{image}/0,0,1500,1300/750,/0/default.png"))
    level1 = data.astype(np.float64).reshape(650, 2, 750, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(half, windowed(np.floor(level1 + 0.5), lo, hi), atol=0)

    # And the very pixels the NGFF 0.4 server serves for the same file, tile for tile.
    for path in (
        "full/max/0/default.png",
        "200,200,512,300/max/0/default.png",
        "256,0,700,900/!300,300/0/default.png",
        "0,0,1500,1300/375,/0/gray.png",
        "1024,1024,476,276/max/0/default.png",
    ):
        from_04 = png(v04.client.get(f"/iiif/3/{v04.images[0]}/{path}"))
        from_05 = png(v05.client.get(f"/iiif/3/{image}/{path}"))
        np.testing.assert_array_equal(from_05, from_04, err_msg=path)


def _collection_names(url: str) -> list[str]:
    xml = httpx.get(f"{url}OME/METADATA.ome.xml", timeout=30, verify=TLS)
    assert xml.status_code == 200, xml.text
    return [image.name or "" for image in from_xml(xml.text).images]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_dataset_capability_root_is_a_collection_readers_list(
    v04: Dataset, v05: Dataset, version: str
) -> None:
    dataset = v04 if version == "0.4" else v05
    url = dataset.capability()
    names = _collection_names(url)
    assert sorted(names) == ["gradient.tif", "small.tif"]
    expected = {
        "gradient.tif": tifffile.imread(io.BytesIO(synthetic_tiff())),
        "small.tif": tifffile.imread(io.BytesIO(small_tiff())),
    }

    # ome-zarr-py: the root is a bioformats2raw group whose OME group lists the series; its
    # Reader opens each (it follows no bioformats2raw root by itself, only plates and labels).
    root = parse_url(url)
    assert root is not None
    assert root.root_attrs["bioformats2raw.layout"] == 3
    series = root.create("OME").root_attrs["series"]
    assert series == ["0", "1"]
    for path, name in zip(series, names, strict=True):
        nodes = list(Reader(root.create(path))())
        np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), expected[name])

    # ngff-zarr reads the series from the OME group: a root of two images names both.
    from ngff_zarr import from_ngff_zarr

    with pytest.raises(ValueError, match="bioformats2raw container with 2 images") as listed:
        from_ngff_zarr(url)
    for index in "01":
        assert re.search(rf"'{re.escape(url.rstrip('/'))}/+{index}'", str(listed.value))
    second = from_ngff_zarr(f"{url}1")
    np.testing.assert_array_equal(np.asarray(second.images[0].data), expected[names[1]])

    # zarr-python sees the whole collection in the root's consolidated metadata.
    group = zarr.open_group(url, mode="r", use_consolidated=True)
    assert sorted(name for name, _ in group.groups()) == ["0", "1", "OME"]

    # ome-zarr-models: the root validates as bioformats2raw, its numbered images as NGFF.
    from ome_zarr_models import v04 as models04
    from ome_zarr_models import v05 as models05

    models = models04 if version == "0.4" else models05
    collection = models.BioFormats2Raw.from_zarr(zarr.open_group(url, mode="r"))
    assert collection.image_paths == ["0", "1"]

    # The per-image paths of before still answer.
    document = ".zattrs" if version == "0.4" else "zarr.json"
    for image_id in dataset.images:
        assert httpx.get(f"{url}{image_id}/{document}", verify=TLS).status_code == 200


def test_consolidated_metadata_opens_an_image_in_one_round_trip(v04: Dataset, v05: Dataset) -> None:
    for dataset, version in ((v04, "0.4"), (v05, "0.5")):
        image = dataset.images[0]
        url = dataset.capability(image)
        proxy = CountingProxy(url.split("/zarr/")[0])
        try:
            # As a viewer that knows the format opens it (without, zarr-python first asks
            # for a zarr.json that a zarr v2 image does not have).
            group = zarr.open_group(
                url.replace(dataset.server.url, proxy.url),
                mode="r",
                zarr_format=2 if version == "0.4" else 3,
                use_consolidated=True,
            )
            arrays = dict(group.arrays())
            metadata = list(proxy.paths)
            level = arrays["1"][0:10, 0:10]
        finally:
            proxy.close()
        assert sorted(arrays) == ["0", "1", "2"], version
        assert arrays["0"].shape == (1300, 1500), version
        names = [p.rsplit("/", 1)[-1] for p in metadata]
        if version == "0.5":
            # zarr v3: the root zarr.json carries every level: one request.
            assert names == ["zarr.json"], metadata
        else:
            # zarr v2: zarr-python fetches the root's three documents at once, .zmetadata
            # among them, and no level's document.
            assert sorted(names) == [".zattrs", ".zgroup", ".zmetadata"], metadata
        data = tifffile.imread(io.BytesIO(synthetic_tiff())).astype(np.float64)
        np.testing.assert_array_equal(
            level, np.floor(data[0:20, 0:20].reshape(10, 2, 10, 2).mean(axis=(1, 3)) + 0.5)
        )
    # ome-zarr-models validates the NGFF 0.5 sharded image through its capability URL.
    from ome_zarr_models.v05 import Image as ImageV05

    opened = ImageV05.from_zarr(zarr.open_group(v05.capability(v05.images[0]), mode="r"))
    assert [d.path for d in opened.attributes.ome.multiscales[0].datasets] == ["0", "1", "2"]


def test_zarr_objects_have_strong_etags(v04: Dataset) -> None:
    url = v04.capability(v04.images[0])
    for path in ("0/0/0", ".zmetadata", ".zattrs", "OME/METADATA.ome.xml"):
        got = httpx.get(f"{url}{path}", verify=TLS)
        assert got.status_code == 200, (path, got.text)
        etag = got.headers["etag"]
        # The content's sha256: it changes exactly when the bytes do.
        assert etag == f'"{hashlib.sha256(got.content).hexdigest()}"', path
        assert "ETag" in got.headers["access-control-expose-headers"]
        again = httpx.get(f"{url}{path}", headers={"If-None-Match": etag}, verify=TLS)
        assert again.status_code == 304, path
        assert again.headers["etag"] == etag and not again.content
        weak = httpx.head(
            f"{url}{path}", headers={"If-None-Match": f'"other", W/{etag}'}, verify=TLS
        )
        assert weak.status_code == 304, path
        head = httpx.head(f"{url}{path}", verify=TLS)
        assert head.status_code == 200 and head.headers["etag"] == etag, path
        changed = httpx.get(f"{url}{path}", headers={"If-None-Match": '"other"'}, verify=TLS)
        assert changed.status_code == 200 and changed.content == got.content, path
    ranged = httpx.get(f"{url}0/0/0", headers={"Range": "bytes=0-9"}, verify=TLS)
    assert ranged.status_code == 206 and len(ranged.content) == 10
    assert ranged.headers["etag"] == httpx.get(f"{url}0/0/0", verify=TLS).headers["etag"]


def test_a_pyramid_stored_without_consolidated_metadata_is_served_with_it(
    v04: Dataset, v05: Dataset
) -> None:
    # Pyramids written before consolidated metadata: as if a new image had none stored.
    for dataset in (v04, v05):
        image = dataset.elsewhere().ingest("again.tif", small_tiff())
        root = dataset.pyramid_dir(image)
        stored = (root / ".zmetadata") if dataset is v04 else (root / "zarr.json")
        if dataset is v04:
            stored.unlink()
        else:
            document = json.loads(stored.read_text())
            assert document.pop("consolidated_metadata")
            stored.write_text(json.dumps(document))
        url = dataset.capability(image)
        group = zarr.open_group(url, mode="r", use_consolidated=True)
        assert group.metadata.consolidated_metadata is not None
        assert sorted(group.metadata.consolidated_metadata.metadata) == ["0", "1"]
        np.testing.assert_array_equal(group["0"][:], tifffile.imread(io.BytesIO(small_tiff())))


def test_the_viewer_shows_an_ngff_05_sharded_image(v05: Dataset, browser: Any) -> None:
    from playwright.sync_api import expect

    server = v05.server
    image = v05.images[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(30_000)
    tiles: list[int] = []
    page.on(
        "response",
        lambda r: tiles.append(r.status) if f"/iiif/3/{image}/" in r.url else None,
    )
    page.goto(f"{server.url}/")
    page.fill("input[name=username]", ADMIN_EMAIL)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{server.url}/projects")
    page.goto(f"{server.url}/images/{image}")
    expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")
    assert tiles and all(status == 200 for status in tiles), tiles
    context.close()
