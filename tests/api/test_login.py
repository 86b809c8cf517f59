"""Sign-in: throttling after repeated failures, no user enumeration, sessions with CSRF."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    TLS,
    LiveServer,
    PostgresDatabases,
    module_server,
    wait_until,
)

PASSWORD = "login test password"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def login_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    """A server whose lockout lasts a few seconds, so a test can see it end (but longer than
    twenty failed sign-ins take, each one argon2 verification), shared by the tests of this
    module: each signs in as an account of its own, and the address limit is out of reach."""
    env = {
        # 20 s: twenty production-cost verifications took over 10 s on a loaded 2-core machine.
        "ALLMICRO_LOGIN_LOCKOUT_SECONDS": "20",
        "ALLMICRO_LOGIN_ADDRESS_LIMIT": "1000",
        "ALLMICRO_JOB_WORKERS": "0",
        # The production password-hash cost: the timing test needs the hash to be most of a
        # sign-in's time.
        "ALLMICRO_ARGON2_TIME_COST": "3",
        "ALLMICRO_ARGON2_MEMORY_KIB": "65536",
        "ALLMICRO_ARGON2_PARALLELISM": "4",
    }
    with module_server(request, tmp_path_factory, postgres_databases, "login", env) as server:
        yield server


def make_user(server: LiveServer, email: str) -> None:
    admin = server.client()
    orgs = admin.get("/api/organisations").json()["items"]
    body = {"email": email, "organisation_id": orgs[0]["id"], "password": PASSWORD}
    assert admin.post("/api/users", json=body).status_code == 201


def attempt(server: LiveServer, email: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/auth/token",
        data={"username": email, "password": password},
        timeout=30,
        verify=TLS,
    )


def test_twenty_wrong_passwords_refuse_that_address_until_the_lockout_ends(
    login_server: LiveServer,
) -> None:
    email = "locked@example.org"
    make_user(login_server, email)
    for _ in range(20):
        refused = attempt(login_server, email, "wrong password!")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "incorrect e-mail or password"
    # This address is refused for this account, even with the right password (others are
    # not: tests/api/test_account_security.py).
    throttled = attempt(login_server, email, PASSWORD)
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= 21

    events = login_server.client().get(
        "/api/audit", params={"actor": email, "action": "login.failure", "limit": 100}
    )
    items = events.json()["items"]
    assert len(items) == 20
    assert all(e["success"] is False and e["client_address"] == "127.0.0.1" for e in items)
    assert {e["detail"]["reason"] for e in items} == {"wrong password"}

    # Once the lockout ends, the right password works again.
    wait_until(
        lambda: attempt(login_server, email, PASSWORD).status_code == 200,
        timeout=40,
        interval=0.5,
        what="lockout to end",
    )
    assert any(
        e["action"] == "login.success"
        for e in login_server.client().get("/api/audit", params={"actor": email}).json()["items"]
    )


def test_unknown_accounts_and_wrong_passwords_look_the_same(login_server: LiveServer) -> None:
    email = "timing@example.org"
    make_user(login_server, email)
    known: list[float] = []
    unknown: list[float] = []
    # Interleaved, so that load on the machine affects both series alike.
    for i in range(14):
        for series, who in ((known, email), (unknown, f"nobody{i}@example.org")):
            start = time.perf_counter()
            response = attempt(login_server, who, "not the password")
            series.append(time.perf_counter() - start)
            assert response.status_code == 401
            assert response.json()["detail"] == "incorrect e-mail or password"
    median_known, median_unknown = statistics.median(known), statistics.median(unknown)
    # Both pay one argon2id verification; a missing one would halve the time or less.
    assert abs(median_known - median_unknown) < 0.25 * max(median_known, median_unknown), (
        median_known,
        median_unknown,
    )


def test_failures_from_one_address_are_throttled(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**server_env, "ALLMICRO_LOGIN_ADDRESS_LIMIT": "5", "ALLMICRO_JOB_WORKERS": "0"}
    server = LiveServer(
        url=f"http://127.0.0.1:{env['ALLMICRO_PORT']}", env=env, log_path=tmp_path / "s.log"
    )
    server.start()
    try:
        token = server.token()  # before the address is throttled
        for i in range(5):
            assert attempt(server, f"guess{i}@example.org", "x").status_code == 401
        throttled = attempt(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 0
        # Signed-in users are not affected.
        me = httpx.get(
            f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"}, verify=TLS
        )
        assert me.status_code == 200
    finally:
        server.stop()


def test_browser_session_cookie_needs_csrf_for_writes(login_server: LiveServer) -> None:
    browser = httpx.Client(base_url=login_server.url, timeout=30, verify=TLS)
    signed_in = browser.post(
        "/api/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert signed_in.status_code == 200
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    csrf = signed_in.json()["csrf_token"]
    assert browser.get("/api/me").json()["email"] == ADMIN_EMAIL

    body = {"name": "from the browser"}
    assert browser.post("/api/projects", json=body).status_code == 403
    assert (
        browser.post("/api/projects", json=body, headers={"X-CSRF-Token": "forged"}).status_code
        == 403
    )
    assert (
        browser.post("/api/projects", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    )

    # A tampered cookie is no session at all.
    tampered = httpx.Client(base_url=login_server.url, timeout=30, verify=TLS)
    value = browser.cookies["allmicro_session"]
    tampered.cookies.set("allmicro_session", value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert tampered.get("/api/me").status_code == 401

    assert browser.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert browser.get("/api/me").status_code == 401


def test_password_change_signs_out_other_sessions(login_server: LiveServer) -> None:
    email = "changer@example.org"
    make_user(login_server, email)
    first = login_server.client(email, PASSWORD)
    other = httpx.Client(
        base_url=login_server.url,
        headers={
            "Authorization": f"Bearer {attempt(login_server, email, PASSWORD).json()['access_token']}"
        },
        verify=TLS,
    )
    wrong = first.post(
        "/api/me/password",
        json={"current_password": "nope", "new_password": "a brand new password"},
    )
    assert wrong.status_code == 422
    weak = first.post(
        "/api/me/password", json={"current_password": PASSWORD, "new_password": "short"}
    )
    assert weak.status_code == 422
    changed = first.post(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new password"},
    )
    assert changed.status_code == 204
    assert first.get("/api/me").status_code == 200
    assert other.get("/api/me").status_code == 401
    assert attempt(login_server, email, PASSWORD).status_code == 401
    assert attempt(login_server, email, "a brand new password").status_code == 200
