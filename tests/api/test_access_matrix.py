"""The authorisation matrix: a lead partner, a partner and two companies with pilot projects.

Company A must never learn anything about company B's data — not in lists, search counts,
details, downloads, zip selections, share links, the audit log or error messages — and every role
may do exactly what it allows.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile

from tests.api.test_end_to_end import upload, wait_for_job
from tests.conftest import TLS, LiveServer

PASSWORD = "matrix password 123"


def tiny_tiff(seed: int) -> bytes:
    buffer = io.BytesIO()
    data = np.random.default_rng(seed).integers(0, 4000, size=(64, 80), dtype=np.uint16)
    tifffile.imwrite(buffer, data)
    return buffer.getvalue()


@dataclass
class World:
    server: LiveServer
    admin: httpx.Client
    ids: dict[str, str] = field(default_factory=dict)
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, who: str) -> httpx.Client:
        if who not in self.clients:
            self.clients[who] = self.server.client(f"{who}@example.org", PASSWORD)
        return self.clients[who]


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def build_world(server: LiveServer) -> World:
    admin = server.client()
    world = World(server=server, admin=admin)
    ids = world.ids
    for key, name, kind in (
        ("lead", "AllMicro Lead", "lead_partner"),
        ("units", "Universita di Trieste", "partner"),
        ("acme", "Acme Coatings", "company"),
        ("beta", "Beta Alloys", "company"),
    ):
        ids[key] = _ok(admin.post("/api/organisations", json={"name": name, "kind": kind}))["id"]
    for who, org in (
        ("lead-staff", "lead"),
        ("units-viewer", "units"),
        ("acme-viewer", "acme"),
        ("acme-contrib", "acme"),
        ("beta-viewer", "beta"),
        ("beta-manager", "beta"),
    ):
        body = {"email": f"{who}@example.org", "organisation_id": ids[org], "password": PASSWORD}
        ids[who] = _ok(admin.post("/api/users", json=body))["id"]
    ids["research"] = _ok(admin.post("/api/projects", json={"name": "Shared research"}))["id"]
    for key, client_org, title in (
        ("pilot-a", "acme", "Acme pilot"),
        ("pilot-b", "beta", "Beta pilot"),
    ):
        ids[key] = _ok(
            admin.post(
                "/api/projects",
                json={"name": title, "kind": "pilot", "client_organisation_id": ids[client_org]},
            )
        )["id"]

    def member(project: str, role: str, **who: str) -> None:
        _ok(admin.post(f"/api/projects/{ids[project]}/members", json={"role": role, **who}))

    for project in ("research", "pilot-a", "pilot-b"):
        member(project, "manager", organisation_id=ids["lead"])
    member("research", "viewer", organisation_id=ids["units"])
    member("pilot-a", "viewer", organisation_id=ids["acme"])
    member("pilot-a", "contributor", email="acme-contrib@example.org")
    member("pilot-b", "viewer", organisation_id=ids["beta"])
    member("pilot-b", "manager", user_id=ids["beta-manager"])

    for project, dataset, seed, filename in (
        ("pilot-a", "ds-a", 1, "acme-wafer-crosssection.tif"),
        ("pilot-b", "ds-b", 2, "beta-alloy-grain.tif"),
        ("research", "ds-r", 3, "research-lamella.tif"),
    ):
        ids[dataset] = _ok(
            admin.post(
                f"/api/projects/{ids[project]}/datasets", json={"name": f"{dataset} results"}
            )
        )["id"]
        uploaded = upload(admin, ids[dataset], filename, tiny_tiff(seed))
        job = wait_for_job(admin, uploaded["job_id"])
        assert job["status"] == "succeeded", job
        ids[f"file-{dataset}"] = uploaded["file_id"]
        ids[f"job-{dataset}"] = uploaded["job_id"]
        (ids[f"image-{dataset}"],) = job["image_ids"]
    beta_link = _ok(
        world.client("beta-manager").post(
            f"/api/datasets/{ids['ds-b']}/share-links", json={"label": "for Beta's board"}
        )
    )
    ids["link-b"] = beta_link["id"]
    ids["link-b-token"] = beta_link["token"]
    return world


def b_urls(ids: dict[str, str]) -> list[tuple[str, str]]:
    """Every way to ask about company B's objects."""
    return [
        ("GET", f"/api/projects/{ids['pilot-b']}"),
        ("GET", f"/api/projects/{ids['pilot-b']}/datasets"),
        ("GET", f"/api/projects/{ids['pilot-b']}/members"),
        ("GET", f"/api/projects/{ids['pilot-b']}/share-links"),
        ("PATCH", f"/api/projects/{ids['pilot-b']}"),
        ("POST", f"/api/projects/{ids['pilot-b']}/datasets"),
        ("POST", f"/api/projects/{ids['pilot-b']}/share-links"),
        ("GET", f"/api/datasets/{ids['ds-b']}"),
        ("PATCH", f"/api/datasets/{ids['ds-b']}"),
        ("GET", f"/api/datasets/{ids['ds-b']}/images"),
        ("GET", f"/api/datasets/{ids['ds-b']}/jobs"),
        ("GET", f"/api/datasets/{ids['ds-b']}/download.zip"),
        ("GET", f"/api/datasets/{ids['ds-b']}/metadata.json"),
        ("GET", f"/api/datasets/{ids['ds-b']}/metadata.csv"),
        ("POST", f"/api/datasets/{ids['ds-b']}/share-links"),
        ("GET", f"/api/images/{ids['image-ds-b']}"),
        ("GET", f"/api/images/{ids['image-ds-b']}/ome.xml"),
        ("GET", f"/api/images/{ids['image-ds-b']}/tiles/0/0/0.png"),
        ("GET", f"/api/files/{ids['file-ds-b']}"),
        ("GET", f"/api/files/{ids['file-ds-b']}/download"),
        ("GET", f"/api/jobs/{ids['job-ds-b']}"),
        ("DELETE", f"/api/share-links/{ids['link-b']}"),
    ]


