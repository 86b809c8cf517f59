"""Every existing page at a desktop's 1440x900 and a phone's 390x844: the shared header fits
(language switch and sign-out visible), no horizontal overflow, no serious axe-core violation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_end_to_end import upload, wait_for_job
from tests.conftest import LiveServer, PostgresDatabases, module_server
from tests.web.conftest import (
    OWNER,
    PHONE,
    USER_PASSWORD,
    Network,
    check_page_at_both_sizes,
    ingest_fei,
)
from tests.web.test_viewer import TIMEOUT_MS, sign_in


@pytest.fixture(scope="module", params=["sqlite"])
def live_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[LiveServer]:
    """One server for the module (the conftest's `network` is built on it once)."""
    with module_server(request, tmp_path_factory, postgres_databases, "layout") as server:
        yield server


def _header_fits(page: Any) -> None:
    """The header's controls are on screen at the current width, none cut off at the right."""
    width = page.viewport_size["width"]
    for selector in (
        "header .brand",
        "header nav.mainnav a[href='/projects']",
        "header input[name=q]",
        "header nav.languages a[hreflang=it]",
        "header nav.languages a[hreflang=sl]",
        "header form[action='/logout'] button",
    ):
        box = page.locator(selector).bounding_box()
        assert box is not None, f"{selector} is not shown at {width} px"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box, width)


def test_every_page_fits_a_phone_and_passes_axe(
    network: Network, browser: Any, viewer_files: None
) -> None:
    from playwright.sync_api import expect

    server = network.server
    image_id = ingest_fei(network)
    # A failed ingest, so the dataset page shows its jobs table too.
    client = server.client(OWNER, USER_PASSWORD)
    failed = upload(client, network.dataset_id, "noise-with-a-long-name.tif", os.urandom(2048))
    assert wait_for_job(client, failed["job_id"])["status"] == "failed"

    context = browser.new_context(viewport=PHONE, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/login")
    check_page_at_both_sizes(page, "layout-login")

    sign_in(page, server.url, OWNER)
    pages = {
        "projects": "/projects",
        "project": f"/projects/{network.project_id}",
        "dataset": f"/datasets/{network.dataset_id}",
        "search": "/search?q=Helios",
        "image": f"/images/{image_id}",
        "ome-xml": f"/images/{image_id}/ome-xml",
        "error": "/projects/01J0000000000000000000000Z",
    }
    for name, path in pages.items():
        page.goto(f"{server.url}{path}")
        if name == "image":
            expect(page.locator("#viewer")).to_have_attribute("data-state", "loaded")
        if name == "dataset":
            expect(page.locator("tr.job.failed")).to_be_visible()
        check_page_at_both_sizes(page, f"layout-{name}")
        for size in ({"width": 1440, "height": 900}, PHONE):
            page.set_viewport_size(size)
            _header_fits(page)
    # A contributor manages nothing: the header offers no admin area.
    assert page.locator("header a[href='/admin']").count() == 0
    context.close()
