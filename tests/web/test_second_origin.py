"""Third-party browser clients on another origin: tus-js-client uploads into a dataset with a
bearer token, zarrita opens an OME-Zarr capability URL by its consolidated metadata and reads a
chunk, OpenSeadragon draws a IIIF capability URL's tiles; and each sees a missing object's 404
as a status it can read (CORS headers on errors), not as a network error."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tifffile

from tests.api.test_end_to_end import wait_for_job
from tests.conftest import LiveServer, PostgresDatabases, module_server
from tests.web.second_origin import (
    OPENSEADRAGON,
    OPENSEADRAGON_IMAGES,
    TUS,
    ZARRITA,
    SecondOrigin,
    second_origin_site,
)

MISSING = "01J0000000000000000000000Z"
METADATA_NAMES = {".zarray", ".zattrs", ".zgroup", "zarr.json"}
# Big enough for a pyramid of two levels and tiles of both, small enough to upload at once.
PIXELS = ((np.arange(300)[:, None] * 7 + np.arange(400)[None, :] * 3) % 4096).astype(np.uint16)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A viewer on another origin</title>
{scripts}
</head><body><main><h1>A viewer on another origin</h1>
<div id="osd" style="width: 600px; height: 450px"></div></main></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondOrigin]:
    with second_origin_site(tmp_path_factory.mktemp("second-origin")) as site:
        yield site


@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
    site: SecondOrigin,
) -> Iterator[LiveServer]:
    env = {"ALLMICRO_CORS_ORIGINS": site.origin}
    with module_server(request, tmp_path_factory, postgres_databases, "origins", env) as server:
        yield server


# Every URL the page requested, in order (a test clears it before what it checks).
requested: list[str] = []


@pytest.fixture(scope="module")
def page(browser: Any, site: SecondOrigin) -> Iterator[Any]:
    """One page of the second origin with the three clients loaded."""
    context = browser.new_context()
    page = context.new_page()
    page.on("request", lambda request: requested.append(request.url))
    scripts = "\n".join(site.script(path) for path in (TUS, OPENSEADRAGON, ZARRITA))
    page.goto(site.page("viewer.html", PAGE.replace("{scripts}", scripts)))
    loaded = page.evaluate("() => [typeof tus, typeof OpenSeadragon, typeof zarr]")
    assert loaded == ["object", "function", "object"], loaded
    yield page
    context.close()


@dataclass
class Uploaded:
    """What tus-js-client made: the dataset, the upload URL and the ingested image."""

    dataset_id: str
    upload_url: str
    image_id: str


# tus-js-client from the page: a Blob of the TIFF into the dataset, with a bearer token; the
# job id comes back in a response header the server exposes to the origin.
TUS_UPLOAD = """async ({endpoint, token, datasetId, bytes}) => {
  const file = new Blob([new Uint8Array(bytes)], {type: "image/tiff"});
  return await new Promise((resolve) => {
    let jobId = null;
    const upload = new tus.Upload(file, {
      endpoint,
      headers: {Authorization: `Bearer ${token}`},
      metadata: {filename: "second-origin.tif", dataset_id: datasetId},
      chunkSize: Math.ceil(bytes.length / 2),
      retryDelays: [],
      storeFingerprintForResuming: false,
      onAfterResponse: (request, response) => {
        jobId = response.getHeader("X-Allmicro-Job-Id") || jobId;
      },
      onError: (error) => resolve({error: String(error)}),
      onSuccess: () => resolve({url: upload.url, jobId}),
    });
    upload.start();
  });
}"""


@pytest.fixture(scope="module")
def uploaded(server: LiveServer, page: Any) -> Uploaded:
    """The one ingest of this file, by tus-js-client from the second origin."""
    with server.client() as admin:
        project = admin.post("/api/projects", json={"name": "Second origin"}).raise_for_status()
        dataset = admin.post(
            f"/api/projects/{project.json()['id']}/datasets", json={"name": "From elsewhere"}
        ).raise_for_status()
    dataset_id = dataset.json()["id"]
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, PIXELS)
    result = page.evaluate(
        TUS_UPLOAD,
        {
            "endpoint": f"{server.url}/api/uploads/",
            "token": server.token(),
            "datasetId": dataset_id,
            "bytes": list(buffer.getvalue()),
        },
    )
    assert "error" not in result, result["error"]
    assert result["jobId"], "the job id header was not readable from the second origin"
    with server.client() as client:
        job = wait_for_job(client, result["jobId"], timeout=60)
    assert job["status"] == "succeeded", job["error"]
    (image_id,) = job["image_ids"]
    return Uploaded(dataset_id=dataset_id, upload_url=result["url"], image_id=str(image_id))


def _capability(server: LiveServer, image_id: str) -> dict[str, Any]:
    with server.client() as client:
        minted = client.post(f"/api/images/{image_id}/capabilities", json={})
    assert minted.status_code == 201, minted.text
    capability: dict[str, Any] = minted.json()
    return capability


def _status(page: Any, url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Any:
    """What fetch() from the page gets for url: the status, or the network error's text."""
    return page.evaluate(
        """async ({url, headers, method}) => {
          try { return (await fetch(url, {headers, method})).status; }
          catch (error) { return `network error: ${error}`; }
        }""",
        {"url": url, "headers": headers or {}, "method": method},
    )


