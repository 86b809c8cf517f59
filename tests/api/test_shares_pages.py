"""Share links over HTTP: browsers get pages and API clients JSON from the same link; the password
form's cookie opens only its own link; expired and used-up links say so (410) while the API keeps
answering 404; a delivered dataset takes no uploads; the results page remembers the last visit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.api.test_end_to_end import USER_PASSWORD, upload
from tests.conftest import TLS, LiveServer, PostgresDatabases, module_server, wait_until

MANAGER = "marko@facility.example"
VIEWER = "vesna@facility.example"
PASSWORD = "client secret 42"
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    with module_server(request, tmp_path_factory, postgres_databases, "share-api") as server:
        yield server


@dataclass
class World:
    server: LiveServer
    project_id: str
    dataset_id: str
    file_ids: list[str]

    def manager(self) -> httpx.Client:
        return self.server.client(MANAGER, USER_PASSWORD)

    def link(self, **body: object) -> dict[str, object]:
        with self.manager() as manager:
            made = manager.post(f"/api/datasets/{self.dataset_id}/share-links", json=body)
        assert made.status_code == 201, made.text
        result: dict[str, object] = made.json()
        return result


def _id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def world(server: LiveServer) -> World:
    with server.client() as admin:
        org = _id(admin.post("/api/organisations", json={"name": "Facility", "kind": "partner"}))
        people = {}
        for email in (MANAGER, VIEWER):
            body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
            people[email] = _id(admin.post("/api/users", json=body))
        project = _id(admin.post("/api/projects", json={"name": "Share API project"}))
        for email, role in ((MANAGER, "manager"), (VIEWER, "viewer")):
            member = {"role": role, "user_id": people[email]}
            _id(admin.post(f"/api/projects/{project}/members", json=member))
        dataset = _id(admin.post(f"/api/projects/{project}/datasets", json={"name": "Results"}))
    with server.client(MANAGER, USER_PASSWORD) as manager:
        # Not images (their ingest fails): the originals are stored and shared all the same.
        files = [
            upload(manager, dataset, f"notes-{n}.txt", f"notes {n}\n".encode())["file_id"]
            for n in (1, 2)
        ]
    return World(server, project, dataset, files)


def test_browsers_get_the_page_and_api_clients_json_from_one_link(world: World) -> None:
    made = world.link()
    token = str(made["token"])
    assert made["page_url"] == f"{world.server.url}/share/{token}"
    with httpx.Client(base_url=world.server.url, verify=TLS) as anonymous:
        redirected = anonymous.get(str(made["url"]), headers=HTML)
        assert redirected.status_code == 303
        assert redirected.headers["location"] == f"/share/{token}"
        page = anonymous.get(f"/share/{token}", headers=HTML)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "notes-1.txt" in page.text and "notes-2.txt" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        as_json = anonymous.get(f"/share/{token}", headers={"Accept": "application/json"})
        assert as_json.status_code == 307
        assert anonymous.get(str(made["url"])).json()["project_name"] == "Share API project"


def test_the_password_cookie_opens_its_own_link_only(world: World) -> None:
    first = world.link(password=PASSWORD)
    second = world.link(password=PASSWORD)
    token, other = str(first["token"]), str(second["token"])
    file_id = world.file_ids[0]
    with httpx.Client(base_url=world.server.url, verify=TLS) as browser:
        form = browser.get(f"/share/{token}", headers=HTML)
        assert form.status_code == 401 and 'type="password"' in form.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        # Without the form's own cookie token (another site posting the form): refused.
        forged = httpx.post(
            f"{world.server.url}/share/{token}/unlock",
            data={"password": PASSWORD, "csrf_token": csrf[1]},
            verify=TLS,
        )
        assert forged.status_code == 400
        wrong = browser.post(
            f"/share/{token}/unlock", data={"password": "nope", "csrf_token": csrf[1]}
        )
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', wrong.text)
        assert csrf is not None
        right = browser.post(
            f"/share/{token}/unlock", data={"password": PASSWORD, "csrf_token": csrf[1]}
        )
        assert right.status_code == 303
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and f"Path=/share/{token}" in cookie
        assert "Max-Age=7200" in cookie
        download = browser.get(f"/share/{token}/files/{file_id}")
        assert download.status_code == 200 and download.content == b"notes 1\n"
        # The cookie carries to the other link's path neither by path nor by value.
        assert browser.get(f"/share/{other}/files/{file_id}").status_code == 401
        value = browser.cookies.get("allmicro_share_unlock")
        assert value
        stolen = httpx.get(
            f"{world.server.url}/share/{other}/files/{file_id}",
            cookies={"allmicro_share_unlock": value},
            verify=TLS,
        )
        assert stolen.status_code == 401
        # API clients keep the header; without it the API answers 401 problem+json.
        api = f"/api/share/{token}/files/{file_id}/download"
        assert httpx.get(f"{world.server.url}{api}", verify=TLS).status_code == 401
        with_header = httpx.get(
            f"{world.server.url}{api}", headers={"X-Share-Password": PASSWORD}, verify=TLS
        )
        assert with_header.status_code == 200


def test_used_up_and_expired_links_say_so_and_the_api_stays_404(world: World) -> None:
    token = str(world.link(max_downloads=2)["token"])
    with httpx.Client(base_url=world.server.url, verify=TLS) as browser:
        assert browser.get(f"/share/{token}/files/{world.file_ids[0]}").status_code == 200
        archive = browser.get(f"/share/{token}/download.zip", params={"file": world.file_ids})
        assert archive.status_code == 200
        used_up = browser.get(f"/share/{token}", headers=HTML)
        assert used_up.status_code == 410 and "downloads are used up" in used_up.text
        assert browser.get(f"/api/share/{token}").status_code == 404
    with world.manager() as manager:
        links = manager.get(f"/api/projects/{world.project_id}/share-links").json()
    (listed,) = [link for link in links if link["max_downloads"] == 2]
    assert listed["download_count"] == 2

    soon = datetime.now(UTC) + timedelta(seconds=2)
    expiring = str(world.link(expires_at=soon.isoformat())["token"])
    with httpx.Client(base_url=world.server.url, verify=TLS) as browser:
        assert browser.get(f"/share/{expiring}", headers=HTML).status_code == 200
        wait_until(
            lambda: browser.get(f"/share/{expiring}", headers=HTML).status_code == 410,
            timeout=10,
            what="the link to expire",
        )
        assert "This link has expired" in browser.get(f"/share/{expiring}", headers=HTML).text
        assert browser.get(f"/api/share/{expiring}").status_code == 404
        unknown = browser.get("/share/amds_made-up", headers=HTML)
        assert unknown.status_code == 404 and "Link not found" in unknown.text


def test_a_delivered_dataset_is_frozen_and_the_results_page_remembers_visits(
    world: World,
) -> None:
    with world.manager() as manager:
        dataset = _id(
            manager.post(f"/api/projects/{world.project_id}/datasets", json={"name": "Final"})
        )
        upload(manager, dataset, "final.txt", b"final\n")
    with world.server.client(VIEWER, USER_PASSWORD) as viewer:
        assert viewer.post(f"/api/datasets/{dataset}/delivery").status_code == 403
        first = viewer.get(f"/projects/{world.project_id}/results")
        assert first.status_code == 200 and "this is your first visit" in first.text
        again = viewer.get(f"/projects/{world.project_id}/results")
        assert "New since your last visit" in again.text
    with world.manager() as manager:
        delivered = manager.post(f"/api/datasets/{dataset}/delivery")
        assert delivered.status_code == 200, delivered.text
        assert manager.post(f"/api/datasets/{dataset}/delivery").json() == delivered.json()
        late = manager.post(
            f"/api/datasets/{dataset}/files",
            files={"file": ("late.txt", b"late\n", "application/octet-stream")},
        )
        assert late.status_code == 409
        assert manager.get(f"/api/datasets/{dataset}/download.zip").status_code == 200
        receipts = manager.get("/api/audit", params={"action": "delivery.receipt"}).json()
        (receipt,) = [e for e in receipts["items"] if e["object_id"] == dataset]
        assert receipt["actor"] == MANAGER and receipt["bytes"] == len(b"final\n")
        cover = manager.get(f"/datasets/{dataset}/delivery")
        assert cover.status_code == 200 and "final.txt" in cover.text
        assert "Facility" in cover.text
    with world.server.client(VIEWER, USER_PASSWORD) as viewer:
        news = viewer.get(f"/projects/{world.project_id}/results")
        assert 'id="new-deliveries"' in news.text and "Final" in news.text
        assert 'id="new-deliveries"' not in viewer.get(f"/projects/{world.project_id}/results").text
