"""LDAP sign-in against a real OpenLDAP (Debian's slapd, started here, binds over StartTLS only):
directory accounts sign in at /api/auth/token and the /login form by uid or e-mail, become
users of the organisation the rules name, wrong directory passwords count in the sign-in
throttle, disabled users stay disabled, and local passwords keep working."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import TLS, LiveServer, PostgresDatabases, module_server
from tests.identity_servers import LdapPerson, Slapd, running_slapd

STAFF = "staff"
PEOPLE = [
    LdapPerson("ana", "ana directory pass 1", "Ana.Novak@uni.example", "Ana Novak", (STAFF,)),
    LdapPerson("bruno", "bruno directory pass 2", "bruno@partner.example", "Bruno Rossi"),
    LdapPerson("carla", "carla directory pass 3", "carla@elsewhere.example", "Carla Bianchi"),
    LdapPerson("dora", "dora directory pass 4", "dora@uni.example", "Dora Kralj", (STAFF,)),
    LdapPerson("eva", "eva directory pass 5", "eva@uni.example", "Eva Horvat", (STAFF,)),
    LdapPerson("filip", "filip directory pass 6", "filip@uni.example", "Filip Zupan", (STAFF,)),
]
BY_UID = {p.uid: p for p in PEOPLE}
MAX_FAILURES = 4
LOCAL_PASSWORD = "a local password of 27 chars"


@dataclass
class Directory:
    server: LiveServer
    slapd: Slapd
    organisations: dict[str, str]


def _token(server: LiveServer, username: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/auth/token",
        data={"username": username, "password": password},
        timeout=30,
        verify=TLS,
    )


def _me(server: LiveServer, token: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=TLS
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module", params=["sqlite"])
def directory(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Directory]:
    with running_slapd(tmp_path_factory.mktemp("slapd"), PEOPLE) as slapd:
        rules = [
            {"group": slapd.group_dn(STAFF), "organisation": "University of Testing"},
            {"email_domain": "partner.example", "organisation": "Partner Institute"},
        ]
        env = {
            "ALLMICRO_LDAP_URLS": slapd.url,
            # The directory takes binds only over TLS: every sign-in here went through StartTLS
            # with the certificate checked against the directory's own CA.
            "ALLMICRO_LDAP_START_TLS": "true",
            "ALLMICRO_LDAP_CA_FILE": str(slapd.ca_file),
            "ALLMICRO_LDAP_SEARCH_BASE": f"ou=people,{slapd.base}",
            "ALLMICRO_LDAP_SERVICE_DN": slapd.service_dn,
            "ALLMICRO_LDAP_SERVICE_PASSWORD": slapd.service_password,
            "ALLMICRO_LDAP_GROUP_SEARCH_BASE": f"ou=groups,{slapd.base}",
            "ALLMICRO_LDAP_ORGANISATION_RULES": json.dumps(rules),
            "ALLMICRO_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        }
        with module_server(request, tmp_path_factory, postgres_databases, "ldap", env) as server:
            organisations = {}
            with server.client() as admin:
                for name, kind in (
                    ("University of Testing", "partner"),
                    ("Partner Institute", "partner"),
                ):
                    made = admin.post("/api/organisations", json={"name": name, "kind": kind})
                    assert made.status_code == 201, made.text
                    organisations[name] = made.json()["id"]
            yield Directory(server, slapd, organisations)


def test_a_directory_account_gets_a_token_by_uid_and_becomes_a_user_of_its_groups_organisation(
    directory: Directory,
) -> None:
    ana = BY_UID["ana"]
    response = _token(directory.server, "ana", ana.password)
    assert response.status_code == 200, response.text
    me = _me(directory.server, response.json()["access_token"])
    assert me["email"] == "ana.novak@uni.example"
    assert me["display_name"] == "Ana Novak"
    assert me["organisation"]["id"] == directory.organisations["University of Testing"]
    # Signing in again (by e-mail this time) is the same user, not a second one.
    again = _token(directory.server, "Ana.Novak@uni.example", ana.password)
    assert again.status_code == 200, again.text
    assert _me(directory.server, again.json()["access_token"])["id"] == me["id"]


def test_an_e_mail_domain_rule_maps_an_account_without_groups(directory: Directory) -> None:
    bruno = BY_UID["bruno"]
    response = _token(directory.server, "bruno@partner.example", bruno.password)
    assert response.status_code == 200, response.text
    me = _me(directory.server, response.json()["access_token"])
    assert me["organisation"]["id"] == directory.organisations["Partner Institute"]


def test_an_account_no_rule_maps_is_refused_and_no_user_is_made(directory: Directory) -> None:
    carla = BY_UID["carla"]
    response = _token(directory.server, "carla", carla.password)
    assert response.status_code == 401, response.text
    with directory.server.client() as admin:
        users = admin.get("/api/users", params={"limit": 500}).json()["items"]
    assert "carla@elsewhere.example" not in [u["email"] for u in users]


def test_a_wrong_directory_password_is_refused_and_counts_in_the_throttle(
    directory: Directory,
) -> None:
    eva = BY_UID["eva"]
    for _ in range(MAX_FAILURES):
        assert _token(directory.server, "eva", "not eva's password").status_code == 401
    # The next try from this address is throttled, the right password included.
    throttled = _token(directory.server, "eva", eva.password)
    assert throttled.status_code == 429, throttled.text
    assert int(throttled.headers["retry-after"]) > 0


def test_a_disabled_directory_user_stays_disabled(directory: Directory) -> None:
    dora = BY_UID["dora"]
    first = _token(directory.server, "dora", dora.password)
    assert first.status_code == 200, first.text
    user_id = _me(directory.server, first.json()["access_token"])["id"]
    with directory.server.client() as admin:
        disabled = admin.patch(f"/api/users/{user_id}", json={"is_active": False})
        assert disabled.status_code == 200, disabled.text
    # The directory still accepts the password; the catalogue's refusal stands.
    assert _token(directory.server, "dora", dora.password).status_code == 401


def test_local_passwords_keep_working_beside_the_directory(directory: Directory) -> None:
    email = "local.guest@company.example"
    with directory.server.client() as admin:
        created = admin.post(
            "/api/users",
            json={
                "email": email,
                "organisation_id": directory.organisations["Partner Institute"],
                "password": LOCAL_PASSWORD,
            },
        )
        assert created.status_code == 201, created.text
    assert _token(directory.server, email, LOCAL_PASSWORD).status_code == 200
    assert _token(directory.server, email, "a wrong local password").status_code == 401
    # A directory password does not open a local account of another name.
    assert _token(directory.server, email, BY_UID["ana"].password).status_code == 401


def test_the_sign_in_form_takes_a_directory_user_name(directory: Directory) -> None:
    filip = BY_UID["filip"]
    with httpx.Client(base_url=directory.server.url, timeout=30, verify=TLS) as browser:
        form = browser.get("/login")
        assert form.status_code == 200
        # The field takes a user name, not only an e-mail address.
        assert re.search(r'<input type="text" name="username"', form.text), form.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        signed_in = browser.post(
            "/login",
            data={
                "username": "filip",
                "password": filip.password,
                "csrf_token": csrf.group(1),
                "next": "/projects",
            },
        )
        assert signed_in.status_code == 303, signed_in.text
        assert signed_in.headers["location"] == "/projects"
        projects = browser.get("/projects")
        assert projects.status_code == 200
        assert "filip@uni.example" in projects.text or "Filip Zupan" in projects.text
