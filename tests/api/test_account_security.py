"""Accounts behind a proxy: trusted X-Forwarded-*, HSTS, per-address sign-in throttling, login CSRF,
common passwords, invitations by e-mail, aware expiry datetimes and admin-only metrics."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import (
    TLS,
    LiveServer,
    PostgresDatabases,
    free_port,
    module_server,
)

PASSWORD = "account security password"
# The reverse proxy of these tests: its connections come from this loopback address, the
# tests' own direct connections from 127.0.0.1, which is not trusted here.
PROXY_ADDRESS = "127.0.0.2"
MAX_FAILURES = 4
ACCOUNT_MAX_FAILURES = 10


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    env = {
        "ALLMICRO_JOB_WORKERS": "0",
        "ALLMICRO_TRUSTED_PROXIES": f"{PROXY_ADDRESS}/32",
        "ALLMICRO_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        "ALLMICRO_LOGIN_ACCOUNT_MAX_FAILURES": str(ACCOUNT_MAX_FAILURES),
        "ALLMICRO_LOGIN_ADDRESS_LIMIT": "1000",
        "ALLMICRO_METRICS_PORT": str(free_port()),
    }
    with module_server(request, tmp_path_factory, postgres_databases, "accounts", env) as server:
        yield server


def via_proxy(server: LiveServer, **headers: str) -> httpx.Client:
    """A client whose connections come from the trusted proxy's address."""
    transport = httpx.HTTPTransport(local_address=PROXY_ADDRESS)
    return httpx.Client(
        base_url=server.url, transport=transport, headers=headers, timeout=30, verify=TLS
    )


def direct(server: LiveServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=headers, timeout=30, verify=TLS)


def sign_in(client: httpx.Client, email: str, password: str) -> httpx.Response:
    return client.post("/api/auth/token", data={"username": email, "password": password})


def new_user(server: LiveServer, prefix: str, *, organisation: str | None = None) -> str:
    """A user with PASSWORD in the first organisation (or a new one); returns the e-mail."""
    email = f"{prefix}-{secrets.token_hex(3)}@example.org"
    with server.client() as admin:
        if organisation is None:
            org_id = admin.get("/api/organisations").json()["items"][0]["id"]
        else:
            created = admin.post(
                "/api/organisations", json={"name": organisation, "kind": "company"}
            )
            org_id = created.raise_for_status().json()["id"]
        body = {"email": email, "organisation_id": org_id, "password": PASSWORD}
        admin.post("/api/users", json=body).raise_for_status()
    return email


def failures_of(server: LiveServer, email: str) -> list[dict[str, Any]]:
    with server.client() as admin:
        events = admin.get(
            "/api/audit", params={"actor": email, "action": "login.failure", "limit": 1000}
        )
    items: list[dict[str, Any]] = events.raise_for_status().json()["items"]
    return items


# ------------------------------------------------------------------ proxies


def test_forwarded_for_counts_only_from_a_trusted_proxy(server: LiveServer) -> None:
    email = new_user(server, "forwarded")
    # The proxy appends the address it saw; what the client claimed before it is not believed.
    with via_proxy(server, **{"X-Forwarded-For": "198.51.100.99, 203.0.113.8"}) as proxied:
        assert sign_in(proxied, email, "wrong password!").status_code == 401
    # A client reaching the port directly cannot choose its address.
    with direct(server, **{"X-Forwarded-For": "203.0.113.9"}) as spoofing:
        assert sign_in(spoofing, email, "wrong password!").status_code == 401
    addresses = sorted(e["client_address"] for e in failures_of(server, email))
    assert addresses == ["127.0.0.1", "203.0.113.8"]


def test_secure_cookies_and_hsts_behind_a_trusted_https_proxy(server: LiveServer) -> None:
    email = new_user(server, "https")
    form = {"username": email, "password": PASSWORD}
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.20"}
    with via_proxy(server, **headers) as proxied:
        signed_in = proxied.post("/api/auth/login", data=form)
        assert signed_in.status_code == 200, signed_in.text
        cookies = signed_in.headers.get_list("set-cookie")
        assert len(cookies) == 2 and all("Secure" in c for c in cookies), cookies
        assert signed_in.headers["strict-transport-security"] == "max-age=31536000"
        assert "strict-transport-security" in proxied.get("/healthz").headers
    # The same headers from a peer that is no trusted proxy: plain HTTP, as it is.
    with direct(server, **headers) as spoofing:
        plain = spoofing.post("/api/auth/login", data=form)
        assert plain.status_code == 200
        assert not any("Secure" in c for c in plain.headers.get_list("set-cookie"))
        assert "strict-transport-security" not in plain.headers


# ------------------------------------------------------------------ sign-in throttling


