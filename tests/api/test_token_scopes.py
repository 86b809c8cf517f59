"""Token scopes on the whole route table: what one project manager may do on every route of the
server with a browser session, a password (bearer) token, a `read` token and an `upload` token.

The table below holds a decision for every route; a route added without one, or a decision for a
route that no longer exists, fails the test. Decisions:
- sessions and password tokens carry the user's full rights;
- a `read` token reads what its user may read (manager-only reads included, and capability URLs:
  a read-only grant no wider than the token, which dies with it), and changes nothing;
- an `upload` token creates uploads into datasets its user may contribute to (tus, or the one-shot
  upload), follows those uploads and their jobs, sees the datasets it may upload into (the agent
  checks its target with GET /api/datasets/{id}), reads /api/me, and may sign itself out;
- account management (tokens, password, audit) needs a session or a password token; admin routes
  need an admin's session or password token, never a personal token.
"""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile
from fastapi.routing import iter_route_contexts

from tests.api.test_end_to_end import upload, wait_for_job
from tests.conftest import TLS, LiveServer

PASSWORD = "scope matrix password 77"
KINDS = ("session", "password", "read", "upload")

# What each kind of credential may do on a route of each class; True: succeeds (< 400).
ANY = {"session": True, "password": True, "read": True, "upload": True}
READ = {"session": True, "password": True, "read": True, "upload": False}
UPLOAD = {"session": True, "password": True, "read": False, "upload": True}
FULL = {"session": True, "password": True, "read": False, "upload": False}
ADMIN = {"session": False, "password": False, "read": False, "upload": False}
# tus takes a session only with its CSRF token in X-CSRF-Token, as the dataset page's uploader
# and the session credential here send it; a cookie alone gets 401 (test_browser_upload.py).
TUS = {"session": True, "password": True, "read": False, "upload": True}
TUS_STATE = {"session": True, "password": True, "read": True, "upload": True}
PUBLIC: dict[str, bool | None] = {}  # the answer does not depend on the credential at all


@dataclass
class Credential:
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class World:
    server: LiveServer
    admin: httpx.Client
    email: str
    ids: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, Credential] = field(default_factory=dict)

    def client(self, credential: Credential) -> httpx.Client:
        # A client per request: a response's cookies (a new sign-in) must not change the next.
        return httpx.Client(
            base_url=self.server.url,
            headers=credential.headers,
            cookies=credential.cookies,
            timeout=60,
            follow_redirects=False,
            verify=TLS,
        )

    def fresh(self, kind: str) -> Credential:
        """A new credential of a kind, for a request that ends it (logout)."""
        if kind == "session":
            return session_credential(self.server, self.email)
        if kind == "password":
            token = httpx.post(
                f"{self.server.url}/api/auth/token",
                data={"username": self.email, "password": PASSWORD},
                timeout=30,
                verify=TLS,
            ).json()["access_token"]
            return Credential(headers={"Authorization": f"Bearer {token}"})
        return personal_token(self, kind)


def session_credential(server: LiveServer, email: str) -> Credential:
    with httpx.Client(base_url=server.url, timeout=30, verify=TLS) as browser:
        signed_in = browser.post("/api/auth/login", data={"username": email, "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        return Credential(
            headers={"X-CSRF-Token": signed_in.json()["csrf_token"]},
            cookies=dict(browser.cookies.items()),
        )


def personal_token(world: World, scope: str) -> Credential:
    with world.client(world.credentials["session"]) as browser:
        made = browser.post("/api/tokens", json={"name": f"PC {scope}", "scope": scope})
        assert made.status_code == 201, made.text
    return Credential(headers={"Authorization": f"Bearer {made.json()['token']}"})


def tiny_tiff() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.arange(48 * 40, dtype=np.uint16).reshape(48, 40))
    return buffer.getvalue()


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def _metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def tus_headers(dataset_id: str) -> dict[str, str]:
    return {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": "10",
        "Upload-Metadata": _metadata(filename=f"{secrets.token_hex(4)}.bin", dataset_id=dataset_id),
    }


