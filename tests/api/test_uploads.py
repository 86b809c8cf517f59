"""The tus 1.0 endpoint over real HTTP: protocol rules, checksums, access, dedup, expiry and tuspy."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, update

from tests.api.test_end_to_end import FEI, USER_PASSWORD, wait_for_job
from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    TLS,
    LiveServer,
    _running_server,
    _server_env,
    free_port,
    wait_until,
)

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = {"Content-Type": "application/offset+octet-stream"}


def metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def create(client: httpx.Client, length: int, **fields: str) -> httpx.Response:
    return client.post(
        "/api/uploads/",
        headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": metadata(**fields)},
    )


def patch(
    client: httpx.Client, location: str, offset: int, body: bytes, **headers: str
) -> httpx.Response:
    return client.patch(
        location,
        content=body,
        headers={**TUS, **OFFSET_STREAM, "Upload-Offset": str(offset), **headers},
    )


def checksum(algorithm: str, body: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, body).digest()).decode()}"


def new_project(server: LiveServer, email: str, organisation: str) -> tuple[str, str]:
    """An organisation, a contributor in it, a project and a dataset, made through the admin
    API (much faster than the admin CLI); (project id, dataset id)."""
    with server.client() as admin:
        org = admin.post("/api/organisations", json={"name": organisation, "kind": "partner"})
        project = admin.post("/api/projects", json={"name": f"{organisation} project"})
        project_id: str = project.raise_for_status().json()["id"]
        add_member(server, project_id, email, org.raise_for_status().json()["id"], "contributor")
        dataset = admin.post(f"/api/projects/{project_id}/datasets", json={"name": "session"})
        dataset_id: str = dataset.raise_for_status().json()["id"]
    return project_id, dataset_id


def add_member(
    server: LiveServer, project_id: str, email: str, organisation_id: str | None, role: str
) -> None:
    """Give a user a role in a project, creating the user (in organisation_id) if asked."""
    with server.client() as admin:
        if organisation_id is not None:
            admin.post(
                "/api/users",
                json={
                    "email": email,
                    "organisation_id": organisation_id,
                    "password": USER_PASSWORD,
                },
            ).raise_for_status()
        admin.post(
            f"/api/projects/{project_id}/members", json={"email": email, "role": role}
        ).raise_for_status()


def new_organisation(server: LiveServer, name: str) -> str:
    with server.client() as admin:
        created = admin.post("/api/organisations", json={"name": name, "kind": "partner"})
        organisation_id: str = created.raise_for_status().json()["id"]
    return organisation_id


@dataclass
class Network:
    """One server for the tests that need no database of their own: two organisations, a
    project with two contributors and a viewer, and a project of a third organisation."""

    server: LiveServer
    project_id: str
    dataset_id: str

    def client(self, email: str) -> httpx.Client:
        return self.server.client(email, USER_PASSWORD)

    def new_dataset(self, name: str) -> str:
        with self.server.client() as admin:
            created = admin.post(f"/api/projects/{self.project_id}/datasets", json={"name": name})
            dataset_id: str = created.raise_for_status().json()["id"]
        return dataset_id


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    tmp = tmp_path_factory.mktemp("uploads")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLMICRO_")}
    port = free_port()
    env.update(
        {
            "ALLMICRO_DATA_DIR": str(tmp / "server-data"),
            "ALLMICRO_DATABASE_URL": f"sqlite:///{tmp / 'catalogue.sqlite3'}",
            "ALLMICRO_ADMIN_EMAIL": ADMIN_EMAIL,
            "ALLMICRO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ALLMICRO_PORT": str(port),
            "ALLMICRO_JOB_WORKERS": "1",
            # Its jobs run beside other tests: not in the idle class (tests/conftest.py).
            "ALLMICRO_JOB_IDLE_SCHEDULING": "false",
        }
    )
    server = LiveServer(url=f"http://127.0.0.1:{port}", env=env, log_path=tmp / "server.log")
    server.start()
    try:
        project_id, dataset_id = new_project(server, "maja@ijs.example", "Institut Jozef Stefan")
        elettra = new_organisation(server, "Elettra")
        add_member(server, project_id, "luca@elettra.example", elettra, "contributor")
        new_project(server, "eve@company-b.example", "Company B")
        yield Network(server, project_id, dataset_id)
    finally:
        server.stop()


def test_tus_core_creation_checksum_and_completion(live_server: LiveServer) -> None:
    _, dataset_id = new_project(live_server, "maja@ijs.example", "Institut Jozef Stefan")
    client = live_server.client("maja@ijs.example", USER_PASSWORD)
    data = FEI.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()

    options = client.options("/api/uploads/")
    assert options.status_code == 204
    assert options.headers["tus-version"] == "1.0.0"
    extensions = set(options.headers["tus-extension"].split(","))
    assert {"creation", "creation-with-upload", "termination", "expiration", "checksum"} <= (
        extensions
    )
    assert "sha256" in options.headers["tus-checksum-algorithm"].split(",")
    assert int(options.headers["tus-max-size"]) > 0

    no_version = client.post("/api/uploads/", headers={"Upload-Length": "1"})
    assert no_version.status_code == 412
    assert no_version.headers["tus-version"] == "1.0.0"
    anonymous = httpx.post(
        f"{live_server.url}/api/uploads/", headers={**TUS, "Upload-Length": "1"}, verify=TLS
    )
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    for bad in (
        {**TUS},  # no Upload-Length
        {**TUS, "Upload-Length": "-5"},
        {**TUS, "Upload-Length": "10", "Upload-Metadata": "filename %%%"},
        {**TUS, "Upload-Length": "10", "Upload-Metadata": metadata(filename="a.tif")},
        {**TUS, "Upload-Length": "10", "Upload-Defer-Length": "1"},
    ):
        response = client.post("/api/uploads/", headers=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.headers["tus-resumable"] == "1.0.0"
    too_big = create(client, 10**15, filename="x.tif", dataset_id=dataset_id)
    assert too_big.status_code == 413

    fields = {
        "filename": FEI.name,
        "dataset_id": dataset_id,
        "relative_path": "session 1/FEI.tif",
        "group": "session-1",
        "sha256": sha256,
    }
    created = create(client, len(data), **fields)
    assert created.status_code == 201, created.text
    assert created.headers["tus-resumable"] == "1.0.0"
    location = created.headers["location"]
    assert location.startswith("/api/uploads/")
    assert "upload-expires" in created.headers

    head = client.head(location, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["cache-control"] == "no-store"
    assert head.headers["upload-metadata"] == metadata(**fields)

    first, rest = data[:100_000], data[100_000:]
    wrong_type = client.patch(location, content=first, headers={**TUS, "Upload-Offset": "0"})
    assert wrong_type.status_code == 415
    wrong_offset = patch(client, location, 10, first)
    assert wrong_offset.status_code == 409
    bad_sum = patch(client, location, 0, first, **{"Upload-Checksum": checksum("sha256", b"x")})
    assert bad_sum.status_code == 460
    unknown_algorithm = patch(client, location, 0, first, **{"Upload-Checksum": "crc99 AAAA"})
    assert unknown_algorithm.status_code == 400
    assert client.head(location, headers=TUS).headers["upload-offset"] == "0"

    ok = patch(client, location, 0, first, **{"Upload-Checksum": checksum("sha256", first)})
    assert ok.status_code == 204, ok.text
    assert ok.headers["upload-offset"] == str(len(first))
    assert "x-allmicro-file-id" not in ok.headers

    last = patch(client, location, len(first), rest, **{"Upload-Checksum": checksum("sha1", rest)})
    assert last.status_code == 204, last.text
    assert last.headers["upload-offset"] == str(len(data))
    file_id = last.headers["x-allmicro-file-id"]
    job_id = last.headers["x-allmicro-job-id"]

    # A client that lost the last response learns the outcome from HEAD, or by sending it again.
    again = client.head(location, headers=TUS)
    assert again.headers["x-allmicro-file-id"] == file_id
    repeat = patch(client, location, len(data), b"")
    assert repeat.status_code == 204
    assert repeat.headers["x-allmicro-job-id"] == job_id

    described = client.get(f"/api/files/{file_id}").raise_for_status().json()
    assert described["sha256"] == sha256
    assert described["relative_path"] == "session 1/FEI.tif"
    download = client.get(f"/api/files/{file_id}/download")
    assert download.content == data
    assert client.get(f"/api/jobs/{job_id}").json()["status"] in ("queued", "running", "succeeded")
    # The spool file became the stored object: nothing is left behind.
    spool = Path(live_server.env["ALLMICRO_DATA_DIR"]) / "uploads" / "tus"
    assert list(spool.iterdir()) == []


def test_creation_with_upload_termination_and_declared_checksum(network: Network) -> None:
    dataset_id = network.new_dataset("small files")
    client = network.client("maja@ijs.example")
    data = b"II*\x00" + bytes(range(256)) * 40

    whole = client.post(
        "/api/uploads/",
        content=data,
        headers={
            **TUS,
            **OFFSET_STREAM,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(filename="small.tif", dataset_id=dataset_id),
        },
    )
    assert whole.status_code == 201, whole.text
    assert whole.headers["upload-offset"] == str(len(data))
    assert whole.headers["x-allmicro-file-id"]
    assert whole.headers["x-allmicro-sha256"] == hashlib.sha256(data).hexdigest()

    empty = create(client, 0, filename="empty.bin", dataset_id=dataset_id)
    assert empty.status_code == 201
    assert empty.headers["x-allmicro-file-id"]

    abandoned = create(client, 1000, filename="a.tif", dataset_id=dataset_id)
    location = abandoned.headers["location"]
    assert patch(client, location, 0, b"a" * 10).status_code == 204
    deleted = client.delete(location, headers=TUS)
    assert deleted.status_code == 204
    assert client.head(location, headers=TUS).status_code == 404
    assert patch(client, location, 10, b"b").status_code == 404

    lying = create(client, len(data), filename="lie.tif", dataset_id=dataset_id, sha256="0" * 64)
    location = lying.headers["location"]
    mismatch = patch(client, location, 0, data)
    assert mismatch.status_code == 460
    assert "sha256" in mismatch.json()["detail"]
    assert client.head(location, headers=TUS).status_code == 410
    bad_sha = create(client, 10, filename="x.tif", dataset_id=dataset_id, sha256="xyz")
    assert bad_sha.status_code == 422


def test_the_last_patch_may_declare_the_whole_file_sha256(network: Network) -> None:
    dataset_id = network.new_dataset("hashed while sent")
    client = network.client("maja@ijs.example")
    data = b"MRC\x00" + bytes(range(256)) * 64
    digest = hashlib.sha256(data).hexdigest()
    half = len(data) // 2

    honest = create(client, len(data), filename="honest.mrc", dataset_id=dataset_id)
    location = honest.headers["location"]
    assert patch(client, location, 0, data[:half]).status_code == 204
    done = patch(client, location, half, data[half:], **{"X-Allmicro-Sha256": digest})
    assert done.status_code == 204, done.text
    assert done.headers["x-allmicro-sha256"] == digest
    assert done.headers["x-allmicro-file-id"]

    other = data[:-1] + b"\x00"
    lying = create(client, len(other), filename="lying.mrc", dataset_id=dataset_id)
    location = lying.headers["location"]
    assert patch(client, location, 0, other[:half]).status_code == 204
    refused = patch(client, location, half, other[half:], **{"X-Allmicro-Sha256": digest})
    assert refused.status_code == 460
    assert "sha256" in refused.json()["detail"]
    assert client.head(location, headers=TUS).status_code == 410

    # A digest that contradicts the one declared at creation is refused before any byte counts.
    declared = create(client, len(data), filename="twice.mrc", dataset_id=dataset_id, sha256=digest)
    location = declared.headers["location"]
    contradicting = patch(client, location, 0, data, **{"X-Allmicro-Sha256": "0" * 64})
    assert contradicting.status_code == 460
    assert client.head(location, headers=TUS).headers["upload-offset"] == "0"
    malformed = patch(client, location, 0, data, **{"X-Allmicro-Sha256": "xyz"})
    assert malformed.status_code == 400


def test_a_patch_cut_off_midway_keeps_what_arrived_and_resumes(network: Network) -> None:
    """A client that goes away mid-request (a cut network) loses nothing that reached the
    server: the offset moves past every checkpoint it crossed, and the rest completes the file."""
    dataset_id = network.new_dataset("cut off")
    client = network.client("maja@ijs.example")
    token = network.server.token("maja@ijs.example", USER_PASSWORD)
    data = os.urandom(100 << 20)
    sent = (70 << 20) + 1234  # past the server's first checkpoint, not on any block boundary
    location = create(client, len(data), filename="cut.raw", dataset_id=dataset_id).headers[
        "location"
    ]
    address = network.server.url.removeprefix("http://").split(":")
    with socket.create_connection((address[0], int(address[1])), timeout=60) as sock:
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
            f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[:sent])

    def offset_once_the_request_ended() -> int | None:
        answer = client.head(location, headers=TUS)
        offset = int(answer.headers["upload-offset"])
        # The request holds the upload until it ends: then the offset stops at its last word.
        again = patch(client, location, offset, b"")
        return offset if again.status_code == 204 else None

    offset = wait_until(offset_once_the_request_ended, timeout=60, what="the cut request to end")
    assert 64 << 20 <= offset <= sent
    done = patch(client, location, offset, data[offset:])
    assert done.status_code == 204, done.text
    stored = client.get(f"/api/files/{done.headers['x-allmicro-file-id']}").json()
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()


def test_uploads_are_private_and_need_the_contributor_role(network: Network) -> None:
    owner = network.client("maja@ijs.example")
    dataset_id = network.dataset_id
    location = create(owner, 100, filename="a.tif", dataset_id=dataset_id).headers["location"]

    # Another contributor of the same project does not see someone else's upload.
    colleague = network.client("luca@elettra.example")
    assert colleague.head(location, headers=TUS).status_code == 404
    # The dataset and the upload do not exist for someone outside the project.
    outsider = network.client("eve@company-b.example")
    assert create(outsider, 10, filename="a.tif", dataset_id=dataset_id).status_code == 404
    assert outsider.head(location, headers=TUS).status_code == 404
    assert patch(outsider, location, 0, b"x").status_code == 404
    assert outsider.delete(location, headers=TUS).status_code == 404

    add_member(network.server, network.project_id, "eve@company-b.example", None, "viewer")
    refused = create(outsider, 10, filename="a.tif", dataset_id=dataset_id)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"


def test_same_file_from_two_users_is_stored_once_with_one_image(network: Network) -> None:
    dataset_id = network.new_dataset("shared session")
    data = FEI.read_bytes()
    outcomes = []
    for email in ("maja@ijs.example", "luca@elettra.example"):
        client = network.client(email)
        created = create(client, len(data), filename=FEI.name, dataset_id=dataset_id)
        done = patch(client, created.headers["location"], 0, data)
        assert done.status_code == 204, done.text
        outcomes.append((done.headers["x-allmicro-file-id"], done.headers["x-allmicro-job-id"]))
    assert outcomes[0] == outcomes[1]
    raw = Path(network.server.env["ALLMICRO_DATA_DIR"]) / "objects" / "raw"
    assert hashlib.sha256(data).hexdigest() in [p.name for p in raw.iterdir()]
    assert sum(1 for p in raw.iterdir() if p.name == hashlib.sha256(data).hexdigest()) == 1
    client = network.client("luca@elettra.example")
    assert wait_for_job(client, outcomes[0][1])["status"] == "succeeded"
    assert client.get(f"/api/datasets/{dataset_id}/images").json()["total"] == 1
    files = client.get(f"/api/datasets/{dataset_id}/jobs").json()
    assert files["total"] == 1


def test_expired_uploads_are_gone_and_swept(network: Network) -> None:
    from allmicro_data.catalogue.models import Upload, utcnow
    from allmicro_data.services import Services
    from allmicro_data.settings import Settings
    from allmicro_data.uploads import spool_path, sweep_uploads

    client = network.client("luca@elettra.example")
    dataset_id = network.dataset_id
    stale = create(client, 100, filename="a.tif", dataset_id=dataset_id).headers["location"]
    idle = create(client, 100, filename="b.tif", dataset_id=dataset_id).headers["location"]
    assert patch(client, stale, 0, b"a" * 50).status_code == 204

    services = Services.from_settings(
        Settings(
            data_dir=network.server.env["ALLMICRO_DATA_DIR"],
            database_url=network.server.env["ALLMICRO_DATABASE_URL"],
        )
    )
    try:
        past = utcnow() - timedelta(seconds=1)
        ids = [stale.rsplit("/", 1)[1], idle.rsplit("/", 1)[1]]
        engine = create_engine(services.settings.resolved_database_url)
        with engine.begin() as conn:
            conn.execute(update(Upload).where(Upload.id.in_(ids)).values(expires_at=past))
        engine.dispose()
        assert client.head(stale, headers=TUS).status_code == 410
        assert not spool_path(services, ids[0]).exists()
        assert spool_path(services, ids[1]).exists()
        assert sweep_uploads(services) >= 1
        assert not spool_path(services, ids[1]).exists()
        assert client.head(idle, headers=TUS).status_code == 404
    finally:
        services.close()


def test_the_server_sweeps_expired_uploads_by_itself(tmp_path: Path) -> None:
    """The sweeper runs with the server's other background services: an upload left idle past
    ALLMICRO_UPLOAD_EXPIRY_SECONDS is deleted, spool file and row, with no request about it."""
    env = _server_env(tmp_path / "data", f"sqlite:///{tmp_path / 'catalogue.sqlite3'}")
    env.update({"ALLMICRO_UPLOAD_EXPIRY_SECONDS": "3", "ALLMICRO_JOB_WORKERS": "0"})
    server = _running_server(env, tmp_path / "server.log")
    try:
        email = "idle@sweeper.example"
        _project_id, dataset_id = new_project(server, email, "Sweeper")
        with server.client(email, USER_PASSWORD) as client:
            created = create(client, 100, filename="idle.tif", dataset_id=dataset_id)
            url = created.raise_for_status().headers["location"]
            spool = tmp_path / "data" / "uploads" / "tus" / f"{url.rsplit('/', 1)[1]}.part"
            assert spool.exists()
            wait_until(lambda: not spool.exists(), timeout=30, what="the sweeper")
            # 404, not the 410 of an expired upload still in the catalogue.
            assert client.head(url, headers=TUS).status_code == 404
    finally:
        server.stop()


def test_tuspy_uploads_to_the_endpoint(network: Network) -> None:
    from tusclient import client as tus_client

    dataset_id = network.new_dataset("tuspy")
    token = network.server.token("maja@ijs.example", USER_PASSWORD)
    tus = tus_client.TusClient(
        f"{network.server.url}/api/uploads/", headers={"Authorization": f"Bearer {token}"}
    )
    uploader: Any = tus.uploader(
        str(FEI),
        chunk_size=128 * 1024,
        metadata={"filename": FEI.name, "dataset_id": dataset_id},
        upload_checksum=True,
    )
    uploader.upload()
    headers = uploader.request.response_headers
    assert int(headers["upload-offset"]) == FEI.stat().st_size
    client = network.client("maja@ijs.example")
    assert client.get(f"/api/jobs/{headers['x-allmicro-job-id']}").status_code == 200
    stored = client.get(f"/api/files/{headers['x-allmicro-file-id']}").json()
    assert stored["sha256"] == hashlib.sha256(FEI.read_bytes()).hexdigest()
    assert stored["dataset_id"] == dataset_id


def test_creation_with_upload_and_a_wrong_checksum_answers_460_and_keeps_nothing(
    network: Network,
) -> None:
    dataset_id = network.new_dataset("checksummed creation")
    client = network.client("maja@ijs.example")
    data = b"II*\x00" + bytes(range(256)) * 8
    spool = Path(network.server.env["ALLMICRO_DATA_DIR"]) / "uploads" / "tus"

    def spooled() -> set[Path]:
        return set(spool.iterdir()) if spool.is_dir() else set()

    before = spooled()

    def create_with_body(upload_checksum: str) -> httpx.Response:
        return client.post(
            "/api/uploads/",
            content=data,
            headers={
                **TUS,
                **OFFSET_STREAM,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": metadata(filename="summed.tif", dataset_id=dataset_id),
                "Upload-Checksum": upload_checksum,
            },
        )

    wrong = create_with_body(checksum("sha256", data[:-1]))
    assert wrong.status_code == 460, wrong.text
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.headers["tus-resumable"] == "1.0.0"
    # No upload to resume: nothing of the body, and no empty upload, is left on the spool.
    assert "location" not in wrong.headers
    assert spooled() == before
    totals = client.get(f"/api/datasets/{dataset_id}").raise_for_status().json()["totals"]
    assert totals["files"] == 0

    right = create_with_body(checksum("sha256", data))
    assert right.status_code == 201, right.text
    assert right.headers["upload-offset"] == str(len(data))
    assert right.headers["x-allmicro-file-id"]


def test_upload_metadata_that_is_base64_but_not_utf8_is_reported_as_such(
    network: Network,
) -> None:
    dataset_id = network.new_dataset("metadata encodings")
    client = network.client("maja@ijs.example")
    dataset = f"dataset_id {base64.b64encode(dataset_id.encode()).decode()}"
    latin1 = base64.b64encode("Mikroskopija_č.tif".encode("cp1250")).decode()
    for value, says, denies in (
        (latin1, "not UTF-8", "not base64"),
        ("%%%", "not base64", "UTF-8"),
    ):
        response = client.post(
            "/api/uploads/",
            headers={
                **TUS,
                "Upload-Length": "10",
                "Upload-Metadata": f"filename {value},{dataset}",
            },
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        detail = response.json()["detail"]
        assert says in detail and denies not in detail, detail
        assert "'filename'" in detail
