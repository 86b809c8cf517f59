"""Hostile input over real HTTP: uploaded content is served as data, names hold no control
characters, every filename header follows RFC 6266, and CSV exports keep formulas as text."""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import unquote

import httpx
import pytest

from allmicro_data.api.streaming import content_disposition
from tests.api.test_access_matrix import tiny_tiff
from tests.api.test_end_to_end import upload, wait_for_job
from tests.api.test_uploads import create as tus_create
from tests.conftest import TLS, LiveServer
from tests.web.test_uploaded_content import assert_served_as_data

DATASET_NAME = 'Jožef "Stefan" 東京 µm'
FILE_NAME = "scan č 1.tif"
# (No slash, which would make it a path, nor quotes, which clients escape in multipart.)
FORMULA_FILE = "=SUM(A1:A9)*cmd|'-C calc'!A0.tif"
# Line breaks, NUL, ESC, a Unicode line separator and a right-to-left override.
UNFIT = ["two\r\nlines", "nul\x00", "escape\x1b[31m", "line\u2028separator", "exe\u202egpj.tif"]


def filename_of(header: str) -> str:
    """The file name an RFC 6266 client reads: `filename*` (RFC 8187, only attr-chars and
    %-escapes of UTF-8), after checking that the `filename` stand-in is quoted printable ASCII."""
    fallback = re.search(r'; filename="([^"\\%/]*)"', header)
    assert fallback and fallback[1].isascii() and fallback[1].isprintable(), header
    exact = re.search(r"; filename\*=UTF-8''([A-Za-z0-9!#$&+\-.^_`|~%]+)$", header)
    assert exact, header
    return unquote(exact[1], errors="strict")


def _image(admin: httpx.Client, dataset_id: str, name: str, seed: int) -> tuple[str, str]:
    """(file id, image id) of a small TIFF uploaded and ingested under this name."""
    uploaded = upload(admin, dataset_id, name, tiny_tiff(seed))
    job = wait_for_job(admin, uploaded["job_id"])
    assert job["status"] == "succeeded", job["error"]
    return uploaded["file_id"], job["image_ids"][0]


def _dataset(admin: httpx.Client, name: str) -> tuple[str, str]:
    project = admin.post("/api/projects", json={"name": f"{name} (project)"})
    project_id: str = project.raise_for_status().json()["id"]
    dataset = admin.post(f"/api/projects/{project_id}/datasets", json={"name": name})
    return project_id, dataset.raise_for_status().json()["id"]


def test_documents_derived_from_uploads_are_served_as_data(shared_server: LiveServer) -> None:
    admin = shared_server.client()
    _, dataset_id = _dataset(admin, DATASET_NAME)
    file_id, image_id = _image(admin, dataset_id, FILE_NAME, seed=1)
    share = admin.post(f"/api/datasets/{dataset_id}/share-links", json={"label": "client"})
    token = share.raise_for_status().json()["token"]
    downloads = {
        f"/api/images/{image_id}/ome.xml": f"{FILE_NAME}.ome.xml",
        f"/api/datasets/{dataset_id}/metadata.json": f"{DATASET_NAME}.json",
        f"/api/datasets/{dataset_id}/metadata.csv": f"{DATASET_NAME}.csv",
        f"/api/datasets/{dataset_id}/download.zip": f"{DATASET_NAME}.zip",
        f"/api/files/{file_id}/download": FILE_NAME,
        f"/api/share/{token}/files/{file_id}/download": FILE_NAME,
        f"/api/share/{token}/datasets/{dataset_id}/download.zip": f"{DATASET_NAME}.zip",
        f"/zarr/{image_id}/OME/METADATA.ome.xml": "METADATA.ome.xml",
        "/api/audit.csv": "audit.csv",
    }
    for path, name in downloads.items():
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text)
        assert_served_as_data(response)
        header = response.headers["content-disposition"]
        # The exact name in filename*, and a quoted ASCII stand-in for older clients.
        assert filename_of(header) == name, (path, header)

    # JSON of the API (vendor strings and all) is data too, though no download.
    for path in (f"/api/images/{image_id}", f"/iiif/3/{image_id}/info.json", "/api/nowhere"):
        response = admin.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"].startswith("sandbox;")