def build_world(server: LiveServer) -> World:
    admin = server.client()
    tag = secrets.token_hex(3)
    email = f"scopes-{tag}@example.org"
    world = World(server=server, admin=admin, email=email)
    ids = world.ids
    ids["org"] = _ok(
        admin.post("/api/organisations", json={"name": f"Scopes {tag}", "kind": "partner"})
    )["id"]
    ids["user"] = _ok(
        admin.post(
            "/api/users", json={"email": email, "organisation_id": ids["org"], "password": PASSWORD}
        )
    )["id"]
    ids["project"] = _ok(admin.post("/api/projects", json={"name": f"Scopes {tag}"}))["id"]
    ids["other-project"] = _ok(admin.post("/api/projects", json={"name": f"Viewed {tag}"}))["id"]
    _ok(
        admin.post(
            f"/api/projects/{ids['project']}/members",
            json={"user_id": ids["user"], "role": "manager"},
        )
    )
    _ok(
        admin.post(
            f"/api/projects/{ids['other-project']}/members",
            json={"user_id": ids["user"], "role": "viewer"},
        )
    )
    ids["dataset"] = _ok(
        admin.post(f"/api/projects/{ids['project']}/datasets", json={"name": "results"})
    )["id"]
    ids["viewed-dataset"] = _ok(
        admin.post(f"/api/projects/{ids['other-project']}/datasets", json={"name": "viewed"})
    )["id"]
    uploaded = upload(admin, ids["dataset"], "grain.tif", tiny_tiff())
    job = wait_for_job(admin, uploaded["job_id"])
    assert job["status"] == "succeeded", job
    ids["file"] = uploaded["file_id"]
    ids["admin-job"] = uploaded["job_id"]
    (ids["image"],) = job["image_ids"]

    world.credentials["session"] = session_credential(server, email)
    world.credentials["password"] = world.fresh("password")
    world.credentials["read"] = personal_token(world, "read")
    world.credentials["upload"] = personal_token(world, "upload")
    with world.client(world.credentials["upload"]) as agent:
        mine = upload(agent, ids["dataset"], "agent.bin", secrets.token_bytes(64))
    ids["job"] = mine["job_id"]
    ids["upload"] = new_upload(world)
    with world.client(world.credentials["session"]) as browser:
        link = _ok(browser.post(f"/api/datasets/{ids['dataset']}/share-links", json={}))
        ids["share"] = link["token"]
        capability = _ok(browser.post(f"/api/images/{ids['image']}/capabilities", json={}))
        ids["capability"] = capability["url"].rstrip("/").rsplit("/", 1)[-1]
    return world


def new_upload(world: World) -> str:
    """A tus upload of the manager's, created with their password token."""
    with world.client(world.credentials["password"]) as client:
        created = client.post("/api/uploads/", headers=tus_headers(world.ids["dataset"]))
    assert created.status_code == 201, created.text
    return created.headers["location"].rstrip("/").rsplit("/", 1)[-1]


def new_spare_user(world: World) -> str:
    org = world.ids["org"]
    body = {"email": f"spare-{secrets.token_hex(4)}@example.org", "organisation_id": org}
    return str(_ok(world.admin.post("/api/users", json={**body, "password": PASSWORD}))["id"])


def new_membership(world: World) -> str:
    body = {"user_id": new_spare_user(world), "role": "viewer"}
    made = world.admin.post(f"/api/projects/{world.ids['project']}/members", json=body)
    return str(_ok(made)["id"])


def new_invitation(world: World) -> str:
    body = {"email": f"invited-{secrets.token_hex(4)}@example.org", "role": "viewer"}
    with world.client(world.credentials["session"]) as browser:
        made = browser.post(f"/api/projects/{world.ids['project']}/members", json=body)
    return str(_ok(made)["id"])


def new_link(world: World) -> str:
    made = world.admin.post(f"/api/datasets/{world.ids['dataset']}/share-links", json={})
    return str(_ok(made)["id"])


def new_token(world: World) -> str:
    with world.client(world.credentials["session"]) as browser:
        made = browser.post("/api/tokens", json={"name": "spare", "scope": "read"})
    return str(_ok(made)["id"])


Url = str | Callable[[World], str]
Body = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    may: dict[str, bool | None]
    url: Url
    body: Body | None = None
    ends_credential: bool = False  # the request ends the credential it is sent with
    # A refused request of an allowed credential that still proves it passed the scope check.
    allowed_status: frozenset[int] = frozenset()


def _name(w: World | None = None) -> dict[str, Any]:
    return {"json": {"name": f"n-{secrets.token_hex(4)}", "description": "x"}}


ROUTES: dict[tuple[str, str], Case] = {}


def decide(methods: str, path: str, case: Case) -> None:
    for method in methods.split():
        ROUTES[(method, path)] = case


P, D, I, F = "{project_id}", "{dataset_id}", "{image_id}", "{file_id}"  # noqa: E741


def _fill(template: str) -> Callable[[World], str]:
    def url(world: World) -> str:
        ids = world.ids
        return (
            template.replace(P, ids["project"])
            .replace(D, ids["dataset"])
            .replace(I, ids["image"])
            .replace(F, ids["file"])
            .replace("{job_id}", ids["job"])
            .replace("{user_id}", ids["user"])
            .replace("{organisation_id}", ids["org"])
            .replace("{share}", ids["share"])
            .replace("{capability}", ids["capability"])
            .replace("{upload}", ids["upload"])
        )

    return url


def same(path: str, url: str | None = None, body: Body | None = None) -> Case:
    return Case(PUBLIC, _fill(url or path), body)


# Documentation, health, sign-in, shared views: the same for every credential.
for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
    decide("GET HEAD", path, same(path))
decide("GET", "/healthz", same("/healthz"))
decide("GET", "/metrics", same("/metrics"))  # admins only; this manager is none


def sign_in(w: World) -> dict[str, Any]:
    return {"data": {"username": w.email, "password": PASSWORD}}


