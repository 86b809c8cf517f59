"""IIIF beyond the Image API's pixels: the Authorization Flow 2.0 over real HTTP (info.json's
services, the probe, the token page's postMessage payload, revocation by logout), the physical
dimensions service, JSON-LD content types, and Presentation 3.0 manifests (by bearer token and
through a dataset capability URL)."""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from iiif_prezi3 import Manifest

from tests.api.test_end_to_end import FEI, upload, wait_for_job
from tests.conftest import SAMPLES, TLS, LiveServer, PostgresDatabases, module_server

VIEWER = "http://viewer.example.org:8080"
EVIL = "https://evil.example.net"
IMAGE_LD = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
PRESENTATION_LD = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'
UNCALIBRATED = SAMPLES / "imagej" / "test_loading_image_saved_with_imageJ_no_scale.tif"
PASSWORD = "iiif viewer password 41"


@dataclass
class World:
    server: LiveServer
    admin: httpx.Client
    dataset: str
    calibrated: str  # scan_10.tif: the FEI image, with a pixel size
    uncalibrated: str  # scan_9.tif: no pixel size
    member: str  # e-mail of a viewer of the project
    outsider: str  # e-mail of a user of no project

    def browser(self, email: str) -> httpx.Client:
        """A browser session (cookies) of a user, as our sign-in page leaves it."""
        client = httpx.Client(
            base_url=self.server.url, timeout=30, follow_redirects=False, verify=TLS
        )
        signed_in = client.post("/api/auth/login", data={"username": email, "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        client.headers["X-CSRF-Token"] = signed_in.json()["csrf_token"]
        return client


@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    env = {"ALLMICRO_CORS_ORIGINS": VIEWER}
    with module_server(request, tmp_path_factory, postgres_databases, "iiif", env) as server:
        yield server


@pytest.fixture(scope="module")
def world(server: LiveServer) -> World:
    admin = server.client()
    org = admin.post("/api/organisations", json={"name": "Viewers", "kind": "partner"}).json()
    emails = []
    for who in ("member", "outsider"):
        email = f"{who}-{secrets.token_hex(3)}@example.org"
        body = {"email": email, "organisation_id": org["id"], "password": PASSWORD}
        made = admin.post("/api/users", json=body)
        assert made.status_code == 201, made.text
        emails.append((email, made.json()["id"]))
    project = admin.post(
        "/api/projects", json={"name": "Lamellae", "description": "FIB lamellae"}
    ).json()["id"]
    member = admin.post(
        f"/api/projects/{project}/members", json={"user_id": emails[0][1], "role": "viewer"}
    )
    assert member.status_code == 201, member.text
    dataset = admin.post(
        f"/api/projects/{project}/datasets",
        json={"name": "Session 3", "description": "Helios, 16-bit SE"},
    ).json()["id"]
    ids = {}
    for name, path in (("scan_10.tif", FEI), ("scan_9.tif", UNCALIBRATED)):
        job = wait_for_job(admin, upload(admin, dataset, name, path.read_bytes())["job_id"])
        assert job["status"] == "succeeded", job
        ids[name] = job["image_ids"][0]
    return World(
        server,
        admin,
        dataset,
        ids["scan_10.tif"],
        ids["scan_9.tif"],
        emails[0][0],
        emails[1][0],
    )


def _token_page_message(response: httpx.Response) -> tuple[dict[str, Any], str]:
    """The message the token page posts, and to which origin (read as its script reads it)."""
    assert response.headers["content-type"].startswith("text/html")
    found = re.search(
        r'<script type="application/json" id="iiif-token-message">(.*?)</script>', response.text
    )
    assert found, response.text
    data = json.loads(html.unescape(found.group(1)))
    return data["message"], data["origin"]


# ------------------------------------------------------------------ info.json, physdim


def test_info_json_is_ld_json_with_its_profile_only_when_asked(world: World) -> None:
    path = f"/iiif/3/{world.calibrated}/info.json"
    plain = world.admin.get(path)
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json"
    linked = world.admin.get(path, headers={"Accept": "application/ld+json"})
    assert linked.headers["content-type"] == IMAGE_LD
    assert "accept" in linked.headers["vary"].lower()
    assert linked.json() == plain.json()


def test_the_physical_dimensions_service_gives_millimetres_per_pixel(world: World) -> None:
    pixel_size = world.admin.get(f"/api/images/{world.calibrated}").json()["pixel_size"]["x"]
    assert pixel_size  # metres
    info = world.admin.get(f"/iiif/3/{world.calibrated}/info.json").json()
    (physdim,) = [s for s in info["service"] if "physdim" in s.get("profile", "")]
    assert physdim["@context"] == "http://iiif.io/api/annex/services/physdim/1/context.json"
    assert physdim["profile"] == "http://iiif.io/api/annex/services/physdim"
    assert physdim["type"] == "Service"
    assert physdim["id"] == f"{info['id']}/physdim"
    assert physdim["physicalUnits"] == "mm"
    assert physdim["physicalScale"] == pytest.approx(pixel_size * 1000, rel=1e-9)
    # Its id answers with the same description.
    assert world.admin.get(physdim["id"]).json() == physdim
    # No pixel size: no service, and its URL is not found.
    bare = world.admin.get(f"/iiif/3/{world.uncalibrated}/info.json").json()
    assert not [s for s in bare.get("service", []) if "physdim" in s.get("profile", "")]
    assert world.admin.get(f"/iiif/3/{world.uncalibrated}/physdim").status_code == 404


# ------------------------------------------------------------------ Authorization Flow 2.0


def test_a_viewer_without_credentials_finds_the_authorization_services(world: World) -> None:
    url = f"{world.server.url}/iiif/3/{world.calibrated}/info.json"
    anonymous = httpx.get(url, headers={"Origin": VIEWER}, verify=TLS)
    assert anonymous.status_code == 401
    assert anonymous.headers["access-control-allow-origin"] == VIEWER
    stub = anonymous.json()
    assert stub["id"] == url.removesuffix("/info.json")
    assert "width" not in stub  # nothing about the image itself
    (probe,) = stub["service"]
    assert probe["type"] == "AuthProbeService2"
    assert probe["id"] == f"{world.server.url}/iiif/auth/2/probe/{world.calibrated}"
    (access,) = probe["service"]
    assert access["type"] == "AuthAccessService2"
    assert access["profile"] == "active"
    assert access["id"] == f"{world.server.url}/iiif/auth/2/access"
    assert set(access["label"]) == {"en", "it", "sl"}
    kinds = {s["type"]: s["id"] for s in access["service"]}
    assert kinds == {
        "AuthAccessTokenService2": f"{world.server.url}/iiif/auth/2/token",
        "AuthLogoutService2": f"{world.server.url}/iiif/auth/2/logout",
    }
    # An id nobody has gets the very same answer: a 401 tells nothing about what exists.
    missing = httpx.get(f"{world.server.url}/iiif/3/{secrets.token_hex(8)}/info.json", verify=TLS)
    assert missing.status_code == 401
    assert missing.json()["service"][0]["type"] == "AuthProbeService2"
    # The description of a signed-in member declares the same services.
    signed_in = world.admin.get(f"/iiif/3/{world.calibrated}/info.json").json()
    assert probe in signed_in["service"]


def test_sign_in_token_probe_and_logout_over_http(world: World) -> None:
    base = world.server.url
    probe_url = f"{base}/iiif/auth/2/probe/{world.calibrated}"

    def probe(token: str | None = None, origin: str = EVIL) -> dict[str, Any]:
        headers = {"Origin": origin}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        answer = httpx.get(probe_url, headers=headers, timeout=30, verify=TLS)
        assert answer.status_code == 200  # the status is in the body
        assert answer.headers["access-control-allow-origin"] == "*"
        result: dict[str, Any] = answer.json()
        assert result["type"] == "AuthProbeResult2"
        assert result["@context"] == "http://iiif.io/api/auth/2/context.json"
        return result

    assert probe()["status"] == 401
    preflight = httpx.options(
        probe_url,
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
        verify=TLS,
    )
    assert preflight.status_code == 204
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    # The access service: our sign-in page, which comes back to it and then closes itself.
    anonymous = httpx.Client(base_url=base, timeout=30, verify=TLS)
    to_login = anonymous.get(f"/iiif/auth/2/access?origin={VIEWER}")
    assert to_login.status_code == 303
    assert to_login.headers["location"].startswith("/login?next=%2Fiiif%2Fauth%2F2%2Faccess")
    browser = world.browser(world.member)
    window = browser.get(f"/iiif/auth/2/access?origin={VIEWER}")
    assert window.status_code == 200
    assert "data-close-window" in window.text

    # The token service, framed by the viewer, posts a token to the viewer's origin only.
    page = browser.get("/iiif/auth/2/token", params={"messageId": "m-1", "origin": VIEWER})
    message, target = _token_page_message(page)
    assert target == VIEWER
    assert f"frame-ancestors {VIEWER}" in page.headers["content-security-policy"]
    assert message["type"] == "AuthAccessToken2"
    assert message["@context"] == "http://iiif.io/api/auth/2/context.json"
    assert message["messageId"] == "m-1"
    assert 0 < message["expiresIn"] <= 3600
    token = message["accessToken"]
    unused = _token_page_message(
        browser.get("/iiif/auth/2/token", params={"messageId": "m-2", "origin": VIEWER})
    )[0]["accessToken"]

    assert probe(token)["status"] == 200
    # The token opens the image service and its tiles, from the viewer's origin.
    bearer = {"Authorization": f"Bearer {token}", "Origin": VIEWER}
    info = httpx.get(f"{base}/iiif/3/{world.calibrated}/info.json", headers=bearer, verify=TLS)
    assert info.status_code == 200
    assert info.headers["access-control-allow-origin"] == VIEWER
    tile = httpx.get(
        f"{base}/iiif/3/{world.calibrated}/full/128,/0/default.jpg", headers=bearer, verify=TLS
    )
    assert tile.status_code == 200
    assert tile.headers["content-type"] == "image/jpeg"
    # ... but nothing else: it is no API credential.
    assert httpx.get(f"{base}/api/me", headers=bearer, verify=TLS).status_code == 401
    # A token is good for what its user may see only.
    outsider = world.browser(world.outsider)
    theirs = _token_page_message(
        outsider.get("/iiif/auth/2/token", params={"messageId": "x", "origin": VIEWER})
    )[0]["accessToken"]
    assert probe(theirs)["status"] == 404
    assert probe("iiif1.forged.token")["status"] == 401

    # Other origins and signed-out browsers get errors, never a token.
    foreign, target = _token_page_message(
        browser.get("/iiif/auth/2/token", params={"messageId": "m-3", "origin": EVIL})
    )
    assert (foreign["type"], foreign["profile"], target) == (
        "AuthAccessTokenError2",
        "invalidOrigin",
        EVIL,
    )
    assert "accessToken" not in foreign
    signed_out, _ = _token_page_message(
        anonymous.get("/iiif/auth/2/token", params={"messageId": "m-4", "origin": VIEWER})
    )
    assert (signed_out["type"], signed_out["profile"]) == ("AuthAccessTokenError2", "missingAspect")
    assert anonymous.get("/iiif/auth/2/token").status_code == 400

    # The logout service signs the session out (a form with its CSRF token): the tokens end.
    logout_page = browser.get("/iiif/auth/2/logout")
    assert 'action="/iiif/auth/2/logout"' in logout_page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', logout_page.text)
    assert csrf
    browser.headers.pop("X-CSRF-Token")
    assert browser.post("/iiif/auth/2/logout", data={}).status_code == 403  # no CSRF token
    ended = browser.post("/iiif/auth/2/logout", data={"csrf_token": csrf.group(1)})
    assert ended.status_code == 200
    assert "data-close-window" in ended.text
    assert browser.get("/api/me").status_code == 401
    # (The token in use may be remembered for viewing.DECISION_SECONDS; one never used is not.)
    assert probe(unused)["status"] == 401
    assert (
        httpx.get(
            f"{base}/iiif/3/{world.calibrated}/info.json",
            headers={"Authorization": f"Bearer {unused}"},
            verify=TLS,
        ).status_code
        == 401
    )


# ------------------------------------------------------------------ manifests


def _image_sizes(world: World, image_id: str) -> tuple[int, int]:
    info = world.admin.get(f"/iiif/3/{image_id}/info.json").json()
    return info["width"], info["height"]


def test_a_dataset_manifest_lists_its_images_in_order_with_their_metadata(world: World) -> None:
    response = world.admin.get(
        f"/iiif/3/manifests/{world.dataset}", headers={"Accept": "application/ld+json"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == PRESENTATION_LD
    manifest = response.json()
    Manifest(**manifest)  # the iiif-prezi3 model of Presentation 3.0 accepts it
    assert manifest["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert manifest["id"] == f"{world.server.url}/iiif/3/manifests/{world.dataset}"
    assert manifest["type"] == "Manifest"
    assert manifest["label"] == {"none": ["Session 3"]}
    assert manifest["summary"] == {"none": ["Helios, 16-bit SE"]}
    labels = {entry["label"]["en"][0]: entry for entry in manifest["metadata"]}
    assert labels["Project"]["value"] == {"none": ["Lamellae"]}
    assert labels["Project"]["label"]["it"] == ["Progetto"]
    assert labels["Project"]["label"]["sl"] == ["Projekt"]
    assert labels["Description"]["label"]["it"] == ["Descrizione"]

    canvases = manifest["items"]
    # Name order as people number acquisitions: scan_9 before scan_10.
    assert [c["label"]["none"][0] for c in canvases] == ["scan_9.tif", "scan_10.tif"]
    assert manifest["start"]["id"] == canvases[0]["id"]
    for canvas, image_id in zip(canvases, (world.uncalibrated, world.calibrated), strict=True):
        assert (canvas["width"], canvas["height"]) == _image_sizes(world, image_id)
        (annotation,) = canvas["items"][0]["items"]
        assert annotation["motivation"] == "painting"
        assert annotation["target"] == canvas["id"]
        (service,) = annotation["body"]["service"]
        assert service["id"] == f"{world.server.url}/iiif/3/{image_id}"
        assert service["type"] == "ImageService3"
        # A viewer elsewhere learns from the manifest how to sign its user in.
        assert service["service"][0]["type"] == "AuthProbeService2"
    # The calibrated image's acquisition facts, shown as the image page shows them.
    facts = {e["label"]["en"][0]: e["value"] for e in canvases[1]["metadata"]}
    voltage = next(v for k, v in facts.items() if "voltage" in k.lower())
    assert "kV" in json.dumps(voltage)
    assert canvases[1]["service"][0]["physicalUnits"] == "mm"
    assert "service" not in canvases[0]


def test_a_manifest_is_as_private_as_its_dataset(world: World) -> None:
    path = f"/iiif/3/manifests/{world.dataset}"
    assert httpx.get(f"{world.server.url}{path}", verify=TLS).status_code == 401
    assert world.browser(world.outsider).get(path).status_code == 404
    assert world.browser(world.member).get(path).status_code == 200


def test_a_dataset_capability_opens_its_manifest_and_images_anywhere(world: World) -> None:
    minted = world.admin.post(f"/api/datasets/{world.dataset}/capabilities", json={})
    assert minted.status_code == 201, minted.text
    capability = minted.json()
    prefix = capability["iiif"]
    assert prefix.startswith(f"{world.server.url}/iiif/3/c/")
    assert capability["iiif_images"] == {
        world.calibrated: f"{prefix}/{world.calibrated}",
        world.uncalibrated: f"{prefix}/{world.uncalibrated}",
    }
    assert capability["manifest"] == f"{prefix}/manifest"

    anywhere = {"Origin": EVIL}  # no credentials at all
    manifest = httpx.get(capability["manifest"], headers=anywhere, verify=TLS)
    assert manifest.status_code == 200, manifest.text
    assert manifest.headers["access-control-allow-origin"] == "*"
    document = manifest.json()
    Manifest(**document)
    assert document["id"] == capability["manifest"]
    for canvas in document["items"]:
        service = canvas["items"][0]["items"][0]["body"]["service"][0]
        assert service["id"].startswith(f"{prefix}/")
        assert "service" not in service  # the URL is the credential: no sign-in needed
        info = httpx.get(f"{service['id']}/info.json", headers=anywhere, verify=TLS)
        assert info.status_code == 200
        assert info.headers["access-control-allow-origin"] == "*"
        assert info.json()["id"] == service["id"]
        assert "AuthProbeService2" not in info.text
        tile = httpx.get(f"{service['id']}/full/max/0/default.jpg", headers=anywhere, verify=TLS)
        assert tile.status_code == 200
        assert tile.headers["content-type"] == "image/jpeg"

    # An image capability has no manifest and no images under it; bad tokens are 404, with CORS.
    image_capability = world.admin.post(
        f"/api/images/{world.calibrated}/capabilities", json={}
    ).json()
    assert image_capability["iiif_images"] == {world.calibrated: image_capability["iiif"]}
    assert image_capability["manifest"] is None
    for url in (
        f"{image_capability['iiif']}/manifest",
        f"{image_capability['iiif']}/{world.calibrated}/info.json",
        f"{prefix}/info.json",
        f"{world.server.url}/iiif/3/c/c2.bad.token/manifest",
        f"{world.server.url}/iiif/3/c/c2.bad.token/info.json",
    ):
        missing = httpx.get(url, headers=anywhere, verify=TLS)
        assert missing.status_code == 404, url
        assert missing.headers["access-control-allow-origin"] == "*"
    redirect = httpx.get(image_capability["iiif"], headers=anywhere, verify=TLS)
    assert redirect.status_code == 303
    assert redirect.headers["location"] == f"{image_capability['iiif']}/info.json"
    assert redirect.headers["access-control-allow-origin"] == "*"
