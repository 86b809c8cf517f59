"""Result delivery in Chromium: a manager shares a dataset with a password and marks it
delivered; a client without an account opens the link, types the password, views an image,
downloads two files whose SHA256SUMS verify; the manager revokes the link and its page says so."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.conftest import SAMPLES, LiveServer, PostgresDatabases, module_server
from tests.web.conftest import FEI, _created, check_page_at_both_sizes
from tests.web.test_viewer import TIMEOUT_MS, sign_in

ZEISS = SAMPLES / "zeiss-sem" / "test_tiff_Zeiss_SEM_512pix.tif"
MANAGER = "mojca@facility.example"
LINK_PASSWORD = "client secret 42"


@pytest.fixture(scope="module", params=["sqlite"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    with module_server(request, tmp_path_factory, postgres_databases, "share-pages") as server:
        yield server


@dataclass
class Delivery:
    project_id: str
    dataset_id: str
    image_ids: list[str]
    sha256: dict[str, str]  # file name -> sha256


@pytest.fixture(scope="module")
def delivery(server: LiveServer) -> Delivery:
    """A facility's pilot project for a company, its manager, and a dataset of two images."""
    with server.client() as admin:
        facility = _created(
            admin.post("/api/organisations", json={"name": "Nano Facility", "kind": "partner"})
        )
        company = _created(
            admin.post("/api/organisations", json={"name": "Coatings Ltd", "kind": "company"})
        )
        manager = _created(
            admin.post(
                "/api/users",
                json={"email": MANAGER, "organisation_id": facility, "password": USER_PASSWORD},
            )
        )
        project_id = _created(
            admin.post(
                "/api/projects",
                json={
                    "name": "Coatings pilot",
                    "kind": "pilot",
                    "client_organisation_id": company,
                    "description": "Cross-sections of three coating batches.",
                },
            )
        )
        _created(
            admin.post(
                f"/api/projects/{project_id}/members", json={"role": "manager", "user_id": manager}
            )
        )
        dataset_id = _created(
            admin.post(
                f"/api/projects/{project_id}/datasets",
                json={"name": "Batch 7 cross-sections", "description": "SEM, 5 kV."},
            )
        )
    with server.client(MANAGER, USER_PASSWORD) as client:
        uploads = [upload(client, dataset_id, p.name, p.read_bytes()) for p in (FEI, ZEISS)]
        image_ids = []
        for uploaded in uploads:
            job = wait_for_job(client, uploaded["job_id"])
            assert job["status"] == "succeeded", job["error"]
            image_ids.extend(job["image_ids"])
    return Delivery(
        project_id,
        dataset_id,
        image_ids,
        {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (FEI, ZEISS)},
    )