decide("POST", "/api/auth/token", same("/api/auth/token", body=sign_in))
decide("POST", "/api/auth/login", same("/api/auth/login", body=sign_in))
decide("POST", "/login", same("/login", body=sign_in))
decide("GET", "/", same("/"))
decide("GET", "/login", same("/login"))
# Institutional sign-in (helper "login"): OpenID Connect is off on this server (a 404 page),
# and its callback refuses a sign-in the browser did not start: the same for every credential.
decide("GET", "/login/oidc", same("/login/oidc"))
decide("GET", "/login/oidc/callback", same("/login/oidc/callback"))
decide("GET", "/language/{code}", same("/language/{code}", "/language/it"))
decide("GET", "/static", same("/static", "/static/app.css"))
decide("GET", "/api/share/{token}", same("", "/api/share/{share}"))
for suffix in ("images", "files", "download.zip"):
    decide(
        "GET",
        f"/api/share/{{token}}/datasets/{D}/{suffix}",
        same("", f"/api/share/{{share}}/datasets/{D}/{suffix}"),
    )
decide(
    "GET",
    f"/api/share/{{token}}/files/{F}/download",
    same("", f"/api/share/{{share}}/files/{F}/download"),
)
decide(
    "GET",
    f"/api/share/{{token}}/images/{I}/tiles/{{level}}/{{ty}}/{{tx}}.png",
    same("", f"/api/share/{{share}}/images/{I}/tiles/0/0/0.png"),
)
decide("GET HEAD", "/zarr/c/{token}/{path:path}", same("", "/zarr/c/{capability}/.zattrs"))
decide("GET", f"/iiif/3/{I}", same(f"/iiif/3/{I}"))  # a redirect to info.json
for path in ("/api/uploads/", "/api/uploads"):
    decide("OPTIONS", path, same(path))
decide("OPTIONS", "/api/uploads/{upload_id}", same("", "/api/uploads/{upload}"))

# Who am I, and signing out (each kind ends itself).
decide("GET", "/api/me", Case(ANY, "/api/me"))
decide("POST", "/api/auth/logout", Case(ANY, "/api/auth/logout", ends_credential=True))
decide("POST", "/logout", Case(ANY, "/logout", ends_credential=True))

# Account management.
decide(
    "POST",
    "/api/me/password",
    Case(
        FULL,
        "/api/me/password",
        lambda w: {"json": {"current_password": "not it", "new_password": "x" * 20}},
        allowed_status=frozenset({422}),  # the wrong current password: past the scope check
    ),
)
decide("GET", "/api/tokens", Case(FULL, "/api/tokens"))
decide(
    "POST",
    "/api/tokens",
    Case(FULL, "/api/tokens", lambda w: {"json": {"name": "t", "scope": "read"}}),
)
decide("DELETE", "/api/tokens/{token_id}", Case(FULL, lambda w: f"/api/tokens/{new_token(w)}"))
decide("GET", "/api/audit", Case(FULL, "/api/audit"))
decide("GET", "/api/audit.csv", Case(FULL, "/api/audit.csv"))


# Administration.
def org_body(w: World) -> dict[str, Any]:
    return {"json": {"name": f"o-{secrets.token_hex(4)}", "kind": "company"}}


decide("POST", "/api/organisations", Case(ADMIN, "/api/organisations", org_body))
decide("GET", "/api/users", Case(ADMIN, "/api/users"))
decide(
    "POST",
    "/api/users",
    Case(
        ADMIN,
        "/api/users",
        lambda w: {
            "json": {
                "email": f"u-{secrets.token_hex(4)}@example.org",
                "organisation_id": w.ids["org"],
                "password": PASSWORD,
            }
        },
    ),
)
decide(
    "PATCH",
    "/api/users/{user_id}",
    Case(ADMIN, _fill("/api/users/{user_id}"), lambda w: {"json": {"display_name": "x"}}),
)
decide(
    "POST",
    "/api/users/{user_id}/password",
    Case(
        ADMIN,
        _fill("/api/users/{user_id}/password"),
        lambda w: {"json": {"new_password": "another long password"}},
    ),
)
decide("POST", "/api/projects", Case(ADMIN, "/api/projects", _name))
decide("GET", "/api/admin/storage/scrubs", Case(ADMIN, "/api/admin/storage/scrubs"))
decide(
    "GET",
    "/api/admin/storage/scrubs/{run_id}",
    Case(ADMIN, "/api/admin/storage/scrubs/00000000-0000-0000-0000-000000000000"),
)
decide(
    "POST",
    "/api/admin/storage/scrubs",
    Case(ADMIN, "/api/admin/storage/scrubs", lambda w: {"json": {}}),
)
decide("GET", "/api/admin/storage/replicas", Case(ADMIN, "/api/admin/storage/replicas"))

