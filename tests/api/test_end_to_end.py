"""One image from upload to tile over real HTTP, on SQLite and PostgreSQL; bad files fail cleanly."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from allmicro_data.api.rendering import Window, to_uint8
from tests.conftest import SAMPLES, TLS, LiveServer, wait_until

FEI = SAMPLES / "fei" / "FEI-Helios-Ebeam-16bits.tif"
USER_PASSWORD = "a long enough password"


def setup_project(server: LiveServer, member_email: str, org: str) -> str:
    """A project with one dataset and one contributor, made by the admin over the API."""
    admin = server.client()

    def made(response: httpx.Response) -> str:
        assert response.status_code == 201, response.text
        created: str = response.json()["id"]
        return created

    org_id = made(
        admin.post("/api/organisations", json={"name": org, "kind": "partner", "country": "SI"})
    )
    body = {"email": member_email, "organisation_id": org_id, "password": USER_PASSWORD}
    made(admin.post("/api/users", json=body))
    project = made(admin.post("/api/projects", json={"name": f"{org} project"}))
    made(
        admin.post(
            f"/api/projects/{project}/members", json={"email": member_email, "role": "contributor"}
        )
    )
    return made(admin.post(f"/api/projects/{project}/datasets", json={"name": "SEM session"}))


def upload(client: httpx.Client, dataset_id: str, name: str, data: bytes) -> dict[str, Any]:
    response = client.post(
        f"/api/datasets/{dataset_id}/files",
        files={"file": (name, data, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").raise_for_status().json()
        return job if job["status"] in ("succeeded", "failed") else None

    result: dict[str, Any] = wait_until(
        finished, timeout=timeout, interval=0.2, what=f"job {job_id}"
    )
    return result


def pyramid_window(server: LiveServer, image_id: str) -> Window:
    """The display window the server stored with the pyramid (read straight from the store)."""
    zattrs = (
        Path(server.env["ALLMICRO_DATA_DIR"])
        / "objects"
        / "images"
        / image_id
        / "image.ome.zarr"
        / ".zattrs"
    )
    window = json.loads(zattrs.read_text())["omero"]["channels"][0]["window"]
    return Window(window["start"], window["end"])


def test_upload_ingest_and_tile_match_tifffile(shared_server: LiveServer) -> None:
    dataset_id = setup_project(shared_server, "maja@ijs.example", "Institut Jozef Stefan")
    client = shared_server.client("maja@ijs.example", USER_PASSWORD)
    original = FEI.read_bytes()

    uploaded = upload(client, dataset_id, FEI.name, original)
    job = wait_for_job(client, uploaded["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 100.0
    (image_id,) = job["image_ids"]

    image = client.get(f"/api/images/{image_id}").raise_for_status().json()
    assert image["shape"] == [471, 512]
    assert image["axes"] == "yx"
    assert image["dtype"] == "uint16"
    assert image["file_ids"] == [uploaded["file_id"]]

    listed = client.get(f"/api/datasets/{dataset_id}/images").raise_for_status().json()
    assert [i["id"] for i in listed["items"]] == [image_id]
    assert listed["total"] == 1

    tile = client.get(f"/api/images/{image_id}/tiles/0/0/0.png")
    assert tile.status_code == 200
    assert tile.headers["content-type"] == "image/png"
    got = np.asarray(PILImage.open(io.BytesIO(tile.content)))
    # The default window is the 0.1 and 99.9 percentiles of the sample alone: the data bar the
    # FEI reader finds (rows 442 on) is left out.
    frame = tifffile.imread(FEI)
    lo, hi = (float(v) for v in np.percentile(frame[:442], [0.1, 99.9]))
    expected = to_uint8(frame[:512, :512], Window(lo, hi if hi > lo else lo + 1))
    assert got.shape == (471, 512)
    np.testing.assert_array_equal(got, expected)
    # A window that shows contrast, not a flat picture.
    assert got.min() < 50 and got.max() > 200

    ome = client.get(f"/api/images/{image_id}/ome.xml")
    assert ome.status_code == 200
    assert b"<OME" in ome.content and b'SizeX="512"' in ome.content

    download = client.get(f"/api/files/{uploaded['file_id']}/download")
    assert download.status_code == 200
    assert download.content == original
    assert download.headers["x-checksum-sha256"] == hashlib.sha256(original).hexdigest()
    assert 'filename="FEI-Helios-Ebeam-16bits.tif"' in download.headers["content-disposition"]

    ranged = client.get(
        f"/api/files/{uploaded['file_id']}/download", headers={"Range": "bytes=10-19"}
    )
    assert ranged.status_code == 206
    assert ranged.content == original[10:20]


def test_other_organisation_sees_nothing(shared_server: LiveServer) -> None:
    dataset_id = setup_project(shared_server, "ana@units.example", "Universita di Trieste")
    owner = shared_server.client("ana@units.example", USER_PASSWORD)
    uploaded = upload(owner, dataset_id, FEI.name, FEI.read_bytes())
    job = wait_for_job(owner, uploaded["job_id"])
    (image_id,) = job["image_ids"]

    setup_project(shared_server, "eve@company-b.example", "Company B")
    outsider = shared_server.client("eve@company-b.example", USER_PASSWORD)
    for path in (
        f"/api/images/{image_id}",
        f"/api/images/{image_id}/ome.xml",
        f"/api/images/{image_id}/tiles/0/0/0.png",
        f"/api/files/{uploaded['file_id']}/download",
        f"/api/jobs/{uploaded['job_id']}",
        f"/api/datasets/{dataset_id}",
        f"/api/datasets/{dataset_id}/images",
    ):
        response = outsider.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    assert outsider.get("/api/images").json()["total"] == 0
    assert outsider.get("/api/images", params={"q": "FEI"}).json()["total"] == 0
    upload_attempt = outsider.post(
        f"/api/datasets/{dataset_id}/files", files={"file": ("x.tif", b"II*\x00", "image/tiff")}
    )
    assert upload_attempt.status_code == 404
    assert httpx.get(f"{shared_server.url}/api/images/{image_id}", verify=TLS).status_code == 401


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.tif", b"", "empty"),
        ("noise.tif", os.urandom(64 * 1024), "unrecognised file format"),
        ("truncated.tif", FEI.read_bytes()[:4000], "TIFF"),
    ],
)
def test_bad_file_fails_its_job_and_keeps_the_original(
    shared_server: LiveServer, name: str, data: bytes, reason: str
) -> None:
    email = f"ivo-{name.split('.')[0]}@zrc.example"
    dataset_id = setup_project(shared_server, email, f"ZRC SAZU {name}")
    client = shared_server.client(email, USER_PASSWORD)
    uploaded = upload(client, dataset_id, name, data)
    job = wait_for_job(client, uploaded["job_id"])
    assert job["status"] == "failed"
    assert reason in job["error"]
    assert name in job["error"]
    assert "Traceback" not in job["error"]
    assert job["image_ids"] == []
    # Bad input fails at once: no retries.
    assert job["attempts"] == 1

    download = client.get(f"/api/files/{uploaded['file_id']}/download")
    assert download.status_code == 200
    assert download.content == data

    assert client.get("/healthz").status_code == 200
    if name == "noise.tif":
        # The runner that met the bad file goes on converting good ones.
        good = upload(client, dataset_id, FEI.name, FEI.read_bytes())
        assert wait_for_job(client, good["job_id"])["status"] == "succeeded"
        assert client.get(f"/api/datasets/{dataset_id}/images").json()["total"] == 1


@pytest.mark.parametrize("order", ["emi-first", "ser-first"])
def test_multi_file_acquisition_becomes_one_image(shared_server: LiveServer, order: str) -> None:
    """EMI+SER uploaded with one group key: one image from both, each original on its own."""
    email = f"tia-{order}@elettra.example"
    dataset_id = setup_project(shared_server, email, f"Elettra {order}")
    client = shared_server.client(email, USER_PASSWORD)
    emi = SAMPLES / "tia" / "64x64_TEM_images_acquire.emi"
    ser = SAMPLES / "tia" / "64x64_TEM_images_acquire_1.ser"
    files = [emi, ser] if order == "emi-first" else [ser, emi]
    uploaded = {}
    for path in files:
        response = client.post(
            f"/api/datasets/{dataset_id}/files",
            files={"file": (path.name, path.read_bytes())},
            data={"group": "tecnai-session-1"},
        )
        assert response.status_code == 201, response.text
        uploaded[path.suffix] = response.json()

    def one_ready_image() -> list[dict[str, Any]] | None:
        images: list[dict[str, Any]] = client.get(f"/api/datasets/{dataset_id}/images").json()[
            "items"
        ]
        jobs = client.get(f"/api/datasets/{dataset_id}/jobs").json()["items"]
        settled = all(j["status"] in ("succeeded", "failed") for j in jobs)
        return images if settled and len(images) == 1 and images[0]["name"] == emi.name else None

    (image,) = wait_until(
        one_ready_image, timeout=120, interval=0.3, what="the acquisition's image"
    )
    detail = client.get(f"/api/images/{image['id']}").json()
    assert detail["shape"] == [64, 64] and detail["dtype"] == "float32"
    assert detail["acquisition"]["accelerating_voltage"] is not None
    for result in uploaded.values():
        download = client.get(f"/api/files/{result['file_id']}/download")
        assert download.status_code == 200


def tus_upload(client: httpx.Client, dataset_id: str, name: str, data: bytes) -> str:
    """One tus upload without a group, in one PATCH; the job id of the finished upload."""
    tus = {"Tus-Resumable": "1.0.0"}
    fields = {"filename": name, "dataset_id": dataset_id}
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())
    created = client.post(
        "/api/uploads/", headers={**tus, "Upload-Length": str(len(data)), "Upload-Metadata": meta}
    )
    assert created.status_code == 201, created.text
    done = client.patch(
        created.headers["Location"],
        content=data,
        headers={
            **tus,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        },
    )
    assert done.status_code == 204, done.text
    return done.headers["X-Allmicro-Job-Id"]


def _settled_single_image(
    client: httpx.Client, dataset_id: str, name: str
) -> list[dict[str, Any]] | None:
    images: list[dict[str, Any]] = client.get(f"/api/datasets/{dataset_id}/images").json()["items"]
    jobs = client.get(f"/api/datasets/{dataset_id}/jobs").json()["items"]
    settled = all(j["status"] in ("succeeded", "failed") for j in jobs)
    return images if settled and len(images) == 1 and images[0]["name"] == name else None


@pytest.mark.parametrize(
    ("folder", "order", "primary"),
    [
        # TIA: the .ser first, then the .emi, as the web form sends them: no group given.
        ("tia", ["64x64_TEM_images_acquire_1.ser", "64x64_TEM_images_acquire.emi"], 1),
        # The same through tus (the agent), the .emi first this time.
        ("tia-tus", ["64x64_TEM_images_acquire.emi", "64x64_TEM_images_acquire_1.ser"], 0),
        # DE-Server: a sum, the _info.txt, the movie, then the other sums.
        (
            "direct-electron",
            [
                "20241021_00405_final.mrc",
                "20241021_00405_info.txt",
                "20241021_00405_movie.mrc",
                "20241021_00405_0_Virt 0_sum.mrc",
                "20241021_00405_ext1_Ext 1.mrc",
            ],
            2,
        ),
    ],
)
def test_companions_uploaded_one_by_one_without_a_group_make_one_image(
    shared_server: LiveServer, folder: str, order: list[str], primary: int
) -> None:
    """The server groups files by the vendors' naming rules, whichever arrives first."""
    email = f"companions-{folder}@elettra.example"
    dataset_id = setup_project(shared_server, email, f"Elettra companions {folder}")
    client = shared_server.client(email, USER_PASSWORD)
    for name in order:
        data = (SAMPLES / folder.removesuffix("-tus") / name).read_bytes()
        if folder.endswith("-tus"):
            job_id = tus_upload(client, dataset_id, name, data)
        else:
            job_id = upload(client, dataset_id, name, data)["job_id"]

        def handled(job_id: str = job_id) -> bool:
            # Done, or deferred with its reason (waiting for the rest of its acquisition).
            job = client.get(f"/api/jobs/{job_id}").json()
            return job["status"] in ("succeeded", "failed") or (
                job["status"] == "queued" and bool(job["error"])
            )

        # One at a time: each file's job has run (or waits) before the next file arrives.
        wait_until(handled, timeout=60, interval=0.1, what=f"the job of {name}")
    (image,) = wait_until(
        lambda: _settled_single_image(client, dataset_id, order[primary]),
        timeout=60,
        interval=0.3,
        what="the acquisition's image",
    )
    detail = client.get(f"/api/images/{image['id']}").json()
    if folder.startswith("tia"):
        assert detail["shape"] == [64, 64] and detail["acquisition"]["accelerating_voltage"]
    else:
        # What only the _info.txt holds reached the movie's image.
        assert "de_info" in detail["vendor"] and detail["acquisition"]["detector"] == "DESim"
    assert not any("built without" in w for w in detail["warnings"])