def test_guessing_from_one_address_does_not_lock_the_owner_out(server: LiveServer) -> None:
    email = new_user(server, "guessed")
    attacker = via_proxy(server, **{"X-Forwarded-For": "203.0.113.66"})
    owner = via_proxy(server, **{"X-Forwarded-For": "198.51.100.20"})
    statuses = [sign_in(attacker, email, f"guess {i}").status_code for i in range(MAX_FAILURES)]
    assert statuses == [401] * MAX_FAILURES
    # That address is refused for that account, even with the right password...
    throttled = sign_in(attacker, email, PASSWORD)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    # ...but the owner, elsewhere, signs in.
    assert sign_in(owner, email, PASSWORD).status_code == 200
    # An unknown account is throttled alike: the 429 tells nobody who has an account.
    nobody = f"nobody-{secrets.token_hex(3)}@example.org"
    unknown = [sign_in(attacker, nobody, f"guess {i}").status_code for i in range(MAX_FAILURES + 1)]
    assert unknown == [401] * MAX_FAILURES + [429]

    # Guessing from many addresses is clear abuse: past the account-wide limit the whole
    # account is locked, with the answer of a wrong password.
    for n in range(ACCOUNT_MAX_FAILURES - MAX_FAILURES):
        with via_proxy(server, **{"X-Forwarded-For": f"203.0.113.{100 + n}"}) as bot:
            assert sign_in(bot, email, "a guess").status_code == 401
    locked = sign_in(owner, email, PASSWORD)
    assert locked.status_code == 401
    assert locked.json()["detail"] == "incorrect e-mail or password"
    reasons = [e["detail"]["reason"] for e in failures_of(server, email)]
    assert "wrong password; account locked" in reasons
    attacker.close()
    owner.close()


# ------------------------------------------------------------------ login CSRF