@pytest.mark.parametrize("bad", UNFIT)
def test_names_with_control_characters_are_refused(shared_server: LiveServer, bad: str) -> None:
    admin = shared_server.client()
    project_id, dataset_id = _dataset(admin, f"Names {UNFIT.index(bad)}")
    refused = {
        "project": admin.post("/api/projects", json={"name": bad}),
        "project rename": admin.patch(f"/api/projects/{project_id}", json={"name": bad}),
        "dataset": admin.post(f"/api/projects/{project_id}/datasets", json={"name": bad}),
        "dataset rename": admin.patch(f"/api/datasets/{dataset_id}", json={"name": bad}),
        "organisation": admin.post("/api/organisations", json={"name": bad, "kind": "partner"}),
        "token": admin.post("/api/tokens", json={"name": bad}),
        "share link": admin.post(f"/api/datasets/{dataset_id}/share-links", json={"label": bad}),
        "zip": admin.post("/api/downloads/zip", json={"file_ids": ["x"], "name": bad}),
        "tus filename": tus_create(admin, 10, filename=bad, dataset_id=dataset_id),
        "tus group": tus_create(admin, 10, filename="a.tif", dataset_id=dataset_id, group=bad),
        "tus relative_path": tus_create(
            admin, 10, filename="a.tif", dataset_id=dataset_id, relative_path=f"run/{bad}/a.tif"
        ),
        "multipart group": admin.post(
            f"/api/datasets/{dataset_id}/files",
            files={"file": ("a.bin", b"bytes")},
            data={"group": bad},
        ),
        "multipart filename": admin.post(
            f"/api/datasets/{dataset_id}/files", **_multipart_with_raw_filename(bad)
        ),
    }
    for what, response in refused.items():
        # A raw CR LF ends the multipart header itself: that body is no multipart at all (400).
        expected = 400 if what == "multipart filename" and "\n" in bad else 422
        assert response.status_code == expected, (what, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json", what
    # Names in any script are welcome; only the characters that break lines and headers are not.
    assert admin.patch(f"/api/datasets/{dataset_id}", json={"name": "Čas 東京 µm"}).is_success


def _multipart_with_raw_filename(name: str) -> dict[str, object]:
    """A multipart body whose filename parameter carries the characters as they are (httpx, like
    browsers, would percent-escape them; a hand-made client need not)."""
    boundary = "hostile-boundary"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"bytes\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    return {
        "content": body,
        "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    }


def test_csv_exports_keep_formulas_as_text(shared_server: LiveServer) -> None:
    admin = shared_server.client()
    _, dataset_id = _dataset(admin, "Formulas")
    _image(admin, dataset_id, FORMULA_FILE, seed=2)
    (row,) = csv.DictReader(io.StringIO(admin.get(f"/api/datasets/{dataset_id}/metadata.csv").text))
    assert row["name"] == "'" + FORMULA_FILE and row["files"] == "'" + FORMULA_FILE
    assert row["pixel_size_x"] == ""  # no calibration: still empty, not a quoted nothing

    # Anyone can put text into the audit log: the name typed into a failed sign-in.
    typed = ["@SUM(1+1)*cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "+1+cmd"]
    for username in typed:
        refused = httpx.post(
            f"{shared_server.url}/api/auth/token",
            data={"username": username, "password": "x"},
            verify=TLS,
        )
        assert refused.status_code == 401
    export = admin.get("/api/audit.csv", params={"action": "login.failure"})
    actors = {row["actor"] for row in csv.DictReader(io.StringIO(export.text))}
    assert {"'" + name.lower() for name in typed} <= actors, actors


def test_content_disposition_is_rfc_6266_for_any_name() -> None:
    for name in ["plain.tif", 'a "quoted" \\ name%.tif', "Jožef 東京 µm.zip", "cr\r\nlf\x00.csv"]:
        header = content_disposition(name)
        assert header.startswith("attachment; filename=")
        assert header.isascii() and header.isprintable()
        assert filename_of(header) == name
    assert 'filename="Jozef __ _m.zip"' in content_disposition("Jožef 東京 µm.zip")
