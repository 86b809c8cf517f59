"""E-mail notifications reach a real SMTP server (aiosmtpd, in a thread of the test process): the
contributor whose upload's job failed, a share link's creator at its first use (once), and a
client's people and named contacts when a delivery is ready; each in the recipient's language,
as plain text and HTML, without secrets."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage

import httpx
import pytest

from allmicro_data.notifications import MailServer, Notice
from allmicro_data.notifications import _deliver as deliver
from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.conftest import TLS, LiveServer, PostgresDatabases, free_port, module_server, wait_until
from tests.identity_servers import MailSink, running_smtp_server

MANAGER = "mara.manager@lab.example"
CONTRIBUTOR = "carlo.contributor@lab.example"
CLIENT = "klara.client@client.example"
CONTACT = "contact@client.example"


@dataclass
class Facility:
    server: LiveServer
    mail: MailSink
    ids: dict[str, str] = field(default_factory=dict)


def _created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _web_sign_in(server: LiveServer, email: str, language: str | None) -> None:
    """Sign in at the /login form, with the language switch set (or not): the language the
    user's e-mails speak."""
    cookies = {"allmicro_lang": language} if language else {}
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=30, verify=TLS) as browser:
        form = browser.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        answer = browser.post(
            "/login",
            data={"username": email, "password": USER_PASSWORD, "csrf_token": csrf.group(1)},
        )
        assert answer.status_code == 303, answer.text


@pytest.fixture(scope="module", params=["sqlite"])
def facility(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Facility]:
    port = free_port()
    with running_smtp_server() as mail:
        env = {
            "ALLMICRO_PORT": str(port),
            "ALLMICRO_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "ALLMICRO_SMTP_HOST": mail.host,
            "ALLMICRO_SMTP_PORT": str(mail.port),
            "ALLMICRO_SMTP_SECURITY": "none",
            "ALLMICRO_SMTP_USER": "",
            "ALLMICRO_MAIL_FROM": "Microscopy Facility <facility@lab.example>",
        }
        with module_server(request, tmp_path_factory, postgres_databases, "mail", env) as server:
            ids: dict[str, str] = {}
            with server.client() as admin:
                lab = _created(
                    admin.post("/api/organisations", json={"name": "Lab", "kind": "partner"})
                )
                client = _created(
                    admin.post("/api/organisations", json={"name": "Client Co", "kind": "company"})
                )
                ids["project"] = _created(
                    admin.post(
                        "/api/projects",
                        json={
                            "name": "Coating pilot",
                            "kind": "pilot",
                            "client_organisation_id": client,
                        },
                    )
                )
                for email, org, role in (
                    (MANAGER, lab, "manager"),
                    (CONTRIBUTOR, lab, "contributor"),
                    (CLIENT, client, "viewer"),
                ):
                    body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
                    user_id = _created(admin.post("/api/users", json=body))
                    _created(
                        admin.post(
                            f"/api/projects/{ids['project']}/members",
                            json={"user_id": user_id, "role": role},
                        )
                    )
                ids["dataset"] = _created(
                    admin.post(f"/api/projects/{ids['project']}/datasets", json={"name": "Batch 7"})
                )
            _web_sign_in(server, MANAGER, "it")
            _web_sign_in(server, CLIENT, "sl")
            yield Facility(server, mail, ids)


def _messages(facility: Facility, kind: str, to: str | None = None) -> list[EmailMessage]:
    return [
        m
        for m in facility.mail.received()
        if m["X-AllMicro-Notification"] == kind and (to is None or m["To"] == to)
    ]


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None, "plain text and HTML both"
    return str(text.get_content()), str(html.get_content())


def _no_secrets(message: EmailMessage) -> None:
    raw = message.as_string()
    assert USER_PASSWORD not in raw
    assert "amd_" not in raw and "amds_" not in raw, "no tokens or share-link tokens"