def test_browser_sign_in_posted_from_another_site_is_refused(server: LiveServer) -> None:
    email = new_user(server, "csrf")
    form = {"username": email, "password": PASSWORD}
    with direct(server) as client:
        for headers in (
            {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
        ):
            refused = client.post("/api/auth/login", data=form, headers=headers)
            assert refused.status_code == 403, headers
            assert "set-cookie" not in refused.headers
        for headers in (
            {"Sec-Fetch-Site": "same-origin", "Origin": server.url},
            {"Origin": server.url},
            {},  # curl, a script: no browser
        ):
            assert client.post("/api/auth/login", data=form, headers=headers).status_code == 200
        # The password flow for the CLI and scripts is not a browser session.
        assert sign_in(client, email, PASSWORD).status_code == 200


# ------------------------------------------------------------------ password policy


COMMON = ["Password123", "qwertyuiop", "1q2w3e4r5t6y", "QWERTY 12345"]


def test_common_passwords_are_refused_wherever_a_password_is_set(server: LiveServer) -> None:
    email = new_user(server, "policy")
    with server.client() as admin:
        org_id = admin.get("/api/organisations").json()["items"][0]["id"]
        for common in COMMON:
            body = {"email": f"weak-{secrets.token_hex(3)}@example.org", "password": common}
            refused = admin.post("/api/users", json={**body, "organisation_id": org_id})
            assert refused.status_code == 422, common
            assert "common" in refused.json()["detail"]
        user_id = next(
            u["id"]
            for u in admin.get("/api/users", params={"limit": 1000}).json()["items"]
            if u["email"] == email
        )
        reset = admin.post(f"/api/users/{user_id}/password", json={"new_password": "1234567890"})
        assert reset.status_code == 422
    with server.client(email, PASSWORD) as user:
        change = {"current_password": PASSWORD, "new_password": "password123"}
        assert user.post("/api/me/password", json=change).status_code == 422
    assert sign_in(direct(server), email, PASSWORD).status_code == 200

    created = server.allmicro(
        "admin", "create-user", "cli-weak@example.org", "--organisation", org_id,
        env={"ALLMICRO_NEW_USER_PASSWORD": "qwertyuiop"},
    )  # fmt: skip
    assert created.returncode != 0 and "common" in created.stderr, created
    reset_cli = server.allmicro(
        "admin", "reset-password", email, env={"ALLMICRO_NEW_USER_PASSWORD": "qwerty123456"}
    )
    assert reset_cli.returncode != 0 and "common" in reset_cli.stderr, reset_cli
    # A long, unusual password passes everywhere.
    fine = server.allmicro(
        "admin", "reset-password", email, env={"ALLMICRO_NEW_USER_PASSWORD": PASSWORD + " 2"}
    )
    assert fine.returncode == 0, fine.stderr


# ------------------------------------------------------------------ datetimes


def test_expiries_and_date_filters_without_a_time_zone_answer_422(server: LiveServer) -> None:
    with server.client() as admin:
        project = admin.post("/api/projects", json={"name": f"tz {secrets.token_hex(3)}"})
        project_id = project.raise_for_status().json()["id"]

        def ask(moment: str) -> list[httpx.Response]:
            return [
                admin.post("/api/tokens", json={"name": "pc", "expires_at": moment}),
                admin.post(f"/api/projects/{project_id}/share-links", json={"expires_at": moment}),
                admin.get("/api/audit", params={"since": moment}),
                admin.get("/api/images", params={"acquired_from": moment}),
            ]

        # Within the share links' longest lifetime.
        soon = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
        for naive in ask(soon.replace(tzinfo=None).isoformat()):
            assert naive.status_code == 422, (naive.request.url, naive.text)
            assert naive.headers["content-type"].startswith("application/problem+json")
        aware = [r.status_code for r in ask(soon.isoformat())]
        assert aware == [201, 201, 200, 200]


# ------------------------------------------------------------------ metrics


def test_metrics_need_an_admin_on_the_app_port(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/metrics", timeout=10, verify=TLS).status_code == 401
    email = new_user(server, "metrics")
    with server.client(email, PASSWORD) as user:
        assert user.get("/metrics").status_code == 403
        token = user.post("/api/tokens", json={"name": "t", "scope": "read"}).json()["token"]
        assert direct(server, Authorization=f"Bearer {token}").get("/metrics").status_code == 403
    with server.client() as admin:
        assert "allmicro_jobs" in admin.get("/metrics").text
        # What Prometheus keeps: an admin's personal read token.
        scrape = admin.post("/api/tokens", json={"name": "prometheus", "scope": "read"})
        token = scrape.json()["token"]
    scraped = direct(server, Authorization=f"Bearer {token}").get("/metrics")
    assert scraped.status_code == 200 and "allmicro_jobs" in scraped.text
    # Or the separate port, for a private network.
    port = server.env["ALLMICRO_METRICS_PORT"]
    separate = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, verify=TLS)
    assert separate.status_code == 200 and "allmicro_stored_originals" in separate.text


# ------------------------------------------------------------------ invitations


def test_adding_by_email_answers_alike_whether_or_not_the_person_exists(
    server: LiveServer,
) -> None:
    tag = secrets.token_hex(3)
    manager = new_user(server, "manager")
    elsewhere = new_user(server, "elsewhere", organisation=f"Other company {tag}")
    with server.client() as admin:
        project_id = admin.post("/api/projects", json={"name": f"invite {tag}"}).json()["id"]
        me = admin.get("/api/users", params={"limit": 1000}).json()["items"]
        manager_id = next(u["id"] for u in me if u["email"] == manager)
        admin.post(
            f"/api/projects/{project_id}/members", json={"user_id": manager_id, "role": "manager"}
        ).raise_for_status()
    newcomer = f"newcomer-{tag}@example.org"
    with server.client(manager, PASSWORD) as client:
        members = f"/api/projects/{project_id}/members"
        known = client.post(members, json={"email": elsewhere.upper(), "role": "viewer"})
        unknown = client.post(members, json={"email": newcomer, "role": "contributor"})
        assert known.status_code == unknown.status_code == 202, (known.text, unknown.text)
        assert known.json().keys() == unknown.json().keys()
        assert known.json()["email"] == elsewhere and "user_id" not in known.json()
        # Nobody was added yet: the membership list shows only the manager.
        assert [m["user_email"] for m in client.get(members).json()] == [manager]
        pending = client.get(f"/api/projects/{project_id}/invitations").json()
        assert sorted(i["email"] for i in pending) == sorted([elsewhere, newcomer])

    # The existing user's role starts at their next sign-in...
    with server.client(elsewhere, PASSWORD) as invited:
        projects = invited.get("/api/projects").json()["items"]
        assert project_id in [p["id"] for p in projects]
    # ...the newcomer's when the account is created.
    with server.client() as admin:
        org_id = admin.get("/api/organisations").json()["items"][0]["id"]
        body = {"email": newcomer, "organisation_id": org_id, "password": PASSWORD}
        admin.post("/api/users", json=body).raise_for_status()
    with server.client(manager, PASSWORD) as client:
        roles = {m["user_email"]: m["role"] for m in client.get(members).json()}
        assert roles == {manager: "manager", elsewhere: "viewer", newcomer: "contributor"}
        assert client.get(f"/api/projects/{project_id}/invitations").json() == []
        # A withdrawn invitation never takes effect.
        late = f"late-{tag}@example.org"
        invitation = client.post(members, json={"email": late, "role": "viewer"}).json()
        withdrawn = client.delete(f"/api/projects/{project_id}/invitations/{invitation['id']}")
        assert withdrawn.status_code == 204
    with server.client() as admin:
        body = {"email": late, "organisation_id": org_id, "password": PASSWORD}
        admin.post("/api/users", json=body).raise_for_status()
    with server.client(late, PASSWORD) as client:
        assert project_id not in [p["id"] for p in client.get("/api/projects").json()["items"]]


def test_admin_adding_an_existing_user_by_email_adds_at_once(server: LiveServer) -> None:
    email = new_user(server, "direct")
    with server.client() as admin:
        project_id = admin.post("/api/projects", json={"name": f"direct {email}"}).json()["id"]
        added = admin.post(
            f"/api/projects/{project_id}/members", json={"email": email, "role": "viewer"}
        )
        assert added.status_code == 201 and added.json()["user_email"] == email