# Reading the catalogue, originals, metadata, pictures and pyramids.
for path in (
    "/api/organisations",
    "/api/organisations/{organisation_id}",
    "/api/users/{user_id}",
    "/api/projects",
    f"/api/projects/{P}",
    f"/api/projects/{P}/members",
    f"/api/projects/{P}/invitations",
    f"/api/projects/{P}/datasets",
    f"/api/projects/{P}/share-links",
    f"/api/datasets/{D}/images",
    "/api/images",
    f"/api/images/{I}",
    f"/api/images/{I}/ome.xml",
    f"/api/files/{F}",
    f"/api/files/{F}/download",
    f"/api/datasets/{D}/download.zip",
    f"/api/datasets/{D}/metadata.json",
    f"/api/datasets/{D}/metadata.csv",
    f"/api/images/{I}/thumbnail.jpg",
    f"/api/images/{I}/display",
    "/projects",
    f"/projects/{P}",
    f"/datasets/{D}",
    "/search",
    f"/images/{I}",
    f"/images/{I}/ome-xml",
):
    decide("GET", path, Case(READ, _fill(path)))
decide(
    "GET",
    f"/api/images/{I}/tiles/{{level}}/{{ty}}/{{tx}}.png",
    Case(READ, _fill(f"/api/images/{I}/tiles/0/0/0.png")),
)
decide("GET HEAD", f"/iiif/3/{I}/info.json", Case(READ, _fill(f"/iiif/3/{I}/info.json")))
decide(
    "GET HEAD",
    f"/iiif/3/{I}/{{region}}/{{size}}/{{rotation}}/{{quality_format}}",
    Case(READ, _fill(f"/iiif/3/{I}/full/max/0/default.jpg")),
)
decide("GET HEAD", f"/zarr/{I}/{{path:path}}", Case(READ, _fill(f"/zarr/{I}/.zattrs")))
# Figures for reports (tests/web/test_figures.py): a rendered picture, read like the tiles.
decide(
    "GET", f"/api/images/{I}/figure", Case(READ, _fill(f"/api/images/{I}/figure?region=0,0,8,8"))
)
decide("GET", f"/datasets/{D}/table", Case(READ, _fill(f"/datasets/{D}/table")))
decide("GET", "/compare", Case(READ, _fill(f"/compare?images={I},{I}")))
decide(
    "POST",
    "/api/downloads/zip",
    Case(READ, "/api/downloads/zip", lambda w: {"json": {"file_ids": [w.ids["file"]]}}),
)
for path in (f"/api/images/{I}/capabilities", f"/api/datasets/{D}/capabilities"):
    decide("POST", path, Case(READ, _fill(path), lambda w: {"json": {}}))

# What an upload token sees: its target dataset, its uploads' jobs.
decide("GET", f"/api/datasets/{D}", Case(ANY, _fill(f"/api/datasets/{D}")))
decide("GET", "/api/jobs/{job_id}", Case(ANY, _fill("/api/jobs/{job_id}")))
decide("GET", f"/api/datasets/{D}/jobs", Case(ANY, _fill(f"/api/datasets/{D}/jobs")))


# IIIF (issue 17): capability URLs answer the same to everyone (the URL is the credential; the
# test's capability is an image's, so the dataset shapes answer 404); manifests and the physical
# dimensions service read like info.json (the test image has no pixel size: 404 past the check).
for suffix in ("", "/info.json", "/physdim", "/manifest", "/full/max/0/default.jpg"):
    route = "/{region}/{size}/{rotation}/{quality_format}" if "full" in suffix else suffix
    methods = "GET HEAD" if suffix in ("/info.json", "/full/max/0/default.jpg") else "GET"
    decide(methods, f"/iiif/3/c/{{token}}{route}", same("", f"/iiif/3/c/{{capability}}{suffix}"))
    if suffix != "/manifest":
        decide(
            methods,
            f"/iiif/3/c/{{token}}/{I}{route}",
            same("", f"/iiif/3/c/{{capability}}/{I}{suffix}"),
        )
decide("GET", f"/iiif/3/manifests/{D}", Case(READ, _fill(f"/iiif/3/manifests/{D}")))
# The IIIF Authorization Flow's probe answers 200 to all (the status is in the body); its
# pages are a browser's (the token page without its parameters: 400 for all); its logout ends
# the credential, like /logout.
decide("GET", f"/iiif/auth/2/probe/{I}", same(f"/iiif/auth/2/probe/{I}"))
for path in ("/iiif/auth/2/access", "/iiif/auth/2/token", "/iiif/auth/2/logout"):
    decide("GET", path, same(path))
decide("POST", "/iiif/auth/2/logout", Case(ANY, "/iiif/auth/2/logout", ends_credential=True))
decide(
    "GET",
    f"/iiif/3/{I}/physdim",
    Case(READ, _fill(f"/iiif/3/{I}/physdim"), allowed_status=frozenset({404})),
)


# Uploads.
def one_shot(w: World) -> dict[str, Any]:
    return {"files": {"file": (f"{secrets.token_hex(4)}.bin", secrets.token_bytes(32))}}


decide(
    "POST", f"/api/datasets/{D}/files", Case(UPLOAD, _fill(f"/api/datasets/{D}/files"), one_shot)
)
decide(
    "POST",
    f"/datasets/{D}/upload",
    Case(
        UPLOAD,
        _fill(f"/datasets/{D}/upload"),
        lambda w: {"files": {"upload": (f"{secrets.token_hex(4)}.bin", secrets.token_bytes(32))}},
    ),
)