def _send(client: httpx.Client, method: str, url: str) -> httpx.Response:
    body: dict[str, Any] | None = (
        {"name": "x", "description": "x"} if method in ("POST", "PATCH") else None
    )
    return client.request(method, url, json=body)


def _masked(response: httpx.Response, object_id: str) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return {k: str(v).replace(object_id, "<id>") for k, v in body.items()}


@pytest.fixture(scope="module")
def world(shared_server: LiveServer) -> World:
    return build_world(shared_server)


def test_company_a_learns_nothing_about_company_b(world: World) -> None:
    ids = world.ids
    secrets_of_b = ("Beta pilot", "ds-b results", "beta-alloy-grain", "Beta Alloys", "board")
    for who in ("acme-viewer", "acme-contrib", "units-viewer"):
        client = world.client(who)
        for method, url in b_urls(ids):
            response = _send(client, method, url)
            assert response.status_code == 404, (who, method, url, response.status_code)
            assert response.headers["content-type"] == "application/problem+json"
            assert not any(s in response.text for s in secrets_of_b), (who, url, response.text)
            # The answer is the one a made-up id gets: nothing tells "exists" from "hidden".
            real_id = url.split("/")[3]
            fake = _send(client, method, url.replace(real_id, str(uuid.uuid4())))
            assert fake.status_code == 404
            assert _masked(response, real_id) == _masked(fake, fake.request.url.path.split("/")[3])

        # Lists and search counts.
        names = {p["name"] for p in client.get("/api/projects").json()["items"]}
        assert "Beta pilot" not in names
        for params in (
            {},
            {"q": "beta"},
            {"q": "alloy grain"},
            {"project_id": ids["pilot-b"]},
            {"dataset_id": ids["ds-b"]},
        ):
            found = client.get("/api/images", params=params).json()
            assert all(i["dataset_id"] != ids["ds-b"] for i in found["items"])
            if params:
                assert found["total"] == 0, (who, params)

        # A zip selection mixing in B's file fails whole, and says no more than a made-up id.
        mixed = client.post(
            "/api/downloads/zip", json={"file_ids": [ids["file-ds-a"], ids["file-ds-b"]]}
        )
        made_up = client.post("/api/downloads/zip", json={"file_ids": [str(uuid.uuid4())]})
        assert mixed.status_code == made_up.status_code == 404
        assert mixed.json() == made_up.json()

        # The audit log holds nothing of B's project for them.
        audit = client.get("/api/audit", params={"project_id": ids["pilot-b"]})
        assert audit.status_code == 200 and audit.json()["total"] == 0

    # What A does see: exactly its own pilot.
    acme = world.client("acme-viewer")
    assert [p["name"] for p in acme.get("/api/projects").json()["items"]] == ["Acme pilot"]
    assert acme.get("/api/images").json()["total"] == 1
    assert acme.get("/api/images", params={"q": "wafer"}).json()["total"] == 1
    assert acme.get(f"/api/files/{ids['file-ds-a']}/download").status_code == 200


