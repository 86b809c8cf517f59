"""CORS on the viewer and upload routes: every response (errors and redirects too) and preflight
carries the policy, capability URLs for any origin, bearer-token routes for listed origins only."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TLS, LiveServer, PostgresDatabases, module_server

ALLOWED = "https://viewer.example.org"
OTHER = "https://evil.example.net"
MISSING = "01J0000000000000000000000Z"


@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    env = {"ALLMICRO_CORS_ORIGINS": f"{ALLOWED}, https://other.example.org:8443"}
    with module_server(request, tmp_path_factory, postgres_databases, "cors", env) as server:
        yield server


def _get(server: LiveServer, path: str, origin: str, token: bool = False) -> httpx.Response:
    headers = {"Origin": origin}
    if token:
        headers["Authorization"] = f"Bearer {server.token()}"
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=30, verify=TLS)


@pytest.mark.parametrize(
    "path", [f"/zarr/{MISSING}/.zattrs", f"/iiif/3/{MISSING}/info.json"], ids=["zarr", "iiif"]
)
def test_errors_of_bearer_routes_carry_the_allowed_origin(server: LiveServer, path: str) -> None:
    for response, status in (
        (_get(server, path, ALLOWED), 401),
        (_get(server, path, ALLOWED, token=True), 404),
    ):
        assert response.status_code == status, response.text
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "origin" in response.headers["vary"].lower()
        assert "access-control-allow-credentials" not in response.headers
    # A redirect too (the IIIF base URI sends the client on to info.json).
    redirect = httpx.get(f"{server.url}/iiif/3/{MISSING}", headers={"Origin": ALLOWED}, verify=TLS)
    assert redirect.status_code == 303
    assert redirect.headers["access-control-allow-origin"] == ALLOWED


def test_a_disallowed_origin_gets_no_cors_headers(server: LiveServer) -> None:
    for path in (f"/zarr/{MISSING}/.zattrs", f"/iiif/3/{MISSING}/info.json", "/api/uploads/"):
        response = _get(server, path, OTHER, token=True)
        assert "access-control-allow-origin" not in response.headers, path
        assert "origin" in response.headers["vary"].lower()
    preflight = httpx.options(
        f"{server.url}/api/uploads/",
        headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"},
        verify=TLS,
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_a_capability_url_answers_every_origin_even_when_not_found(server: LiveServer) -> None:
    response = _get(server, "/zarr/c/not-a-capability/.zattrs", OTHER)
    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


def test_an_upload_preflight_allows_the_tus_headers(server: LiveServer) -> None:
    requested = "authorization, tus-resumable, upload-length, upload-metadata, x-allmicro-sha256"
    for path in ("/api/uploads/", f"/api/uploads/{MISSING}"):
        response = httpx.options(
            f"{server.url}{path}",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": requested,
            },
            verify=TLS,
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "PATCH" in response.headers["access-control-allow-methods"]
        allowed = {
            h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
        }
        assert {
            "tus-resumable",
            "upload-length",
            "upload-offset",
            "upload-metadata",
            "upload-checksum",
            "x-allmicro-sha256",
            "authorization",
        } <= allowed
        assert int(response.headers["access-control-max-age"]) > 0
    # tus discovery (an OPTIONS that is no preflight) still reaches the router.
    discovery = httpx.options(f"{server.url}/api/uploads/", headers={"Origin": ALLOWED}, verify=TLS)
    assert discovery.headers["tus-version"]
    assert discovery.headers["access-control-allow-origin"] == ALLOWED
    # A tus request's answer exposes what the client must read.
    created = _get(server, "/api/uploads/", ALLOWED, token=True)
    exposed = {
        h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")
    }
    assert {
        "location",
        "upload-offset",
        "tus-resumable",
        "x-allmicro-file-id",
        "x-allmicro-already-present",
    } <= exposed


def test_a_viewer_preflight_answers_204(server: LiveServer) -> None:
    for path in (f"/zarr/{MISSING}/.zattrs", f"/iiif/3/{MISSING}/info.json", "/zarr/c/x/.zattrs"):
        response = httpx.options(
            f"{server.url}{path}",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"},
            verify=TLS,
        )
        assert response.status_code == 204, path
        assert response.headers["access-control-allow-origin"] in (ALLOWED, "*")
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