def tus_create(w: World) -> dict[str, Any]:
    return {"headers": tus_headers(w.ids["dataset"])}


for path in ("/api/uploads/", "/api/uploads"):
    decide("POST", path, Case(TUS, path, tus_create))
decide(
    "HEAD",
    "/api/uploads/{upload_id}",
    Case(
        TUS_STATE, _fill("/api/uploads/{upload}"), lambda w: {"headers": {"Tus-Resumable": "1.0.0"}}
    ),
)


def patch(w: World) -> dict[str, Any]:
    return {
        "headers": {
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        "content": b"12345",
    }


decide(
    "PATCH", "/api/uploads/{upload_id}", Case(TUS, lambda w: f"/api/uploads/{new_upload(w)}", patch)
)
decide(
    "POST",
    "/api/uploads/{upload_id}",
    Case(
        TUS,
        lambda w: f"/api/uploads/{new_upload(w)}",
        lambda w: {
            **patch(w),
            "headers": {**patch(w)["headers"], "X-HTTP-Method-Override": "PATCH"},
        },
    ),
)
decide(
    "DELETE",
    "/api/uploads/{upload_id}",
    Case(
        TUS,
        lambda w: f"/api/uploads/{new_upload(w)}",
        lambda w: {"headers": {"Tus-Resumable": "1.0.0"}},
    ),
)

# Changing the catalogue, members and share links.
decide(
    "PATCH",
    f"/api/projects/{P}",
    Case(FULL, _fill(f"/api/projects/{P}"), lambda w: {"json": {"description": "x"}}),
)
decide(
    "PATCH",
    f"/api/datasets/{D}",
    Case(FULL, _fill(f"/api/datasets/{D}"), lambda w: {"json": {"description": "x"}}),
)
decide(
    "POST",
    f"/api/projects/{P}/datasets",
    Case(FULL, _fill(f"/api/projects/{P}/datasets"), _name),
)
decide(
    "POST",
    f"/api/projects/{P}/members",
    Case(
        FULL,
        _fill(f"/api/projects/{P}/members"),
        lambda w: {"json": {"user_id": new_spare_user(w), "role": "viewer"}},
    ),
)
decide(
    "DELETE",
    f"/api/projects/{P}/members/{{membership_id}}",
    Case(FULL, lambda w: f"/api/projects/{w.ids['project']}/members/{new_membership(w)}"),
)
decide(
    "DELETE",
    f"/api/projects/{P}/invitations/{{invitation_id}}",
    Case(FULL, lambda w: f"/api/projects/{w.ids['project']}/invitations/{new_invitation(w)}"),
)
for path in (f"/api/projects/{P}/share-links", f"/api/datasets/{D}/share-links"):
    decide("POST", path, Case(FULL, _fill(path), lambda w: {"json": {"label": "x"}}))
decide(
    "DELETE", "/api/share-links/{link_id}", Case(FULL, lambda w: f"/api/share-links/{new_link(w)}")
)


# The admin area (api/web/admin_pages.py) and the admin API it calls: the manager sees their
# projects' part with a session or a password token; organisations, users, tokens and storage
# are global admins'. Rerun and dismiss act on a failed upload of the manager's project (409 once
# it is queued again is past the scope check).
def failed_job(world: World) -> str:
    if "failed-job" not in world.ids:
        made = upload(world.admin, world.ids["dataset"], "broken.bin", secrets.token_bytes(64))
        assert wait_for_job(world.admin, made["job_id"])["status"] == "failed"
        world.ids["failed-job"] = made["job_id"]
    return world.ids["failed-job"]


CONFLICT = frozenset({409})
for path in ("/api/jobs/{job_id}/rerun", "/api/jobs/{job_id}/dismiss"):
    template = path.replace("{job_id}", "{failed}")
    decide(
        "POST",
        path,
        Case(FULL, lambda w, t=template: t.format(failed=failed_job(w)), allowed_status=CONFLICT),
    )
for path in ("/jobs/{job_id}/rerun", "/jobs/{job_id}/dismiss"):
    template = path.replace("{job_id}", "{failed}")
    decide(
        "POST",
        path,
        Case(FULL, lambda w, t=template: t.format(failed=failed_job(w)), allowed_status=CONFLICT),
    )
decide("GET", "/api/jobs", Case(FULL, "/api/jobs?status=failed"))
decide("GET", "/api/admin/usage", Case(FULL, "/api/admin/usage"))
decide(
    "PATCH",
    "/api/organisations/{organisation_id}",
    Case(ADMIN, _fill("/api/organisations/{organisation_id}"), lambda w: {"json": {}}),
)
decide("GET", "/api/users/{user_id}/tokens", Case(ADMIN, _fill("/api/users/{user_id}/tokens")))
decide(
    "DELETE",
    "/api/users/{user_id}/tokens/{token_id}",
    Case(ADMIN, lambda w: f"/api/users/{w.ids['user']}/tokens/{new_token(w)}"),
)
for path in ("/admin", "/admin/projects", f"/admin/projects/{P}", "/admin/audit", "/admin/jobs"):
    decide("GET", path, Case(FULL, _fill(path)))
decide("GET", "/admin/usage", Case(FULL, "/admin/usage"))
for path in (
    "/admin/organisations",
    "/admin/organisations/{organisation_id}",
    "/admin/users",
    "/admin/users/{user_id}",
    "/admin/storage",
):
    decide("GET", path, Case(ADMIN, _fill(path)))
for path in (
    "/admin/organisations",
    "/admin/organisations/{organisation_id}",
    "/admin/users",
    "/admin/users/{user_id}/password",
    f"/admin/projects/{P}/quota",
    "/admin/storage/scrub",
):
    decide("POST", path, Case(ADMIN, _fill(path)))
decide(
    "POST",
    "/admin/users/{user_id}",
    Case(ADMIN, _fill("/admin/users/{user_id}"), lambda w: {"data": {"change": "enable"}}),
)
decide(
    "POST",
    "/admin/users/{user_id}/tokens/{token_id}/revoke",
    Case(ADMIN, lambda w: f"/admin/users/{w.ids['user']}/tokens/{new_token(w)}/revoke"),
)
decide(
    "POST",
    f"/admin/projects/{P}/members",
    Case(
        FULL,
        _fill(f"/admin/projects/{P}/members"),
        lambda w: {"data": {"email": f"i-{secrets.token_hex(4)}@example.org", "role": "viewer"}},
    ),
)
decide(
    "POST",
    f"/admin/projects/{P}/members/{{membership_id}}/remove",
    Case(FULL, lambda w: f"/admin/projects/{w.ids['project']}/members/{new_membership(w)}/remove"),
)
decide(
    "POST",
    f"/admin/projects/{P}/invitations/{{invitation_id}}/withdraw",
    Case(
        FULL,
        lambda w: f"/admin/projects/{w.ids['project']}/invitations/{new_invitation(w)}/withdraw",
    ),
)


def route_table(data_dir: Path) -> set[tuple[str, str]]:
    """Every (method, path) the application serves, mounts included."""
    from allmicro_data.api.app import create_app
    from allmicro_data.settings import Settings

    app = create_app(Settings(data_dir=data_dir))
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = getattr(route, "path", None)
        assert path is not None, route
        for method in getattr(route, "methods", None) or {"GET"}:
            found.add((method, path))
    return found


# Result delivery (api/web/share_pages.py, helper "share"): a share link's pages are the same
# for every credential; the results page reads; the sharing page is a manager's and reads;
# creating, revoking and delivering change things. A delivery freezes its dataset: each one
# gets a dataset of its own.
def new_dataset(world: World) -> str:
    made = world.admin.post(f"/api/projects/{world.ids['project']}/datasets", json=_name()["json"])
    return str(_ok(made)["id"])


for path, url in (
    ("/share/{token}", "/share/{share}"),
    ("/share/{token}/unlock", "/share/{share}/unlock"),  # no form token: 400 for everyone
    (f"/share/{{token}}/images/{I}", f"/share/{{share}}/images/{I}"),
    (f"/share/{{token}}/iiif/{I}/info.json", f"/share/{{share}}/iiif/{I}/info.json"),
    (
        f"/share/{{token}}/iiif/{I}/{{region}}/{{size}}/{{rotation}}/{{quality_format}}",
        f"/share/{{share}}/iiif/{I}/full/64,/0/default.jpg",
    ),
    (f"/share/{{token}}/images/{I}/display", f"/share/{{share}}/images/{I}/display"),
    (f"/share/{{token}}/images/{I}/histogram", f"/share/{{share}}/images/{I}/histogram"),
    (f"/share/{{token}}/images/{I}/thumbnail.jpg", f"/share/{{share}}/images/{I}/thumbnail.jpg"),
    (f"/share/{{token}}/files/{F}", f"/share/{{share}}/files/{F}"),
    ("/share/{token}/download.zip", "/share/{share}/download.zip"),
    ("/share/{token}/metadata.{kind}", "/share/{share}/metadata.csv"),
    (f"/share/{{token}}/datasets/{D}/cover", f"/share/{{share}}/datasets/{D}/cover"),
):
    decide("POST" if path.endswith("/unlock") else "GET", path, same("", url))
NOT_DELIVERED = frozenset({404})  # the world's dataset is no delivery: past the scope check
decide(
    "GET",
    f"/datasets/{D}/delivery",
    Case(READ, _fill(f"/datasets/{D}/delivery"), allowed_status=NOT_DELIVERED),
)
decide("GET", f"/projects/{P}/results", Case(READ, _fill(f"/projects/{P}/results")))
decide("GET", f"/projects/{P}/sharing", Case(READ, _fill(f"/projects/{P}/sharing")))
decide(
    "POST",
    f"/projects/{P}/sharing/links",
    Case(FULL, _fill(f"/projects/{P}/sharing/links"), lambda w: {"data": {"label": "x"}}),
)
decide(
    "POST",
    f"/projects/{P}/sharing/links/{{link_id}}/revoke",
    Case(FULL, lambda w: f"/projects/{w.ids['project']}/sharing/links/{new_link(w)}/revoke"),
)
decide(
    "POST",
    f"/projects/{P}/sharing/deliveries/{D}",
    Case(FULL, lambda w: f"/projects/{w.ids['project']}/sharing/deliveries/{new_dataset(w)}"),
)
decide(
    "POST",
    f"/api/datasets/{D}/delivery",
    Case(FULL, lambda w: f"/api/datasets/{new_dataset(w)}/delivery"),
)


# The data lifecycle (api/routers/lifecycle.py, api/web/lifecycle_pages.py, helper
# "lifecycle"): renaming, annotating, moving (here into where it already is), deleting, the
# trash and its restore and purge change things; the move pages read. Each delete acts on a
# thing of its own: a spare image taken out of the trash first, a new dataset or project; each
# restore and purge on a dataset just deleted.
def lc_spare_image(w: World) -> str:
    if "lc-image" not in w.ids:
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, np.arange(48 * 40, dtype=np.uint16).reshape(48, 40)[::-1])
        made = upload(w.admin, w.ids["dataset"], "spare.tif", buffer.getvalue())
        job = wait_for_job(w.admin, made["job_id"])
        assert job["status"] == "succeeded", job
        (w.ids["lc-image"],) = job["image_ids"]
    w.admin.post(f"/api/trash/image/{w.ids['lc-image']}/restore")  # 404 when not in it
    return w.ids["lc-image"]