def test_share_links_reach_only_their_dataset(world: World) -> None:
    ids = world.ids
    token = ids["link-b-token"]
    anonymous = httpx.Client(base_url=world.server.url, timeout=30, verify=TLS)
    view = anonymous.get(f"/api/share/{token}")
    assert view.status_code == 200
    assert [d["id"] for d in view.json()["datasets"]] == [ids["ds-b"]]
    files = anonymous.get(f"/api/share/{token}/datasets/{ids['ds-b']}/files").json()
    assert [f["id"] for f in files] == [ids["file-ds-b"]]
    assert anonymous.get(f"/api/share/{token}/files/{ids['file-ds-b']}/download").status_code == 200
    for url in (
        f"/api/share/{token}/files/{ids['file-ds-a']}/download",
        f"/api/share/{token}/datasets/{ids['ds-a']}/files",
        f"/api/share/{token}/datasets/{ids['ds-a']}/download.zip",
        f"/api/share/{token}/images/{ids['image-ds-a']}/tiles/0/0/0.png",
        f"/api/images/{ids['image-ds-b']}",
    ):
        assert anonymous.get(url).status_code in (401, 404), url
    # Only B's managers can revoke it; afterwards it is gone for everybody.
    assert (
        world.client("beta-viewer").delete(f"/api/share-links/{ids['link-b']}").status_code == 403
    )
    assert (
        world.client("beta-manager").delete(f"/api/share-links/{ids['link-b']}").status_code == 204
    )
    assert anonymous.get(f"/api/share/{token}").status_code == 404
    events = world.admin.get("/api/audit", params={"project_id": ids["pilot-b"]}).json()["items"]
    actions = {e["action"] for e in events}
    assert {"share.create", "share.use", "share.download", "share.revoke"} <= actions


def test_roles_allow_exactly_their_actions(world: World) -> None:
    ids = world.ids
    data = tiny_tiff(9)
    viewer = world.client("acme-viewer")
    contributor = world.client("acme-contrib")
    lead = world.client("lead-staff")

    def try_upload(client: httpx.Client, name: str) -> int:
        return client.post(
            f"/api/datasets/{ids['ds-a']}/files", files={"file": (name, data, "image/tiff")}
        ).status_code

    assert try_upload(viewer, "v.tif") == 403
    assert try_upload(contributor, "c.tif") == 201
    share = {"label": "x"}
    assert (
        contributor.post(f"/api/datasets/{ids['ds-a']}/share-links", json=share).status_code == 403
    )
    assert contributor.get(f"/api/projects/{ids['pilot-a']}/members").status_code == 403
    assert (
        viewer.patch(f"/api/datasets/{ids['ds-a']}", json={"description": "x"}).status_code == 403
    )
    assert (
        contributor.patch(f"/api/datasets/{ids['ds-a']}", json={"description": "ok"}).status_code
        == 200
    )
    assert lead.post(f"/api/datasets/{ids['ds-a']}/share-links", json=share).status_code == 201
    assert lead.get(f"/api/projects/{ids['pilot-a']}/members").status_code == 200
    # Non-admins manage no organisations, users or projects.
    assert viewer.post("/api/projects", json={"name": "mine"}).status_code == 403
    assert viewer.get("/api/users").status_code == 403
    assert (
        lead.post(
            "/api/users",
            json={"email": "x@y.z", "organisation_id": ids["lead"], "password": PASSWORD},
        ).status_code
        == 403
    )

    # Personal access tokens are limited to their scope.
    def pat(scope: str) -> httpx.Client:
        made = contributor.post("/api/tokens", json={"name": f"SEM PC {scope}", "scope": scope})
        assert made.status_code == 201
        return httpx.Client(
            base_url=world.server.url,
            headers={"Authorization": f"Bearer {made.json()['token']}"},
            timeout=30,
            verify=TLS,
        )

    read_only, uploader = pat("read"), pat("upload")
    assert try_upload(read_only, "r.tif") == 403
    assert read_only.get(f"/api/datasets/{ids['ds-a']}/images").status_code == 200
    assert try_upload(uploader, "u.tif") == 201
    assert uploader.post("/api/tokens", json={"name": "more", "scope": "upload"}).status_code == 403
    listed = contributor.get("/api/tokens").json()
    assert {t["name"] for t in listed} == {"SEM PC read", "SEM PC upload"}
    assert all("token" not in t for t in listed)
    revoked = next(t for t in listed if t["scope"] == "upload")
    assert contributor.delete(f"/api/tokens/{revoked['id']}").status_code == 204
    assert try_upload(uploader, "u2.tif") == 401