def test_a_contributor_hears_when_their_uploads_job_fails(facility: Facility) -> None:
    with facility.server.client(CONTRIBUTOR, USER_PASSWORD) as contributor:
        uploaded = upload(
            contributor, facility.ids["dataset"], "not-an-image.bin", b"\x00junk" * 64
        )
        job = wait_for_job(contributor, uploaded["job_id"])
    assert job["status"] == "failed", job
    (message,) = wait_until(
        lambda: _messages(facility, "job_failed", CONTRIBUTOR), timeout=30, what="job e-mail"
    )
    assert message["From"] == "Microscopy Facility <facility@lab.example>"
    assert "not-an-image.bin" in message["Subject"]
    text, html = _parts(message)
    # Never signed in to the pages: English.
    assert "could not be processed" in text
    assert f"{facility.server.url}/datasets/{facility.ids['dataset']}" in text
    assert "not-an-image.bin" in html and "<a href=" in html
    _no_secrets(message)


def test_a_share_links_first_use_and_a_delivery_are_told_in_each_recipients_language(
    facility: Facility,
) -> None:
    dataset = facility.ids["dataset"]
    with facility.server.client(MANAGER, USER_PASSWORD) as manager:
        made = manager.post(
            f"/api/datasets/{dataset}/share-links",
            json={"label": "For Klara", "password": "a share password of 24 c"},
        )
        assert made.status_code == 201, made.text
        link = made.json()
        for _ in range(2):
            opened = httpx.get(
                link["url"],
                headers={
                    "X-Share-Password": "a share password of 24 c",
                    "Accept": "application/json",
                },
                timeout=30,
                verify=TLS,
            )
            assert opened.status_code == 200, opened.text
        delivered = manager.post(
            f"/api/datasets/{dataset}/delivery",
            json={"recipients": [CONTACT], "link_url": link["page_url"]},
        )
        assert delivered.status_code == 200, delivered.text

    # The client's member (signed in in Slovenian) and the named contact (no account).
    to_client = wait_until(
        lambda: _messages(facility, "delivery_ready", CLIENT), timeout=30, what="client e-mail"
    )
    to_contact = wait_until(
        lambda: _messages(facility, "delivery_ready", CONTACT), timeout=30, what="contact e-mail"
    )
    (client_message,), (contact_message,) = to_client, to_contact
    client_text, client_html = _parts(client_message)
    assert client_message["Subject"] == "Rezultati so pripravljeni: Batch 7"
    assert "Coating pilot" in client_text
    assert f"{facility.server.url}/datasets/{dataset}" in client_text
    assert link["page_url"] not in client_text, "members get the page, not the link"
    assert 'lang="sl"' in client_html
    contact_text, _ = _parts(contact_message)
    assert contact_message["Subject"] == "Results ready: Batch 7"
    assert link["page_url"] in contact_text
    # No one else of the project heard of the delivery.
    assert {m["To"] for m in _messages(facility, "delivery_ready")} == {CLIENT, CONTACT}

    # The link's creator heard of its first use once, in Italian: one mail thread sends in
    # order, so the use messages were all handed over before the delivery's.
    (first_use,) = _messages(facility, "share_first_use")
    assert first_use["To"] == MANAGER
    assert first_use["Subject"] == "Il tuo link di condivisione è stato aperto: For Klara"
    use_text, _ = _parts(first_use)
    assert "Batch 7" in use_text
    for message in (client_message, first_use):
        _no_secrets(message)
    # The contact's message carries the link the manager made for them, and nothing more.
    for message in (client_message, contact_message, first_use):
        assert USER_PASSWORD not in message.as_string()
        assert "a share password of 24 c" not in message.as_string()


def test_an_unreachable_mail_server_is_logged_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = MailServer(
        host="127.0.0.1",
        port=free_port(),  # nothing listens there
        security="none",
        user="mailer",
        password="smtp secret 99",
        sender="facility@lab.example",
        timeout=5.0,
        public_url=None,
    )
    notice = Notice("job_failed", CONTRIBUTOR, "Processing failed", "text", "<p>html</p>")
    with caplog.at_level(logging.WARNING, logger="allmicro_data.notifications"):
        deliver(server, notice)  # returns: a failure never reaches the caller
    assert f"e-mail job_failed to {CONTRIBUTOR} not sent" in caplog.text
    assert "smtp secret 99" not in caplog.text
