"""The data lifecycle in Chromium: a contributor describes and tags images on their page, a viewer
finds them by tag in the search page, and a manager deletes an image, restores it from the
trash, deletes it again and purges it, which removes its objects from both stores of the
replicated store. Every page is checked at both sizes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_lifecycle import _created, ingest, objects_of, tiny_tiff
from tests.conftest import LiveServer, PostgresDatabases, module_server
from tests.web.conftest import USER_PASSWORD, check_page_at_both_sizes
from tests.web.test_viewer import TIMEOUT_MS, sign_in

MANAGER = "mojca@lab.example"
CONTRIBUTOR = "cene@lab.example"
VIEWER = "vesna@lab.example"


@dataclass
class Site:
    server: LiveServer
    stores: tuple[Path, Path]
    project: str
    dataset: str
    tagged: str
    other: str


@pytest.fixture(scope="module", params=["sqlite"])
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Site]:
    stores = tmp_path_factory.mktemp("lifecycle-web-stores")
    primary, replica = stores / "primary", stores / "replica"
    env = {
        "ALLMICRO_STORAGE_URL": primary.as_uri(),
        "ALLMICRO_REPLICA_URLS": json.dumps([replica.as_uri()]),
        "ALLMICRO_REPLICA_QUORUM": "1",
    }
    with (
        module_server(
            request, tmp_path_factory, postgres_databases, "lifecycle-web", env
        ) as server,
        server.client() as admin,
    ):
        org = _created(admin.post("/api/organisations", json={"name": "Lab", "kind": "partner"}))
        project = _created(admin.post("/api/projects", json={"name": "Thin films"}))
        for email, role in ((MANAGER, "manager"), (CONTRIBUTOR, "contributor"), (VIEWER, "viewer")):
            body = {"email": email, "organisation_id": org, "password": USER_PASSWORD}
            user = _created(admin.post("/api/users", json=body))
            member = {"user_id": user, "role": role}
            _created(admin.post(f"/api/projects/{project}/members", json=member))
        dataset = _created(
            admin.post(f"/api/projects/{project}/datasets", json={"name": "Sputtered"})
        )
        yield Site(
            server=server,
            stores=(primary, replica),
            project=project,
            dataset=dataset,
            tagged=ingest(server, dataset, "film-a.tif", tiny_tiff(21), CONTRIBUTOR),
            other=ingest(server, dataset, "film-b.tif", tiny_tiff(22), CONTRIBUTOR),
        )


def _page(browser: Any, site: Site, email: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, site.server.url, email)
    return context, page


def test_a_contributor_tags_images_and_a_viewer_finds_them_by_tag(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    url = site.server.url
    context, page = _page(browser, site, CONTRIBUTOR)
    for image, tags in ((site.tagged, "batch-7, coating"), (site.other, "batch-8")):
        page.goto(f"{url}/images/{image}")
        page.click("#image-edit summary")
        page.fill("#image-description", "Sputtered at 300 K")
        page.fill("#image-tags", tags)
        page.fill("#image-pairs", "sample = S-12\nclient reference = PO 4471")
        if image == site.tagged:
            check_page_at_both_sizes(page, "lifecycle-image-edit")
        page.click("#image-edit button[type=submit]")
        page.wait_for_url(f"{url}/images/{image}")
        expect(page.locator("#lifecycle .lc-tags")).to_contain_text(tags.split(",")[0])
    expect(page.locator("#lifecycle .lc-pairs")).to_contain_text("PO 4471")
    # The dataset's own tags and the dataset page's form.
    page.goto(f"{url}/datasets/{site.dataset}")
    page.click("#dataset-edit summary")
    page.fill("#dataset-tags", "delivery-2026")
    check_page_at_both_sizes(page, "lifecycle-dataset-edit")
    page.click("#dataset-edit button[type=submit]")
    page.wait_for_url(f"{url}/datasets/{site.dataset}")
    expect(page.locator("#lifecycle .lc-tags")).to_contain_text("delivery-2026")
    context.close()

    context, page = _page(browser, site, VIEWER)
    page.goto(f"{url}/search")
    page.fill("form.filters input[name=q]", "tag:batch-7")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/search?*")
    results = page.locator("ul.grid a")
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("href", f"/images/{site.tagged}")
    check_page_at_both_sizes(page, "lifecycle-search-by-tag")
    # A tag on an image's page is a search for it; the viewer has no edit form.
    page.goto(f"{url}/images/{site.other}")
    assert page.locator("#image-edit").count() == 0
    page.click("#lifecycle .lc-tags a:text('batch-8')")
    page.wait_for_url("**/search?*")
    expect(page.locator("ul.grid a")).to_have_count(1)
    context.close()


def test_a_manager_deletes_restores_and_purges_an_image(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    url = site.server.url
    image = site.other
    for store in site.stores:
        assert objects_of(store, image), f"the image has no objects on {store}"
    context, page = _page(browser, site, MANAGER)
    page.goto(f"{url}/projects/{site.project}")
    check_page_at_both_sizes(page, "lifecycle-project")

    page.goto(f"{url}/images/{image}")
    page.click("#delete-image")
    page.wait_for_url("**/trash?*")
    entry = page.locator(f"li.lc-entry[data-id='{image}']")
    expect(entry).to_contain_text("film-b.tif")
    expect(entry).to_contain_text(MANAGER)
    expect(page.locator("#trash-notice")).to_be_visible()
    # build/screenshots/trash-*.png are the pictures in docs/screenshots (copied by hand).
    check_page_at_both_sizes(page, "trash")

    entry.locator("button.restore").click()
    page.wait_for_url("**/trash?*done=restored*")
    expect(page.locator(f"li.lc-entry[data-id='{image}']")).to_have_count(0)
    response = page.goto(f"{url}/images/{image}")
    assert response is not None and response.status == 200

    page.click("#delete-image")
    page.wait_for_url("**/trash?*")
    page.locator(f"li.lc-entry[data-id='{image}'] button.purge").click()
    page.wait_for_url("**/trash?*done=purged*")
    expect(page.locator("#trash-empty")).to_be_visible()
    response = page.goto(f"{url}/images/{image}")
    assert response is not None and response.status == 404
    context.close()
    for store in site.stores:
        assert objects_of(store, image) == [], f"objects of the purged image left on {store}"
