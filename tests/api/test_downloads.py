"""Bulk downloads and shares: ZIPs verify against their SHA256SUMS, metadata exports, link rules."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from datetime import UTC, datetime, timedelta

import httpx

from tests.api.test_access_matrix import tiny_tiff
from tests.api.test_end_to_end import FEI, upload, wait_for_job
from tests.conftest import TLS, LiveServer


def _dataset(admin: httpx.Client, name: str) -> str:
    project = admin.post("/api/projects", json={"name": f"{name} project"}).json()["id"]
    dataset: str = admin.post(f"/api/projects/{project}/datasets", json={"name": name}).json()["id"]
    return dataset


def verify_manifest(archive: zipfile.ZipFile) -> dict[str, str]:
    sums = {}
    for line in archive.read("SHA256SUMS").decode().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest, name
    return sums


def test_dataset_zip_holds_every_original_with_a_verifying_manifest(
    shared_server: LiveServer,
) -> None:
    admin = shared_server.client()
    dataset = _dataset(admin, "Coatings 2026-11")
    originals = {
        "wafer.tif": FEI.read_bytes(),
        "notes.txt": b"operator: Maja\nHV 5 kV\n",
        "same-name.tif": tiny_tiff(4),
    }
    jobs = [upload(admin, dataset, name, data)["job_id"] for name, data in originals.items()]
    # The same name again with other bytes: both are kept, side by side in the archive.
    jobs.append(upload(admin, dataset, "same-name.tif", tiny_tiff(5))["job_id"])
    for job in jobs:
        wait_for_job(admin, job)

    response = admin.get(f"/api/datasets/{dataset}/download.zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert int(response.headers["content-length"]) == len(response.content)
    assert "Coatings 2026-11.zip" in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    sums = verify_manifest(archive)
    assert sorted(sums) == [
        "Coatings 2026-11/notes.txt",
        "Coatings 2026-11/same-name (2).tif",
        "Coatings 2026-11/same-name.tif",
        "Coatings 2026-11/wafer.tif",
    ]
    assert archive.read("Coatings 2026-11/wafer.tif") == originals["wafer.tif"]
    assert "metadata.json" in archive.namelist()

    events = admin.get("/api/audit", params={"action": "archive.download"}).json()["items"]
    assert events and events[0]["bytes"] == sum(len(d) for d in originals.values()) + len(
        tiny_tiff(5)
    )

    # A selection across datasets, in the order asked for.
    other = _dataset(admin, "Other")
    extra = upload(admin, other, "extra.bin", b"\x01" * 1000)
    files = admin.get(f"/api/datasets/{dataset}/images").json()
    assert files["total"] >= 1
    chosen = admin.post(
        "/api/downloads/zip", json={"file_ids": [extra["file_id"]], "name": "picked"}
    )
    assert chosen.status_code == 200
    picked = zipfile.ZipFile(io.BytesIO(chosen.content))
    assert verify_manifest(picked) and "Other/extra.bin" in picked.namelist()


def test_metadata_exports(shared_server: LiveServer) -> None:
    admin = shared_server.client()
    dataset = _dataset(admin, "Export")
    wait_for_job(admin, upload(admin, dataset, FEI.name, FEI.read_bytes())["job_id"])
    records = admin.get(f"/api/datasets/{dataset}/metadata.json").json()
    assert len(records) == 1
    assert records[0]["name"] == FEI.name and records[0]["dtype"] == "uint16"
    assert records[0]["files"][0]["sha256"] == hashlib.sha256(FEI.read_bytes()).hexdigest()
    table = admin.get(f"/api/datasets/{dataset}/metadata.csv")
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == 1 and rows[0]["shape"] == "471x512" and rows[0]["files"] == FEI.name


def test_share_link_password_expiry_and_limits(shared_server: LiveServer) -> None:
    admin = shared_server.client()
    dataset = _dataset(admin, "Shared")
    upload(admin, dataset, "result.bin", b"result bytes")
    too_long = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    assert (
        admin.post(
            f"/api/datasets/{dataset}/share-links", json={"expires_at": too_long}
        ).status_code
        == 422
    )
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert (
        admin.post(f"/api/datasets/{dataset}/share-links", json={"expires_at": past}).status_code
        == 422
    )

    made = admin.post(
        f"/api/datasets/{dataset}/share-links",
        json={"password": "client secret 42", "label": "for the client"},
    ).json()
    token = made["token"]
    assert made["has_password"] and made["url"].endswith(f"/api/share/{token}")
    anonymous = httpx.Client(base_url=shared_server.url, timeout=30, verify=TLS)
    assert anonymous.get(f"/api/share/{token}").status_code == 401
    assert (
        anonymous.get(f"/api/share/{token}", headers={"X-Share-Password": "wrong"}).status_code
        == 401
    )
    opened = anonymous.get(f"/api/share/{token}", headers={"X-Share-Password": "client secret 42"})
    assert opened.status_code == 200 and opened.json()["label"] == "for the client"
    # The link is read-only: it is no credential for the API.
    assert anonymous.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    links = admin.get(
        f"/api/projects/{opened.json()['datasets'][0]['project_id']}/share-links"
    ).json()
    assert links[0]["use_count"] >= 1 and "token" not in links[0]
    assert anonymous.get("/api/share/amds_made-up-token").status_code == 404