def lc_new_dataset(w: World) -> str:
    made = w.admin.post(f"/api/projects/{w.ids['project']}/datasets", json=_name()["json"])
    return str(_ok(made)["id"])


def lc_new_project(w: World) -> str:
    project = str(_ok(w.admin.post("/api/projects", json=_name()["json"]))["id"])
    body = {"user_id": w.ids["user"], "role": "manager"}
    _ok(w.admin.post(f"/api/projects/{project}/members", json=body))
    return project


def lc_trashed_dataset(w: World) -> str:
    dataset = lc_new_dataset(w)
    assert w.admin.delete(f"/api/datasets/{dataset}").status_code == 204
    return dataset


decide(
    "PATCH",
    f"/api/images/{I}",
    Case(FULL, _fill(f"/api/images/{I}"), lambda w: {"json": {"description": "x"}}),
)
for path in (f"/api/images/{I}/annotations", f"/api/datasets/{D}/annotations"):
    decide("PUT", path, Case(FULL, _fill(path), lambda w: {"json": {"tags": ["scoped"]}}))


# Measurements (helper "measure"): everyone who reads the image measures it and lists its ROIs;
# saving and removing ROIs are changes.
def roi_body(w: World) -> dict[str, Any]:
    return {"json": {"kind": "rectangle", "points": [[0, 0], [3, 3]]}}


