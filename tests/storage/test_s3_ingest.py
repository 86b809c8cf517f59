"""The server on replicated S3 (two SeaweedFS servers): ingest, presigned downloads, a replica that
goes down mid-ingest and catches up, scrub that finds, repairs and admits what it cannot repair."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from allmicro_data.api.rendering import Window, to_uint8
from allmicro_data.fixity import Manifest
from allmicro_data.object_keys import manifest_key
from allmicro_data.storage import S3Store
from tests.api.test_end_to_end import FEI, USER_PASSWORD, setup_project, upload, wait_for_job
from tests.conftest import TLS, LiveServer, _running_server, _server_env, wait_until
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, SeaweedServer


def s3_server(data_dir: Path, primary: str, replicas: list[str], **settings: str) -> LiveServer:
    """A server on S3 with replicas. SQLite only: the catalogue's part is covered on both
    databases in test_fixity_catalogue.py, and servers are the costly part of the suite."""
    env = _server_env(data_dir / "server-data", f"sqlite:///{data_dir / 'catalogue.sqlite3'}")
    env.update(
        {
            "ALLMICRO_STORAGE_URL": primary,
            "ALLMICRO_REPLICA_URLS": json.dumps(replicas),
            "ALLMICRO_S3_ACCESS_KEY": ACCESS_KEY,
            "ALLMICRO_S3_SECRET_KEY": SECRET_KEY,
            "ALLMICRO_REPLICA_RETRY_SECONDS": "1",
            **{f"ALLMICRO_{k.upper()}": v for k, v in settings.items()},
        }
    )
    return _running_server(env, data_dir / "server.log")


@pytest.fixture(scope="module")
def replicated_s3(
    tmp_path_factory: pytest.TempPathFactory,
    seaweed: SeaweedServer,
    seaweed_replica: SeaweedServer,
) -> Iterator[tuple[LiveServer, S3Store, S3Store]]:
    """One server for the module, on S3 at one SeaweedFS replicated to S3 at another, with
    presigned downloads. Tests give their organisations, users and originals their own names."""
    prefix = f"m-{secrets.token_hex(4)}"
    primary, replica = seaweed.url(prefix), seaweed_replica.url(prefix)
    server = s3_server(
        tmp_path_factory.mktemp("replicated-s3"),
        primary,
        [replica],
        replica_quorum="1",
        presigned_downloads="true",
    )
    yield (
        server,
        S3Store(primary, ACCESS_KEY, SECRET_KEY),
        S3Store(replica, ACCESS_KEY, SECRET_KEY),
    )
    server.stop()


def ingest(
    server: LiveServer, data: bytes, name: str, member: str, org: str
) -> tuple[httpx.Client, str, str]:
    """Upload as a contributor and wait for the image: (client, file id, image id)."""
    dataset_id = setup_project(server, member, org)
    client = server.client(member, USER_PASSWORD)
    uploaded = upload(client, dataset_id, name, data)
    job = wait_for_job(client, uploaded["job_id"])
    assert job["status"] == "succeeded", job["error"]
    (image_id,) = job["image_ids"]
    return client, uploaded["file_id"], image_id


def scrub(server: LiveServer, *args: str) -> tuple[int, dict[str, Any]]:
    result = server.allmicro("scrub", "--json", *args)
    assert result.returncode in (0, 2), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document


def manifest_of(store: S3Store, image_id: str) -> Manifest:
    return Manifest.from_json(store.get_bytes(manifest_key(image_id)))


def _damaged(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:]


def test_ingest_tiles_and_presigned_download_on_replicated_s3(
    replicated_s3: tuple[LiveServer, S3Store, S3Store],
) -> None:
    server, primary, replica = replicated_s3
    original = FEI.read_bytes()
    client, file_id, image_id = ingest(server, original, FEI.name, "luka@zrc.example", "ZRC")

    tile = client.get(f"/api/images/{image_id}/tiles/0/0/0.png")
    assert tile.status_code == 200, tile.text
    got = np.asarray(PILImage.open(io.BytesIO(tile.content)))
    # The default window: the 0.1 and 99.9 percentiles of the sample without its data bar
    # (rows 442 on, found by the FEI reader).
    frame = tifffile.imread(FEI)
    lo, hi = (float(v) for v in np.percentile(frame[:442], [0.1, 99.9]))
    expected = to_uint8(frame, Window(lo, hi if hi > lo else lo + 1))
    np.testing.assert_array_equal(got, expected)

    # Every object of the image is on both sites and in its manifest, with the right checksum.
    manifest = manifest_of(primary, image_id)
    sha = hashlib.sha256(original).hexdigest()
    # The upload left its bytes beside the uploads for the job, which took them away when done.
    copies = Path(server.env["ALLMICRO_DATA_DIR"]) / "uploads" / "for-ingest"
    assert copies.is_dir() and not (copies / sha).exists()
    keys = {o.key for o in manifest.objects}
    assert f"raw/{sha}" in keys and f"images/{image_id}/metadata.ome.xml" in keys
    assert keys >= set(primary.list(f"images/{image_id}/image.ome.zarr/"))
    for store in (primary, replica):
        assert set(store.list(f"images/{image_id}/")) == (
            {k for k in keys if k.startswith("images/")} | {manifest_key(image_id)}
        )
    for obj in manifest.objects:
        assert hashlib.sha256(replica.get_bytes(obj.key)).hexdigest() == obj.sha256

    # Presigned: the audit entry first, then a redirect the browser follows without credentials.
    download = client.get(f"/api/files/{file_id}/download")
    assert download.status_code == 307
    location = download.headers["location"]
    assert location.startswith(primary.location.endpoint) and SECRET_KEY not in location
    fetched = httpx.get(location, verify=TLS)
    assert fetched.status_code == 200 and fetched.content == original
    admin = server.client()
    events = admin.get("/api/audit", params={"action": "file.download"}).json()["items"]
    assert file_id in [e["object_id"] for e in events]
    assert location not in server.log()

    code, report = scrub(server, "--image", image_id)
    assert code == 0 and report["clean"], report
    assert report["objects"] == len(manifest.objects) + 1
    assert report["copies"] == 2 * report["objects"] == report["ok"]
    started = admin.post("/api/admin/storage/scrubs", json={"image_id": image_id})
    assert started.status_code == 202, started.text

    def finished() -> dict[str, Any] | None:
        run = admin.get(f"/api/admin/storage/scrubs/{started.json()['id']}").json()
        return run if run["status"] != "running" else None

    run = wait_until(finished, timeout=60, what="the scrub started through the API")
    assert run["status"] == "succeeded" and run["clean"] and run["trigger"] == "api"
    stores = admin.get("/api/admin/storage/replicas").raise_for_status().json()
    assert stores["quorum"] == 1
    assert [(s["role"], s["pending"]) for s in stores["stores"]] == [("primary", 0), ("replica", 0)]


def test_scrub_repairs_bad_copies_and_reports_what_it_cannot_repair(
    replicated_s3: tuple[LiveServer, S3Store, S3Store],
) -> None:
    server, primary, replica = replicated_s3
    original = FEI.read_bytes()[:-2] + b"\x00\x01"  # an original of its own in this module
    client, _, image_id = ingest(server, original, FEI.name, "nina@fe.example", "FE")
    manifest = manifest_of(primary, image_id)
    raw = f"raw/{hashlib.sha256(original).hexdigest()}"
    chunks = [
        o.key
        for o in manifest.objects
        if "/image.ome.zarr/0/" in o.key and not o.key.rsplit("/", 1)[-1].startswith((".", "z"))
    ]
    chunk, ome_xml = chunks[0], f"images/{image_id}/metadata.ome.xml"

    # Damage three objects on the replica: a pyramid chunk, the original, a deleted document.
    replica.put_bytes(chunk, _damaged(replica.get_bytes(chunk)))
    replica.put_bytes(raw, _damaged(original))
    replica.delete(ome_xml)
    code, found = scrub(server)
    assert code == 2 and not found["clean"]
    assert (found["corrupt"], found["missing"], found["repaired"]) == (2, 1, 0)
    assert {(p["key"], p["state"]) for p in found["problems"]} == {
        (chunk, "corrupt"),
        (raw, "corrupt"),
        (ome_xml, "missing"),
    }

    code, repaired = scrub(server, "--repair")
    assert code == 0 and repaired["clean"], repaired
    assert (repaired["corrupt"], repaired["missing"], repaired["repaired"]) == (2, 1, 3)
    for key in (chunk, raw, ome_xml):
        assert replica.get_bytes(key) == primary.get_bytes(key)
    code, again = scrub(server)
    assert code == 0 and again["clean"] and again["ok"] == again["copies"]

    # Wrong bytes on the primary: readers get the good copy from the replica.
    good = primary.get_bytes(chunk)
    primary.put_bytes(chunk, _damaged(good))
    served = client.get(f"/zarr/{image_id}/{chunk.split('/image.ome.zarr/', 1)[1]}")
    assert served.status_code == 200 and served.content == good
    primary.put_bytes(raw, _damaged(original))

    # Both copies of the chunk damaged: unrecoverable, left as found, never "repaired".
    replica.put_bytes(chunk, _damaged(good))
    code, last = scrub(server, "--repair", "--image", image_id)
    assert code == 2 and not last["clean"]
    assert last["unrecoverable"] == 1 and last["repaired"] == 1  # the original, from the replica
    (chunk_problem, *_) = [p for p in last["problems"] if p["key"] == chunk]
    assert chunk_problem["unrecoverable"] and not chunk_problem["repaired"]
    assert primary.get_bytes(chunk) == _damaged(good) == replica.get_bytes(chunk)
    assert primary.get_bytes(raw) == original

    # Admins see the runs, newest first; nobody else does.
    runs = server.client().get("/api/admin/storage/scrubs").raise_for_status().json()
    assert runs["items"][0]["id"] == last["id"] and runs["items"][0]["unrecoverable"] == 1
    member = server.client("nina@fe.example", USER_PASSWORD)
    assert member.get("/api/admin/storage/scrubs").status_code == 403


def test_replica_down_mid_ingest_catches_up_from_the_to_do_list(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    seaweed: SeaweedServer,
    prefix: str,
) -> None:
    site_b = SeaweedServer(tmp_path_factory.mktemp("seaweed-site-b"))
    site_b.start()
    try:
        site_c = (tmp_path / "site-c").as_uri()
        server = s3_server(
            tmp_path, seaweed.url(prefix), [site_b.url(prefix), site_c], replica_quorum="1"
        )
        try:
            _replica_down_mid_ingest(server, site_b, prefix)
        finally:
            server.stop()
    finally:
        site_b.stop()


def _replica_down_mid_ingest(server: LiveServer, site_b: SeaweedServer, prefix: str) -> None:
    dataset_id = setup_project(server, "luka@zrc.example", "ZRC")
    client = server.client("luka@zrc.example", USER_PASSWORD)
    pixels = np.random.default_rng(8).integers(0, 4000, (2048, 2048), dtype=np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, tile=(256, 256))
    uploaded = upload(client, dataset_id, "montage.tif", buffer.getvalue())

    def claimed() -> bool:
        job = client.get(f"/api/jobs/{uploaded['job_id']}").raise_for_status().json()
        assert job["status"] in ("queued", "running"), job
        return bool(job["status"] == "running")

    # The original is on every site and the job has started: now site B goes down. Site C
    # (local) keeps the quorum of one, so the ingest goes on.
    wait_until(claimed, timeout=60, interval=0.02, what="the ingest job to start")
    site_b.stop()
    job = wait_for_job(client, uploaded["job_id"])
    assert job["status"] == "succeeded", job["error"]
    (image_id,) = job["image_ids"]
    assert client.get(f"/api/images/{image_id}/tiles/0/0/0.png").status_code == 200

    admin = server.client()
    b_url = site_b.url(prefix)

    def pending() -> int:
        stores = admin.get("/api/admin/storage/replicas").raise_for_status().json()["stores"]
        (entry,) = [s for s in stores if s["url"] == b_url]
        return int(entry["pending"])

    assert pending() > 0
    site_b.start()
    wait_until(lambda: pending() == 0, timeout=60, what="site B to catch up")

    b = S3Store(b_url, ACCESS_KEY, SECRET_KEY)
    manifest = manifest_of(b, image_id)
    assert all(b.exists(o.key) for o in manifest.objects)
    code, report = scrub(server)
    assert code == 0 and report["clean"], report
    assert report["missing"] == report["corrupt"] == report["unrecoverable"] == 0
    assert report["copies"] == 3 * report["objects"]
