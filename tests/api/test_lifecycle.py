"""The data lifecycle over the API: rename and describe, move, delete into the trash, restore,
legal hold, and purge — which removes an image's objects from every store of a replicated
store, and an original only when no other file names its bytes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile

from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.conftest import TLS, LiveServer, PostgresDatabases, module_server

MANAGER = "mara@lab.example"
CONTRIBUTOR = "carl@lab.example"
OTHER_CONTRIBUTOR = "cleo@lab.example"
VIEWER = "vera@lab.example"


@dataclass
class Lab:
    server: LiveServer
    stores: tuple[Path, Path]  # the primary and the replica, on disk
    project: str
    other_project: str
    dataset: str
    second_dataset: str
    other_dataset: str


def tiny_tiff(seed: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64), dtype=np.uint8)
    tifffile.imwrite(buffer, pixels)
    return buffer.getvalue()


def _created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module", params=["sqlite"])
def lab(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Lab]:
    stores = tmp_path_factory.mktemp("lifecycle-stores")
    primary, replica = stores / "primary", stores / "replica"
    env = {
        "ALLMICRO_STORAGE_URL": primary.as_uri(),
        "ALLMICRO_REPLICA_URLS": json.dumps([replica.as_uri()]),
        "ALLMICRO_REPLICA_QUORUM": "1",
    }
    with (
        module_server(request, tmp_path_factory, postgres_databases, "lifecycle", env) as server,
        server.client() as admin,
    ):
        org = _created(admin.post("/api/organisations", json={"name": "Lab", "kind": "partner"}))
        users = {}
        for email in (MANAGER, CONTRIBUTOR, OTHER_CONTRIBUTOR, VIEWER):
            body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
            users[email] = _created(admin.post("/api/users", json=body))
        project = _created(admin.post("/api/projects", json={"name": "Coatings"}))
        other = _created(admin.post("/api/projects", json={"name": "Alloys"}))
        for project_id, email, role in (
            (project, MANAGER, "manager"),
            (other, MANAGER, "manager"),
            (project, CONTRIBUTOR, "contributor"),
            (project, OTHER_CONTRIBUTOR, "contributor"),
            (project, VIEWER, "viewer"),
        ):
            body = {"user_id": users[email], "role": role}
            _created(admin.post(f"/api/projects/{project_id}/members", json=body))

        def dataset(project_id: str, name: str) -> str:
            return _created(admin.post(f"/api/projects/{project_id}/datasets", json={"name": name}))

        yield Lab(
            server=server,
            stores=(primary, replica),
            project=project,
            other_project=other,
            dataset=dataset(project, "SEM 1"),
            second_dataset=dataset(project, "SEM 2"),
            other_dataset=dataset(other, "TEM 1"),
        )


def client(lab: Lab, email: str) -> httpx.Client:
    return lab.server.client(email, USER_PASSWORD)


def ingest(
    server: LiveServer, dataset_id: str, name: str, data: bytes, who: str = CONTRIBUTOR
) -> str:
    with server.client(who, USER_PASSWORD) as c:
        job = wait_for_job(c, upload(c, dataset_id, name, data)["job_id"])
    assert job["status"] == "succeeded", job["error"]
    return str(job["image_ids"][0])


def objects_of(store: Path, image_id: str) -> list[Path]:
    return [p for p in (store / "images" / image_id).rglob("*") if p.is_file()]


def test_contributors_rename_and_describe_images_and_datasets(lab: Lab) -> None:
    image = ingest(lab.server, lab.dataset, "rename-me.tif", tiny_tiff(1))
    with client(lab, CONTRIBUTOR) as c:
        body = {"name": "Coating A, cross-section", "description": "FIB cut at 52°"}
        changed = c.patch(f"/api/images/{image}", json=body)
        assert changed.status_code == 200, changed.text
        shown = c.get(f"/api/images/{image}").json()
        assert (shown["name"], shown["description"]) == (body["name"], body["description"])
        # The new name is searchable at once.
        found = c.get("/api/images", params={"q": "cross-section"}).json()
        assert image in [i["id"] for i in found["items"]]
        assert c.patch(f"/api/images/{image}", json={"name": "bad\nname"}).status_code == 422
        renamed = c.patch(f"/api/datasets/{lab.second_dataset}", json={"description": "day two"})
        assert renamed.status_code == 200, renamed.text
        # Projects: managers describe them, only global admins rename them.
        assert c.patch(f"/api/projects/{lab.project}", json={"description": "x"}).status_code == 403
    with client(lab, VIEWER) as v:
        assert v.patch(f"/api/images/{image}", json={"name": "mine"}).status_code == 403
    with client(lab, MANAGER) as m:
        assert (
            m.patch(f"/api/projects/{lab.project}", json={"description": "FIB"}).status_code == 200
        )
        assert m.patch(f"/api/projects/{lab.project}", json={"name": "Mine"}).status_code == 403
    with lab.server.client() as admin:
        events = admin.get("/api/audit", params={"action": "image.update"}).json()["items"]
        assert any(e["object_id"] == image for e in events)


def test_a_deleted_image_is_gone_everywhere_until_restored_and_purge_removes_it_from_every_replica(
    lab: Lab,
) -> None:
    data = tiny_tiff(2)
    image = ingest(lab.server, lab.dataset, "to-delete.tif", data)
    # The same bytes in another dataset: one stored original, named by two files.
    kept = ingest(lab.server, lab.second_dataset, "same-bytes.tif", data)
    primary, replica = lab.stores
    for store in lab.stores:
        assert objects_of(store, image), f"no objects of the image on {store}"
    with client(lab, CONTRIBUTOR) as c:
        file_id = c.get(f"/api/images/{image}").json()["file_ids"][0]
        sha256 = c.get(f"/api/files/{file_id}").json()["sha256"]
    for store in lab.stores:
        assert (store / "raw" / sha256).is_file()

    with client(lab, MANAGER) as m:
        assert m.delete(f"/api/images/{image}").status_code == 204
        # Gone from everything a member can reach: 404, listings, search, viewers, downloads.
        with client(lab, VIEWER) as v:
            assert v.get(f"/api/images/{image}").status_code == 404
            listed = v.get(f"/api/datasets/{lab.dataset}/images").json()["items"]
            assert image not in [i["id"] for i in listed]
            assert image not in [i["id"] for i in v.get("/api/images").json()["items"]]
            assert v.get(f"/iiif/3/{image}/info.json").status_code == 404
            assert v.get(f"/zarr/{image}/.zattrs").status_code == 404
            assert v.get(f"/api/files/{file_id}/download").status_code == 404
            assert v.get(f"/api/images/{kept}").status_code == 200
            assert v.get("/api/trash").json() == []  # nothing they manage
        entries = m.get("/api/trash", params={"project_id": lab.project}).json()
        (entry,) = [e for e in entries if e["id"] == image]
        assert (entry["kind"], entry["deleted_by"], entry["dataset_id"]) == (
            "image",
            MANAGER,
            lab.dataset,
        )
        deleted = datetime.fromisoformat(entry["deleted_at"])
        assert datetime.fromisoformat(entry["purge_at"]) - deleted == timedelta(days=30)

        assert m.post(f"/api/trash/image/{image}/restore").status_code == 204
        assert m.get(f"/api/images/{image}").status_code == 200
        assert m.get(f"/api/files/{file_id}/download").status_code == 200
        assert image not in [e["id"] for e in m.get("/api/trash").json()]

        assert m.delete(f"/api/images/{image}").status_code == 204
        purged = m.post(f"/api/trash/image/{image}/purge")
        assert purged.status_code == 200, purged.text
        assert purged.json()["objects"] > 0
        # The original stays: the other dataset's file names the same bytes.
        assert purged.json()["originals"] == 0
        assert m.post(f"/api/trash/image/{image}/restore").status_code == 404
    for store in (primary, replica):
        assert objects_of(store, image) == [], f"objects of the purged image left on {store}"
        assert (store / "raw" / sha256).is_file()
        assert objects_of(store, kept)
    with lab.server.client() as admin:
        events = admin.get("/api/audit", params={"action": "image.purge"}).json()["items"]
        assert any(e["object_id"] == image for e in events)

    # The last file naming the bytes goes: so does the original, from both stores.
    with client(lab, MANAGER) as m:
        assert m.delete(f"/api/images/{kept}").status_code == 204
        assert m.post(f"/api/trash/image/{kept}/purge").json()["originals"] == 1
    for store in (primary, replica):
        assert not (store / "raw" / sha256).exists()
        assert objects_of(store, kept) == []


def test_contributors_delete_only_images_they_uploaded_and_only_managers_restore(lab: Lab) -> None:
    image = ingest(lab.server, lab.dataset, "mine.tif", tiny_tiff(3))
    with client(lab, VIEWER) as v:
        assert v.delete(f"/api/images/{image}").status_code == 403
    with client(lab, OTHER_CONTRIBUTOR) as other:
        assert other.delete(f"/api/images/{image}").status_code == 403
    with client(lab, CONTRIBUTOR) as c:
        assert c.delete(f"/api/images/{image}").status_code == 204
        assert c.post(f"/api/trash/image/{image}/restore").status_code == 403
        assert c.delete(f"/api/datasets/{lab.dataset}").status_code == 403
    with client(lab, MANAGER) as m:
        assert m.post(f"/api/trash/image/{image}/restore").status_code == 204


def test_a_legal_hold_blocks_deletion_and_purge(lab: Lab) -> None:
    image = ingest(lab.server, lab.dataset, "evidence.tif", tiny_tiff(4))
    with client(lab, MANAGER) as m:
        assert m.delete(f"/api/images/{image}").status_code == 204
        # Only a global admin sets the hold.
        assert m.patch(f"/api/projects/{lab.project}", json={"legal_hold": True}).status_code == 403
        with lab.server.client() as admin:
            held = admin.patch(f"/api/projects/{lab.project}", json={"legal_hold": True})
            assert held.status_code == 200 and held.json()["legal_hold"] is True
            try:
                assert m.post(f"/api/trash/image/{image}/purge").status_code == 409
                assert m.delete(f"/api/datasets/{lab.second_dataset}").status_code == 409
                assert m.delete(f"/api/projects/{lab.project}").status_code == 409
                (entry,) = [e for e in m.get("/api/trash").json() if e["id"] == image]
                assert entry["legal_hold"] is True
                assert m.post(f"/api/trash/image/{image}/restore").status_code == 204
            finally:
                admin.patch(f"/api/projects/{lab.project}", json={"legal_hold": False})


def test_images_and_datasets_move_with_their_originals_within_quotas(lab: Lab) -> None:
    image = ingest(lab.server, lab.dataset, "wanderer.tif", tiny_tiff(5))
    with client(lab, CONTRIBUTOR) as c:
        moved = c.post(f"/api/images/{image}/move", json={"dataset_id": lab.second_dataset})
        assert moved.status_code == 200, moved.text
        shown = c.get(f"/api/images/{image}").json()
        assert shown["dataset_id"] == lab.second_dataset
        original = c.get(f"/api/files/{shown['file_ids'][0]}").json()
        assert original["dataset_id"] == lab.second_dataset
        # Between projects only a manager of both moves things.
        across = c.post(f"/api/images/{image}/move", json={"dataset_id": lab.other_dataset})
        assert across.status_code == 404  # the contributor cannot see the other project
    with client(lab, MANAGER) as m:
        made = m.post(f"/api/projects/{lab.project}/datasets", json={"name": "Travelling"})
        travelling = _created(made)
    ingest(lab.server, travelling, "suitcase.tif", tiny_tiff(6))
    with lab.server.client() as admin, client(lab, MANAGER) as m:
        admin.patch(f"/api/projects/{lab.other_project}", json={"quota_bytes": 10})
        full = m.post(f"/api/datasets/{travelling}/move", json={"project_id": lab.other_project})
        assert full.status_code == 507, full.text
        admin.patch(f"/api/projects/{lab.other_project}", json={"quota_bytes": None})
        moved = m.post(f"/api/datasets/{travelling}/move", json={"project_id": lab.other_project})
        assert moved.status_code == 200, moved.text
        assert moved.json()["project_id"] == lab.other_project
        events = admin.get("/api/audit", params={"action": "dataset.move"}).json()["items"]
        assert {e["project_id"] for e in events if e["object_id"] == travelling} == {
            lab.project,
            lab.other_project,
        }
    with client(lab, CONTRIBUTOR) as c:
        assert c.get(f"/api/datasets/{travelling}").status_code == 404


def test_the_server_purges_what_outlived_the_retention(lab: Lab) -> None:
    from allmicro_data.catalogue.models import utcnow
    from allmicro_data.lifecycle import purge_expired
    from allmicro_data.services import Services
    from allmicro_data.settings import Settings

    image = ingest(lab.server, lab.dataset, "old.tif", tiny_tiff(7))
    with client(lab, MANAGER) as m:
        assert m.delete(f"/api/images/{image}").status_code == 204
    env = lab.server.env
    settings = Settings(
        data_dir=Path(env["ALLMICRO_DATA_DIR"]),
        database_url=env["ALLMICRO_DATABASE_URL"],
        storage_url=env["ALLMICRO_STORAGE_URL"],
        replica_urls=json.loads(env["ALLMICRO_REPLICA_URLS"]),
    )
    services = Services.from_settings(settings)
    try:
        # Not yet: the retention has 30 days to run.
        assert purge_expired(services.sessions, services.store, 30) == 0
        assert objects_of(lab.stores[1], image)
        later = utcnow() + timedelta(days=31)
        assert purge_expired(services.sessions, services.store, 30, now=later) >= 1
    finally:
        services.close()
    for store in lab.stores:
        assert objects_of(store, image) == []
    with lab.server.client() as admin:
        events = admin.get("/api/audit", params={"action": "image.purge"}).json()["items"]
        (event,) = [e for e in events if e["object_id"] == image]
        assert event["actor"] == "system:trash-retention"


def test_a_deleted_dataset_takes_its_images_along_and_comes_back_with_them(lab: Lab) -> None:
    with client(lab, MANAGER) as m:
        dataset = _created(m.post(f"/api/projects/{lab.project}/datasets", json={"name": "Gone"}))
    image = ingest(lab.server, dataset, "inside.tif", tiny_tiff(8))
    with client(lab, MANAGER) as m:
        link = m.post(f"/api/datasets/{dataset}/share-links", json={})
        assert link.status_code == 201, link.text
        shared = f"/api/share/{link.json()['token']}"
        assert httpx.get(f"{lab.server.url}{shared}", verify=TLS).status_code == 200
        assert m.delete(f"/api/datasets/{dataset}").status_code == 204
        assert m.get(f"/api/datasets/{dataset}").status_code == 404
        assert m.get(f"/api/images/{image}").status_code == 404
        # A share link to it answers as an unknown one.
        assert httpx.get(f"{lab.server.url}{shared}", verify=TLS).status_code == 404
        listed = m.get(f"/api/projects/{lab.project}/datasets").json()["items"]
        assert dataset not in [d["id"] for d in listed]
        trash = m.get("/api/trash", params={"project_id": lab.project}).json()
        assert [e["kind"] for e in trash if e["id"] == dataset] == ["dataset"]
        assert image not in [e["id"] for e in trash]
        assert m.post(f"/api/trash/dataset/{dataset}/restore").status_code == 204
        assert m.get(f"/api/images/{image}").status_code == 200
        assert httpx.get(f"{lab.server.url}{shared}", verify=TLS).status_code == 200


def test_uploading_a_trashed_original_again_brings_its_image_back(lab: Lab) -> None:
    data = tiny_tiff(9)
    image = ingest(lab.server, lab.dataset, "again.tif", data)
    with client(lab, CONTRIBUTOR) as c:
        assert c.delete(f"/api/images/{image}").status_code == 204
        assert c.get(f"/api/images/{image}").status_code == 404
        again = upload(c, lab.dataset, "again.tif", data)
        assert again["already_present"] is True
        assert c.get(f"/api/images/{image}").status_code == 200
        assert c.get(f"/api/files/{again['file_id']}/download").content == data