def test_tus_js_client_uploads_from_another_origin_and_reads_a_missing_uploads_404(
    server: LiveServer, page: Any, uploaded: Uploaded
) -> None:
    with server.client() as client:
        images = client.get(f"/api/datasets/{uploaded.dataset_id}/images").json()["items"]
    assert [image["id"] for image in images] == [uploaded.image_id]
    assert images[0]["shape"][-2:] == list(PIXELS.shape)
    assert uploaded.upload_url.startswith(f"{server.url}/api/uploads/")
    # A HEAD on an upload that does not exist: the client sees 404 (and could start again).
    headers = {"Authorization": f"Bearer {server.token()}", "Tus-Resumable": "1.0.0"}
    assert _status(page, f"{server.url}/api/uploads/{MISSING}", headers, "HEAD") == 404


# zarrita opens the capability URL by its consolidated metadata and reads the first chunk of the
# full-resolution level.
ZARRITA_READ = """async ({url}) => {
  const store = await zarr.withConsolidatedMetadata(new zarr.FetchStore(url));
  const root = await zarr.open(store, {kind: "group"});
  const multiscales = root.attrs.multiscales ?? root.attrs.ome.multiscales;
  const path = multiscales[0].datasets[0].path;
  const level = await zarr.open(root.resolve(path), {kind: "array"});
  const chunk = await level.getChunk(level.shape.map(() => 0));
  const missing = await store.get("/no-such-level/.zarray");
  return {
    path, shape: level.shape, dtype: level.dtype, chunkShape: chunk.shape,
    data: Array.from(chunk.data), listed: store.contents().map((node) => node.path),
    missing: missing === undefined ? "undefined" : "bytes",
  };
}"""


def test_zarrita_opens_a_capability_url_by_consolidated_metadata_and_reads_a_chunk(
    server: LiveServer, page: Any, uploaded: Uploaded
) -> None:
    url = _capability(server, uploaded.image_id)["url"]
    requested.clear()
    read = page.evaluate(ZARRITA_READ, {"url": url})
    assert read["shape"][-2:] == list(PIXELS.shape)
    assert read["dtype"] == "uint16"
    chunk = np.array(read["data"], dtype=np.uint16).reshape(read["chunkShape"])
    height, width = (min(a, b) for a, b in zip(chunk.shape[-2:], PIXELS.shape, strict=True))
    plane = chunk.reshape(-1, *chunk.shape[-2:])[0]
    assert np.array_equal(plane[:height, :width], PIXELS[:height, :width])
    # The levels were listed by the consolidated document, so none of their own metadata was
    # fetched: one request opened the image.
    assert f"/{read['path']}" in read["listed"]
    level_metadata = [
        u
        for u in requested
        if u.startswith(f"{url}{read['path']}/") and u.rsplit("/", 1)[-1] in METADATA_NAMES
    ]
    assert level_metadata == [], level_metadata
    # A missing object is an absent key to zarrita (it read the 404), and a 404 to fetch().
    assert read["missing"] == "undefined"
    assert _status(page, f"{url}no-such-level/.zarray") == 404
    assert _status(page, "/".join([*url.split("/")[:-2], "forged", ".zattrs"])) == 404


# OpenSeadragon opens the IIIF capability's info.json; the URL of the first tile it drew.
OPENSEADRAGON_OPEN = """({info, images}) => new Promise((resolve) => {
  const viewer = OpenSeadragon({
    element: document.getElementById("osd"), prefixUrl: images, tileSources: info,
    crossOriginPolicy: "Anonymous",
  });
  viewer.addHandler("tile-loaded", (event) => resolve({tile: event.tile.getUrl()}));
  viewer.addHandler("open-failed", (event) => resolve({error: String(event.message)}));
  viewer.addHandler("tile-load-failed", (event) => resolve({error: String(event.message)}));
  setTimeout(() => resolve({error: "no tile within 20 s"}), 20000);
})"""


def test_openseadragon_draws_a_iiif_capability_url_and_reads_a_missing_images_404(
    server: LiveServer, page: Any, uploaded: Uploaded
) -> None:
    iiif = _capability(server, uploaded.image_id)["iiif"]
    assert iiif, "the capability has no IIIF id"
    drawn = page.evaluate(
        OPENSEADRAGON_OPEN, {"info": f"{iiif}/info.json", "images": OPENSEADRAGON_IMAGES}
    )
    assert "error" not in drawn, drawn["error"]
    # The tile came from the capability's own image service.
    assert drawn["tile"].startswith(f"{iiif}/") and drawn["tile"].endswith(".jpg"), drawn
    # An image the caller may not see, or a capability that is not one: a 404 it can read.
    headers = {"Authorization": f"Bearer {server.token()}"}
    assert _status(page, f"{server.url}/iiif/3/{MISSING}/info.json", headers) == 404
    forged = iiif.rsplit("/", 1)[0] + "/forged"
    assert _status(page, f"{forged}/info.json") == 404