def new_roi(w: World) -> str:
    return str(
        _ok(w.admin.post(f"/api/images/{w.ids['image']}/rois", json=roi_body(w)["json"]))["id"]
    )


for path in (f"/api/images/{I}/rois", f"/api/images/{I}/rois.csv"):
    decide("GET", path, Case(READ, _fill(path)))
decide(
    "GET",
    f"/api/images/{I}/profile",
    Case(READ, _fill(f"/api/images/{I}/profile?x0=0&y0=0&x1=3&y1=3")),
)
decide("POST", f"/api/images/{I}/measure", Case(READ, _fill(f"/api/images/{I}/measure"), roi_body))
decide("POST", f"/api/images/{I}/rois", Case(FULL, _fill(f"/api/images/{I}/rois"), roi_body))
decide(
    "DELETE",
    f"/api/images/{I}/rois/{{roi_id}}",
    Case(FULL, lambda w: f"/api/images/{w.ids['image']}/rois/{new_roi(w)}"),
)
decide(
    "POST",
    f"/api/images/{I}/move",
    Case(
        FULL, _fill(f"/api/images/{I}/move"), lambda w: {"json": {"dataset_id": w.ids["dataset"]}}
    ),
)
decide(
    "POST",
    f"/api/datasets/{D}/move",
    Case(
        FULL, _fill(f"/api/datasets/{D}/move"), lambda w: {"json": {"project_id": w.ids["project"]}}
    ),
)
decide("DELETE", f"/api/images/{I}", Case(FULL, lambda w: f"/api/images/{lc_spare_image(w)}"))
decide("DELETE", f"/api/datasets/{D}", Case(FULL, lambda w: f"/api/datasets/{lc_new_dataset(w)}"))
decide("DELETE", f"/api/projects/{P}", Case(FULL, lambda w: f"/api/projects/{lc_new_project(w)}"))
decide("GET", "/api/trash", Case(FULL, "/api/trash"))
decide("GET", "/trash", Case(FULL, "/trash"))
for action in ("restore", "purge"):
    for prefix in ("/api/trash", "/trash"):
        decide(
            "POST",
            f"{prefix}/{{kind}}/{{object_id}}/{action}",
            Case(
                FULL,
                lambda w, p=prefix, a=action: f"{p}/dataset/{lc_trashed_dataset(w)}/{a}",
            ),
        )
for path in (f"/images/{I}/move", f"/datasets/{D}/move"):
    decide("GET", path, Case(READ, _fill(path)))
