"""The admin area in Chromium: an admin creates an organisation and a user, resets a password,
revokes a token, filters and exports the audit log, reruns and dismisses failed jobs; a manager
sees only their projects' part, a viewer none of it; /docs and /redoc work offline."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    TLS,
    LiveServer,
    PostgresDatabases,
    module_server,
)
from tests.web.conftest import check_page_at_both_sizes
from tests.web.test_viewer import TIMEOUT_MS

MANAGER = "mira@lab.example"
CONTRIBUTOR = "tine@lab.example"
VIEWER = "vera@lab.example"


@dataclass
class Facility:
    server: LiveServer
    project_id: str
    other_project_id: str
    dataset_id: str
    failed_jobs: list[str]


@pytest.fixture(scope="module", params=["sqlite"])
def facility(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Facility]:
    """A lab with a manager, a contributor and a viewer in one project, another project they
    are not in, and two uploads that failed (bytes no reader recognises)."""
    with module_server(request, tmp_path_factory, postgres_databases, "admin-pages") as server:
        admin = server.client()

        def created(response: httpx.Response) -> str:
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        lab = created(admin.post("/api/organisations", json={"name": "Lab", "kind": "partner"}))
        project = created(admin.post("/api/projects", json={"name": "Coatings"}))
        other = created(admin.post("/api/projects", json={"name": "Someone else's"}))
        for email, role in ((MANAGER, "manager"), (CONTRIBUTOR, "contributor"), (VIEWER, "viewer")):
            body = {"email": email, "organisation_id": lab, "password": USER_PASSWORD}
            user = created(admin.post("/api/users", json=body))
            member = {"user_id": user, "role": role}
            created(admin.post(f"/api/projects/{project}/members", json=member))
        dataset = created(admin.post(f"/api/projects/{project}/datasets", json={"name": "Run 1"}))
        contributor = server.client(CONTRIBUTOR, USER_PASSWORD)
        jobs = [
            upload(contributor, dataset, f"broken-{n}.tif", os.urandom(2048))["job_id"]
            for n in range(2)
        ]
        for job in jobs:
            assert wait_for_job(contributor, job)["status"] == "failed"
        yield Facility(server, project, other, dataset, jobs)


@pytest.fixture(scope="module")
def context(browser: Any) -> Iterator[Any]:
    made = browser.new_context(locale="en-GB", viewport={"width": 1440, "height": 900})
    yield made
    made.close()


def sign_in(context: Any, server: LiveServer, email: str, password: str) -> Any:
    context.clear_cookies()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{server.url}/projects")
    return page


def test_an_admin_administers_the_facility_in_the_browser(facility: Facility, context: Any) -> None:
    from playwright.sync_api import expect

    server = facility.server
    page = sign_in(context, server, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.click("header a[href='/admin']")
    page.wait_for_url(f"{server.url}/admin")
    expect(page.locator(".tiles")).to_contain_text("Failed jobs")
    check_page_at_both_sizes(page, "admin-overview")

    # An organisation, then a user in it.
    page.click(".admin-nav a[href='/admin/organisations']")
    page.fill("#organisation-form input[name=name]", "Company C")
    page.select_option("#organisation-form select[name=kind]", "company")
    page.fill("#organisation-form input[name=country]", "si")
    page.click("#organisation-form button[type=submit]")
    expect(page.locator("p.notice")).to_have_text("Created.")
    expect(page.locator("h1")).to_have_text("Company C")
    page.goto(f"{server.url}/admin/organisations")
    expect(page.locator("table")).to_contain_text("Company C")
    check_page_at_both_sizes(page, "admin-organisations")

    page.click(".admin-nav a[href='/admin/users']")
    page.fill("#user-form input[name=email]", "cene@company-c.example")
    page.select_option("#user-form select[name=organisation_id]", label="Company C")
    page.fill("#user-form input[name=password]", "first long password 1")
    page.click("#user-form button[type=submit]")
    expect(page.locator("p.notice")).to_have_text("Created.")
    user_url = page.url.split("?")[0]
    # A refused create shows why on the same page and keeps what was typed.
    page.goto(f"{server.url}/admin/users")
    page.fill("#user-form input[name=email]", "cene@company-c.example")
    page.fill("#user-form input[name=password]", "another long password")
    page.click("#user-form button[type=submit]")
    expect(page.locator("p.alert")).to_contain_text("already exists")
    expect(page.locator("#user-form input[name=email]")).to_have_value("cene@company-c.example")
    check_page_at_both_sizes(page, "admin-users")

    # The user's token, then a password reset that signs them out; the token is revoked here.
    cene = httpx.post(
        f"{server.url}/api/auth/token",
        data={"username": "cene@company-c.example", "password": "first long password 1"},
        verify=TLS,
    )
    assert cene.status_code == 200, cene.text
    bearer = {"Authorization": f"Bearer {cene.json()['access_token']}"}
    made = httpx.post(
        f"{server.url}/api/tokens",
        headers=bearer,
        json={"name": "SEM PC", "scope": "read"},
        verify=TLS,
    )
    assert made.status_code == 201, made.text
    personal = {"Authorization": f"Bearer {made.json()['token']}"}
    page.goto(user_url)
    expect(page.locator("tr.token")).to_contain_text("SEM PC")
    page.fill("#password-form input[name=new_password]", "second long password 2")
    page.click("#password-form button[type=submit]")
    expect(page.locator("p.notice")).to_contain_text("password was reset")
    signed_in = httpx.post(
        f"{server.url}/api/auth/token",
        data={"username": "cene@company-c.example", "password": "second long password 2"},
        verify=TLS,
    )
    assert signed_in.status_code == 200
    assert httpx.get(f"{server.url}/api/me", headers=bearer, verify=TLS).status_code == 401
    assert httpx.get(f"{server.url}/api/me", headers=personal, verify=TLS).status_code == 200
    page.click("tr.token button:has-text('Revoke')")
    expect(page.locator("p.notice")).to_have_text("The token was revoked.")
    expect(page.locator("tr.token")).to_contain_text("revoked")
    assert httpx.get(f"{server.url}/api/me", headers=personal, verify=TLS).status_code == 401
    check_page_at_both_sizes(page, "admin-user")

    # The audit log, filtered by action and by object; its CSV export answers the same.
    page.click(".admin-nav a[href='/admin/audit']")
    page.fill("#audit-filters input[name=action]", "user.create")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#event-count")).to_have_text("4 events")
    actions = page.locator("tr.event td.action").all_inner_texts()
    assert actions and set(actions) == {"user.create"}
    page.fill("#audit-filters input[name=action]", "")
    page.fill("#audit-filters input[name=object_id]", "token")
    page.click("#audit-filters button[type=submit]")
    expect(page.locator("#event-count")).to_have_text("2 events")  # created, revoked
    check_page_at_both_sizes(page, "admin-audit")
    exported = page.request.get(
        server.url + (page.locator("#audit-csv").get_attribute("href") or "")
    )
    assert exported.status == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text())))
    assert [r["action"] for r in rows] == ["token.create", "token.revoke"], rows

    # Jobs: one failed upload is rerun, the other dismissed; both leave the failed list.
    rerun, dismissed = facility.failed_jobs
    page.click(".admin-nav a[href='/admin/jobs']")
    failed = page.locator("#failed-jobs tr.job")
    expect(failed).to_have_count(2)
    check_page_at_both_sizes(page, "admin-jobs")
    page.locator(f"tr[data-job-id='{rerun}'] button", has_text="Rerun").click()
    expect(page.locator("p.notice")).to_have_text("The job was queued again.")
    page.locator(f"tr[data-job-id='{dismissed}'] button", has_text="Dismiss").click()
    expect(page.locator("p.notice")).to_have_text("The job was dismissed.")
    expect(page.locator(f"#failed-jobs tr[data-job-id='{dismissed}']")).to_have_count(0)
    admin = server.client()
    listed = admin.get(f"/api/datasets/{facility.dataset_id}/jobs").json()["items"]
    assert dismissed not in {j["id"] for j in listed}
    events = admin.get("/api/audit", params={"object_id": rerun}).json()["items"]
    assert "job.rerun" in {e["action"] for e in events}
    # The rerun ran again (and the same bytes failed again): its attempts started afresh.
    job = wait_for_job(admin, rerun)
    assert job["status"] == "failed" and job["attempts"] >= 1

    for path, name in (
        ("/admin/storage", "admin-storage"),
        ("/admin/usage", "admin-usage"),
        (f"/admin/projects/{facility.project_id}", "admin-project"),
    ):
        page.goto(server.url + path)
        check_page_at_both_sizes(page, name)
    expect(page.locator("#members")).to_contain_text(MANAGER)
    page.close()


def test_a_manager_sees_their_projects_part_and_a_viewer_none(
    facility: Facility, context: Any
) -> None:
    from playwright.sync_api import expect

    server = facility.server
    page = sign_in(context, server, MANAGER, USER_PASSWORD)
    page.click("header a[href='/admin']")
    expect(page.locator(".admin-nav a[href='/admin/users']")).to_have_count(0)
    page.click(".admin-nav a[href='/admin/projects']")
    expect(page.locator("table")).to_contain_text("Coatings")
    expect(page.locator("table")).not_to_contain_text("Someone else's")
    # By e-mail a manager invites (whether or not the address has an account).
    page.goto(f"{server.url}/admin/projects/{facility.project_id}")
    page.fill("#member-form input[name=email]", "new.hire@lab.example")
    page.click("#member-form button[type=submit]")
    expect(page.locator("p.notice")).to_contain_text("invitation")
    expect(page.locator("li.invitation")).to_contain_text("new.hire@lab.example")
    # The viewer's role is changed in place.
    row = page.locator("tr.member", has_text=VIEWER)
    row.locator("select[name=role]").select_option("contributor")
    row.locator("button", has_text="Change").click()
    expect(page.locator("tr.member", has_text=VIEWER).locator("select")).to_have_value(
        "contributor"
    )
    admin = server.client()
    members = admin.get(f"/api/projects/{facility.project_id}/members").json()
    assert {m["user_email"]: m["role"] for m in members}[VIEWER] == "contributor"
    row = page.locator("tr.member", has_text=VIEWER)
    row.locator("select[name=role]").select_option("viewer")
    row.locator("button", has_text="Change").click()
    expect(page.locator("tr.member", has_text=VIEWER).locator("select")).to_have_value("viewer")
    for path in (
        "/admin/users",
        "/admin/storage",
        f"/admin/projects/{facility.other_project_id}",
    ):
        assert page.goto(server.url + path).status == 404, path
    page.close()

    page = sign_in(context, server, CONTRIBUTOR, USER_PASSWORD)
    assert page.locator("header a[href='/admin']").count() == 0
    assert page.goto(f"{server.url}/admin").status == 404
    page.close()


def test_a_contributor_dismisses_a_failed_upload_on_the_dataset_page(
    facility: Facility, context: Any
) -> None:
    from playwright.sync_api import expect

    server = facility.server
    contributor = server.client(CONTRIBUTOR, USER_PASSWORD)
    job = upload(contributor, facility.dataset_id, "broken-3.tif", os.urandom(1024))["job_id"]
    assert wait_for_job(contributor, job)["status"] == "failed"
    page = sign_in(context, server, CONTRIBUTOR, USER_PASSWORD)
    page.goto(f"{server.url}/datasets/{facility.dataset_id}")
    row = page.locator(f"tr.job[data-job-id='{job}']")
    expect(row.locator("button", has_text="Rerun")).to_be_visible()
    row.locator("button", has_text="Dismiss").click()
    page.wait_for_url(re.compile(r"/datasets/.*done=dismissed"))
    expect(page.locator(f"tr.job[data-job-id='{job}']")).to_have_count(0)
    # A viewer may not: the API refuses the same.
    viewer = server.client(VIEWER, USER_PASSWORD)
    assert viewer.post(f"/api/jobs/{job}/rerun").status_code in (403, 404)
    page.close()


def test_api_docs_render_offline(facility: Facility, context: Any) -> None:
    from playwright.sync_api import expect

    server = facility.server
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    elsewhere: list[str] = []
    page.route(
        re.compile(r"^(?!" + re.escape(server.url) + r").*"),
        lambda route: (elsewhere.append(route.request.url), route.abort()),
    )
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("AllMicro Data")
    expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)
    page.goto(f"{server.url}/redoc")
    # ReDoc renders after parsing the whole document: seconds on a loaded machine.
    expect(page.locator("h1", has_text="AllMicro Data")).to_be_visible(timeout=30_000)
    assert elsewhere == [], elsewhere
    # The policy may block what the explorers would fetch from elsewhere (ReDoc's logo from its
    # CDN), never their own scripts and styles from this server.
    elsewhere_url = re.compile(r"'https?://(?!" + re.escape(server.url.split("://")[1]) + r")")
    assert all(elsewhere_url.search(m) for m in refused), refused
    page.close()


def test_usage_counts_bytes_downloaded_per_project_and_client(facility: Facility) -> None:
    """No browser: the figures behind /admin/usage, and who may read and change what."""
    server = facility.server
    admin = server.client()
    company = admin.post("/api/organisations", json={"name": "Client D", "kind": "company"})
    assert company.status_code == 201, company.text
    pilot = admin.post(
        "/api/projects",
        json={"name": "D pilot", "kind": "pilot", "client_organisation_id": company.json()["id"]},
    )
    assert pilot.status_code == 201, pilot.text
    file_id = admin.get(f"/api/jobs/{facility.failed_jobs[0]}").json()["file_id"]
    size = admin.get(f"/api/files/{file_id}").json()["size"]
    whole = admin.get(f"/api/files/{file_id}/download")
    assert whole.status_code == 200 and len(whole.content) == size
    part = admin.get(f"/api/files/{file_id}/download", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206

    figures = admin.get("/api/admin/usage", params={"months": 2}).json()
    this_month = figures["months"][-1]
    projects = {p["name"]: p for p in figures["projects"]}
    coatings = {m["month"]: m["bytes"] for m in projects["Coatings"]["downloaded"]}
    assert coatings[this_month] == size + 100
    assert projects["Coatings"]["stored_bytes"] >= 2 * 2048
    assert all(m["bytes"] == 0 for m in projects["Someone else's"]["downloaded"])
    (client,) = figures["organisations"]
    assert (client["name"], client["projects"], client["stored_bytes"]) == ("Client D", 1, 0)

    manager = server.client(MANAGER, USER_PASSWORD)
    theirs = manager.get("/api/admin/usage").json()
    assert [p["name"] for p in theirs["projects"]] == ["Coatings"]
    assert theirs["organisations"] == []
    jobs = manager.get("/api/jobs", params={"status": "failed"}).json()["items"]
    assert {j["dataset_id"] for j in jobs} == {facility.dataset_id}
    # Organisations and tokens stay the global admins'.
    org_id = company.json()["id"]
    assert manager.patch(f"/api/organisations/{org_id}", json={"name": "X"}).status_code in (
        403,
        404,
    )
    renamed = admin.patch(f"/api/organisations/{org_id}", json={"name": "Client D d.o.o."})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Client D d.o.o."
    me = manager.get("/api/me").json()["id"]
    assert manager.get(f"/api/users/{me}/tokens").status_code == 403
    assert admin.get(f"/api/users/{me}/tokens").json() == []


def test_audit_filters_with_control_characters_are_refused_before_anything_streams(
    facility: Facility,
) -> None:
    """PostgreSQL refuses a NUL only when the query runs, after the CSV's response has begun:
    schemathesis saw the connection cut mid-stream. Every filter is checked first."""
    admin = facility.server.client()
    for path in ("/api/audit", "/api/audit.csv"):
        for name in ("action", "actor", "project_id", "object_id"):
            response = admin.get(path, params={name: "a\x00b"})
            assert response.status_code == 422, (path, name, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "U+0000" in response.json()["detail"], response.text
