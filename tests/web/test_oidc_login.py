"""OpenID Connect sign-in in Chromium against a real provider process: panva's `oidc-provider`
(npm, OpenID certified) under node, with its development login form. The whole code flow with
PKCE, state and nonce: /login's "Sign in with ..." button, the provider's login and consent,
back to our pages signed in as a user of the organisation the rules name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import TLS, LiveServer, PostgresDatabases, free_port, module_server
from tests.identity_servers import OidcProvider, running_oidc_provider
from tests.web.conftest import check_page_at_both_sizes

PROVIDER_NAME = "Test University"
ACCOUNTS = {
    "lea": {"email": "Lea.Kos@uni-test.example", "email_verified": True, "name": "Lea Kos"},
    "mark": {"email": "mark@uni-test.example", "email_verified": False, "name": "Mark Vidmar"},
}


@dataclass
class Federation:
    server: LiveServer
    provider: OidcProvider
    organisation_id: str


@pytest.fixture(scope="module", params=["sqlite"])
def federation(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Federation]:
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    directory = tmp_path_factory.mktemp("oidc-provider")
    with running_oidc_provider(directory, f"{public_url}/login/oidc/callback", ACCOUNTS) as op:
        env = {
            "ALLMICRO_PORT": str(port),
            "ALLMICRO_PUBLIC_URL": public_url,
            "ALLMICRO_OIDC_ISSUER": op.issuer,
            "ALLMICRO_OIDC_CLIENT_ID": op.client_id,
            "ALLMICRO_OIDC_CLIENT_SECRET": op.client_secret,
            "ALLMICRO_OIDC_PROVIDER_NAME": PROVIDER_NAME,
            "ALLMICRO_OIDC_ORGANISATION_RULES": json.dumps(
                [{"email_domain": "uni-test.example", "organisation": "University of Testing"}]
            ),
        }
        with module_server(request, tmp_path_factory, postgres_databases, "oidc", env) as server:
            with server.client() as admin:
                made = admin.post(
                    "/api/organisations",
                    json={"name": "University of Testing", "kind": "partner"},
                )
                assert made.status_code == 201, made.text
            yield Federation(server, op, made.json()["id"])


def _sign_in_at_provider(page: Any, login: str) -> None:
    """The provider's development login form, then its consent page."""
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password the dev form takes")
    page.click("button[type=submit]")
    page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
    page.click("button[type=submit]")


def test_the_code_flow_signs_a_verified_account_in_as_a_user_of_its_organisation(
    federation: Federation, browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{federation.server.url}/login?next=/search")
        button = page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}")
        assert button.is_visible()
        check_page_at_both_sizes(page, "login-institutional")
        button.click()
        page.wait_for_url(f"{federation.provider.issuer}/**")
        _sign_in_at_provider(page, "lea")
        # Back on our pages, signed in, where the sign-in started.
        page.wait_for_url(f"{federation.server.url}/search**")
        me = page.request.get(f"{federation.server.url}/api/me")
        assert me.status == 200, me.text()
        user = me.json()
        assert user["email"] == "lea.kos@uni-test.example"
        assert user["display_name"] == "Lea Kos"
        assert user["organisation"]["id"] == federation.organisation_id
        # A second sign-in through the provider is the same user (found by issuer + subject).
        page.request.post(
            f"{federation.server.url}/api/auth/logout",
            headers={"X-CSRF-Token": _cookie(context, "allmicro_csrf")},
        )
        page.goto(f"{federation.server.url}/login")
        page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
        # The provider remembers its session: straight back (or through its forms again).
        page.wait_for_url(
            lambda url: url.startswith(federation.server.url) or "/interaction/" in url
        )
        if "/interaction/" in page.url:
            if page.locator("input[name=login]").count():
                _sign_in_at_provider(page, "lea")
            else:
                page.click("button[type=submit]")
        page.wait_for_url(f"{federation.server.url}/projects**")
        again = page.request.get(f"{federation.server.url}/api/me").json()
        assert again["id"] == user["id"]
    finally:
        context.close()


def test_an_unverified_e_mail_is_not_trusted_to_make_an_account(
    federation: Federation, browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{federation.server.url}/login")
        page.get_by_role("link", name=f"Sign in with {PROVIDER_NAME}").click()
        page.wait_for_url(f"{federation.provider.issuer}/**")
        _sign_in_at_provider(page, "mark")
        page.wait_for_url(f"{federation.server.url}/login/oidc/callback**")
        assert page.get_by_role("alert").inner_text().startswith("This account cannot sign in")
        check_page_at_both_sizes(page, "login-refused")
        assert page.request.get(f"{federation.server.url}/api/me").status == 401
    finally:
        context.close()
    with federation.server.client() as admin:
        users = admin.get("/api/users", params={"limit": 500}).json()["items"]
    assert "mark@uni-test.example" not in [u["email"] for u in users]


def test_a_callback_without_the_sign_in_this_browser_started_is_refused(
    federation: Federation,
) -> None:
    # A code and state from elsewhere (login CSRF): no pending sign-in cookie, no redemption.
    answer = httpx.get(
        f"{federation.server.url}/login/oidc/callback",
        params={"code": "stolen-code", "state": "forged-state"},
        timeout=30,
        verify=TLS,
    )
    assert answer.status_code == 400
    assert "allmicro_session" not in answer.cookies


def _cookie(context: Any, name: str) -> str:
    for cookie in context.cookies():
        if cookie["name"] == name:
            return str(cookie["value"])
    raise AssertionError(f"no cookie {name}")