decide(
    "POST",
    f"/images/{I}/details",
    Case(FULL, _fill(f"/images/{I}/details"), lambda w: {"data": {"tags": "scoped, web"}}),
)
decide(
    "POST",
    f"/datasets/{D}/details",
    Case(FULL, _fill(f"/datasets/{D}/details"), lambda w: {"data": {"pairs": "batch = 7"}}),
)
decide(
    "POST",
    f"/projects/{P}/details",
    Case(FULL, _fill(f"/projects/{P}/details"), lambda w: {"data": {"description": "x"}}),
)
decide(
    "POST",
    f"/projects/{P}/legal-hold",
    Case(ADMIN, _fill(f"/projects/{P}/legal-hold"), lambda w: {"data": {"hold": "false"}}),
)
decide(
    "POST",
    f"/images/{I}/move",
    Case(FULL, _fill(f"/images/{I}/move"), lambda w: {"data": {"target": w.ids["dataset"]}}),
)
decide(
    "POST",
    f"/datasets/{D}/move",
    Case(FULL, _fill(f"/datasets/{D}/move"), lambda w: {"data": {"target": w.ids["project"]}}),
)
decide("POST", f"/images/{I}/delete", Case(FULL, lambda w: f"/images/{lc_spare_image(w)}/delete"))
decide(
    "POST", f"/datasets/{D}/delete", Case(FULL, lambda w: f"/datasets/{lc_new_dataset(w)}/delete")
)
decide(
    "POST", f"/projects/{P}/delete", Case(FULL, lambda w: f"/projects/{lc_new_project(w)}/delete")
)

# Display: the histogram reads the image; saved renderings are read by readers and written
# (the image's default by contributors, one's own by anyone who sees it) with full rights.
decide("GET", f"/api/images/{I}/histogram", Case(READ, _fill(f"/api/images/{I}/histogram")))
for path in (f"/api/images/{I}/rendering", f"/api/images/{I}/rendering/mine"):
    decide("GET", path, Case(READ, _fill(path)))
    decide("PUT", path, Case(FULL, _fill(path), lambda w: {"json": {"gamma": 1.5}}))
    decide("DELETE", path, Case(FULL, _fill(path)))


def test_every_route_has_a_scope_decision(tmp_path: Path) -> None:
    served = route_table(tmp_path)
    assert served - set(ROUTES) == set(), "routes without a decision in ROUTES"
    assert set(ROUTES) - served == set(), "decisions for routes that no longer exist"


@pytest.fixture(scope="module")
def world(shared_server: LiveServer) -> World:
    return build_world(shared_server)


def _send(world: World, kind: str, method: str, case: Case) -> httpx.Response:
    credential = world.fresh(kind) if case.ends_credential else world.credentials[kind]
    url = case.url if isinstance(case.url, str) else case.url(world)
    kwargs = case.body(world) if case.body else {}
    with world.client(credential) as client:
        response = client.request(method, url, **kwargs)
    if case.ends_credential and response.status_code < 400:
        with world.client(credential) as client:
            assert client.get("/api/me").status_code == 401, (kind, method, url)
    return response


def test_each_credential_does_exactly_what_its_scope_allows(world: World) -> None:
    wrong: list[str] = []
    for (method, path), case in sorted(ROUTES.items(), key=lambda r: (r[0][1], r[0][0])):
        answers = {kind: _send(world, kind, method, case) for kind in KINDS}
        codes = {kind: r.status_code for kind, r in answers.items()}
        if case.may is PUBLIC:
            if len(set(codes.values())) != 1:
                wrong.append(f"{method} {path}: differs by credential {codes}")
            continue
        for kind, allowed in case.may.items():
            code = codes[kind]
            if allowed is None:
                ok = code == 401
            elif allowed:
                ok = code < 400 or code in case.allowed_status
            else:
                ok = code in (403, 404)
            if not ok:
                detail = answers[kind].text[:200]
                wrong.append(f"{method} {path} as {kind}: {code} ({detail})")
    assert not wrong, "\n".join(wrong)


def test_an_upload_token_uploads_only_where_its_user_contributes(world: World) -> None:
    ids = world.ids
    with world.client(world.credentials["upload"]) as agent:
        # A project its user only views: no upload, by either way.
        refused = agent.post(
            f"/api/datasets/{ids['viewed-dataset']}/files",
            files={"file": ("x.bin", secrets.token_bytes(16))},
        )
        assert refused.status_code == 404  # to an upload token, the dataset is not there
        tus = agent.post("/api/uploads/", headers=tus_headers(ids["viewed-dataset"]))
        assert tus.status_code == 404
        # Nor does it see that dataset, or jobs it did not start.
        assert agent.get(f"/api/datasets/{ids['viewed-dataset']}").status_code == 404
        assert agent.get(f"/api/jobs/{ids['admin-job']}").status_code == 404
        listed = agent.get(f"/api/datasets/{ids['dataset']}/jobs").json()["items"]
        assert ids["admin-job"] not in {j["id"] for j in listed}
        assert ids["job"] in {j["id"] for j in listed}
