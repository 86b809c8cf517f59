"""A server set to write NGFF 0.5 sharded pyramids does, and serves the same tiles as from NGFF 0.4."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.api.test_end_to_end import upload, wait_for_job
from tests.api.test_viewing import png, synthetic_tiff, windowed
from tests.conftest import LiveServer, _running_server, _server_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("pyramid-settings")
    env = _server_env(directory / "data", f"sqlite:///{directory / 'catalogue.sqlite3'}")
    env.update(
        ALLMICRO_PYRAMID_NGFF="0.5",
        ALLMICRO_PYRAMID_SHARD="true",
        ALLMICRO_PYRAMID_CHUNK="256",
        ALLMICRO_PYRAMID_CODEC="zstd:3",
    )
    running = _running_server(env, directory / "server.log")
    yield running
    running.stop()


def test_ingest_writes_the_configured_layout_and_serves_the_same_tiles(
    server: LiveServer,
) -> None:
    client = server.client()
    project = client.post("/api/projects", json={"name": "ngff"}).json()["id"]
    dataset = client.post(f"/api/projects/{project}/datasets", json={"name": "v05"}).json()["id"]
    tiff = synthetic_tiff()
    job = wait_for_job(client, upload(client, dataset, "gradient.tif", tiff)["job_id"])
    assert job["status"] == "succeeded", job
    image = job["image_ids"][0]

    root = Path(server.env["ALLMICRO_DATA_DIR"]) / "objects" / "images" / image / "image.ome.zarr"
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
    data = tifffile.imread(io.BytesIO(tiff))
    window = ome["omero"]["channels"][0]["window"]
    lo, hi = window["start"], window["end"]
    got = png(client.get(f"/iiif/3/{image}/200,200,512,300/max/0/default.png"))
    np.testing.assert_array_equal(got, windowed(data[200:500, 200:712], lo, hi))
    half = png(client.get(f"/iiif/3/{image}/0,0,1500,1300/750,/0/default.png"))
    level1 = data.astype(np.float64).reshape(650, 2, 750, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(half, windowed(np.floor(level1 + 0.5), lo, hi), atol=0)