def test_a_client_opens_a_password_link_views_downloads_and_sees_it_revoked(
    server: LiveServer, delivery: Delivery, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    manager_context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
    manager = manager_context.new_page()
    manager.set_default_timeout(TIMEOUT_MS)
    sign_in(manager, server.url, MANAGER)

    # The project page leads managers to sharing; the sharing page creates the link.
    manager.goto(f"{server.url}/projects/{delivery.project_id}")
    manager.click("a#sharing-link")
    manager.wait_for_url(f"{server.url}/projects/{delivery.project_id}/sharing")
    check_page_at_both_sizes(manager, "share-manage")
    manager.select_option("select[name=target]", delivery.dataset_id)
    manager.fill("input[name=label]", "For Coatings Ltd")
    manager.fill("input[name=password]", LINK_PASSWORD)
    manager.click("#create button[type=submit]")
    url = manager.locator("#new-link-url").input_value()
    assert re.fullmatch(rf"{re.escape(server.url)}/share/amds_[\w-]+", url), url

    # The manager delivers the dataset: frozen (an upload is refused), with a cover document.
    manager.click(f"li[data-dataset-id='{delivery.dataset_id}'] form.deliver button")
    expect(manager.locator(f"li[data-dataset-id='{delivery.dataset_id}'] .badge")).to_be_visible()
    with server.client(MANAGER, USER_PASSWORD) as client:
        refused = client.post(
            f"/api/datasets/{delivery.dataset_id}/files",
            files={"file": ("late.tif", b"late bytes", "application/octet-stream")},
        )
        assert refused.status_code == 409, refused.text
    manager.goto(f"{server.url}/datasets/{delivery.dataset_id}")
    expect(manager.locator("#delivery-notice")).to_be_visible()
    expect(manager.locator("#upload-form")).to_have_count(0)

    # A client, without an account, in a fresh browser: the password form first.
    client_context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
    client = client_context.new_page()
    client.set_default_timeout(TIMEOUT_MS)
    first = client.goto(url)
    assert first is not None and first.status == 401
    expect(client.locator("h1")).to_have_text("This shared link is protected")
    check_page_at_both_sizes(client, "share-password")
    client.fill("input[name=password]", "not the password")
    client.click("form button[type=submit]")
    expect(client.locator("#password-error")).to_be_visible()
    client.fill("input[name=password]", LINK_PASSWORD)
    client.click("form button[type=submit]")
    client.wait_for_url(url)
    expect(client.locator("#share-title")).to_have_text("Coatings pilot")
    expect(client.locator("table.files tbody tr")).to_have_count(2)
    for sha in delivery.sha256.values():
        expect(client.locator(f"code.sha:text-is('{sha}')")).to_have_count(1)
    # The password lives in an HttpOnly cookie of this link's path, not in each request.
    (cookie,) = [c for c in client_context.cookies() if c["name"] == "allmicro_share_unlock"]
    assert cookie["httpOnly"] and cookie["path"] == url.removeprefix(server.url)
    check_page_at_both_sizes(client, "share")

    # The client's language, without an account.
    client.click("nav.languages a[hreflang=it]")
    expect(client.locator("#download-all")).to_have_text("Scarica tutto (ZIP)")
    client.click("nav.languages a[hreflang=en]")
    expect(client.locator("#download-all")).to_have_text("Download everything (ZIP)")

    # The viewer, its tiles through the link's path with the cookie alone.
    tiles: list[int] = []
    client.on(
        "response",
        lambda r: (
            tiles.append(r.status) if "/iiif/" in r.url and "info.json" not in r.url else None
        ),
    )
    client.click(f"a[href$='/images/{delivery.image_ids[-1]}']")
    expect(client.locator("#viewer")).to_have_attribute("data-state", "loaded")
    assert tiles and all(status == 200 for status in tiles), tiles
    check_page_at_both_sizes(client, "share-image")
    client.go_back()

    # Two files chosen, one ZIP, its SHA256SUMS verify against the bytes inside.
    for box in client.locator("table.files input[type=checkbox]").all():
        box.check()
    with client.expect_download() as download_info:
        client.click("button.download-selected")
    archive = zipfile.ZipFile(io.BytesIO(Path(download_info.value.path()).read_bytes()))
    sums = archive.read("SHA256SUMS").decode().splitlines()
    assert len(sums) == 2
    for line in sums:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest
        assert delivery.sha256[name.rsplit("/", 1)[-1]] == digest

    # The delivery's cover lists the files with their checksums and the facility.
    client.click("a.cover-link")
    expect(client.locator("#cover-facility")).to_contain_text("Nano Facility")
    for sha in delivery.sha256.values():
        expect(client.locator(f"#cover code.sha:text-is('{sha}')")).to_have_count(1)
    check_page_at_both_sizes(client, "share-cover")

    # The manager sees the use and the download, and revokes the link.
    manager.goto(f"{server.url}/projects/{delivery.project_id}/sharing")
    row = manager.locator("tr[data-state=active]")
    expect(row).to_have_count(1)
    assert int(row.locator(".uses").inner_text()) >= 1
    expect(row.locator(".downloads-count")).to_have_text("1")
    row.locator("form.revoke button").click()
    expect(manager.locator("tr[data-state=revoked] .state")).to_have_text("revoked")

    # The project's members see what is new since their last visit, deliveries first.
    manager.goto(f"{server.url}/projects/{delivery.project_id}/results")
    expect(manager.locator("#new-deliveries")).to_contain_text("Batch 7 cross-sections")
    check_page_at_both_sizes(manager, "share-results")

    gone = client.goto(url)
    assert gone is not None and gone.status == 410
    expect(client.locator("h1")).to_have_text("This link was revoked")
    check_page_at_both_sizes(client, "share-revoked")

    # Every download left a receipt in the audit log: which link, what, how many bytes.
    with server.client() as admin:
        events = admin.get("/api/audit", params={"action": "delivery.receipt"}).json()["items"]
    assert len(events) == 1
    assert events[0]["bytes"] == FEI.stat().st_size + ZEISS.stat().st_size
    assert {f["sha256"] for f in events[0]["detail"]["files"]} == set(delivery.sha256.values())
    client_context.close()
    manager_context.close()