def test_a_lone_companion_waits_then_becomes_an_image_that_says_what_is_missing(
    shared_server: LiveServer,
) -> None:
    """A .ser whose .emi never comes waits companion_wait_seconds (4 s in tests), then is
    read alone, its image warning that the .emi is missing."""
    email = "lone-ser@elettra.example"
    dataset_id = setup_project(shared_server, email, "Elettra lone ser")
    client = shared_server.client(email, USER_PASSWORD)
    ser = SAMPLES / "tia" / "64x64_TEM_images_acquire_1.ser"
    job_id = upload(client, dataset_id, ser.name, ser.read_bytes())["job_id"]
    waiting = wait_until(
        lambda: (job := client.get(f"/api/jobs/{job_id}").json())["error"] and job,
        timeout=30,
        what="the .ser's job to wait",
    )
    assert waiting["status"] == "queued" and "FEI TIA emi" in waiting["error"]
    job = wait_for_job(client, job_id, timeout=60)
    assert job["status"] == "succeeded", job
    (image_id,) = job["image_ids"]
    warnings = client.get(f"/api/images/{image_id}").json()["warnings"]
    assert any("built without the FEI TIA emi" in w for w in warnings), warnings


@pytest.mark.parametrize("project_first", [True, False])
def test_a_jeol_project_and_the_image_it_lists_make_one_image_with_its_facts(
    shared_server: LiveServer, tmp_path: Path, project_first: bool
) -> None:
    """An .ASW names its members inside, not by stem: sent first it waits for them; sent after
    the .img it lists, it takes that image over. Either way one image, with the project's
    sample and view."""
    from tests.ingest.test_em_containers import _asw

    email = f"jeol-project-{project_first}@elettra.example"
    dataset_id = setup_project(shared_server, email, f"Elettra JEOL project {project_first}")
    client = shared_server.client(email, USER_PASSWORD)
    project = _asw(tmp_path / "Project.ASW", "Alloy 7\\View 003\\Dummy-Data_0000000.img")
    image = SAMPLES / "jeol" / "Dummy-Data_0000000.img"
    if project_first:
        job_id = upload(client, dataset_id, project.name, project.read_bytes())["job_id"]
        waiting = wait_until(
            lambda: (job := client.get(f"/api/jobs/{job_id}").json())["error"] and job,
            timeout=30,
            what="the project's job to wait",
        )
        assert waiting["status"] == "queued" and "JEOL Analysis Station" in waiting["error"]
        upload(client, dataset_id, image.name, image.read_bytes())
    else:
        job = wait_for_job(
            client, upload(client, dataset_id, image.name, image.read_bytes())["job_id"]
        )
        assert job["status"] == "succeeded" and job["image_ids"]
        upload(client, dataset_id, project.name, project.read_bytes())
    (ready,) = wait_until(
        lambda: _settled_single_image(client, dataset_id, project.name),
        timeout=60,
        interval=0.3,
        what="the project's image",
    )
    detail = client.get(f"/api/images/{ready['id']}").json()
    assert detail["vendor"]["original_metadata"]["asw"]["sample"]["SampleName"] == "Alloy 7"
    assert not any("built without" in w for w in detail["warnings"])
