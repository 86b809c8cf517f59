"""Pages in Chromium: languages, what each role is offered, uploads and their ingest status."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TLS
from tests.web.conftest import OWNER, VIEWER, Network
from tests.web.test_viewer import TIMEOUT_MS, sign_in


def test_language_follows_the_browser_and_the_switch(network: Network, browser: Any) -> None:
    from playwright.sync_api import expect

    server = network.server
    context = browser.new_context(locale="sl-SI")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)

    page.goto(f"{server.url}/login")
    expect(page.locator("html")).to_have_attribute("lang", "sl")
    expect(page.locator("h1")).to_have_text("Prijava")
    expect(page.locator("label", has_text="Geslo")).to_be_visible()

    page.click("nav.languages a[hreflang=it]")
    expect(page.locator("h1")).to_have_text("Accedi")
    # Texts made in Python are translated as well as those in templates.
    page.fill("input[name=username]", OWNER)
    page.fill("input[name=password]", "not the password")
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator(".alert")).to_have_text("E-mail o password non corretti.")

    sign_in(page, server.url, OWNER)
    expect(page.locator("h1")).to_have_text("Progetti")
    expect(page.locator("nav.languages a.current")).to_have_text("IT")
    page.click("a.title")
    expect(page.locator("p.facts")).to_contain_text("0 immagini")

    page.click("nav.languages a[hreflang=sl]")
    expect(page.locator("h2", has_text="Nabori podatkov")).to_be_visible()
    # Slovenian has four plural forms: 0 takes the one of 5 and more.
    expect(page.locator("p.facts")).to_contain_text("0 slik")
    page.click("nav.languages a[hreflang=en]")
    expect(page.locator("h2", has_text="Datasets")).to_be_visible()
    context.close()


def test_viewer_gets_no_upload_form_and_a_contributor_sees_a_failed_ingest(
    network: Network, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = network.server
    dataset_page = f"{server.url}/datasets/{network.dataset_id}"

    viewer = browser.new_context(locale="en-GB")
    page = viewer.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, server.url, VIEWER)
    page.goto(dataset_page)
    expect(page.locator("h1")).to_have_text("SEM session")
    expect(page.locator("p.facts")).to_contain_text("Your role: viewer")
    assert page.locator("#upload-form").count() == 0
    assert page.locator("input[type=file]").count() == 0
    # The page is right not to offer it: the server refuses the same post from this session.
    cookies = {c["name"]: c["value"] for c in viewer.cookies()}
    refused = httpx.post(
        f"{dataset_page}/upload",
        cookies=cookies,
        data={"csrf_token": cookies["allmicro_csrf"]},
        files={"upload": ("x.tif", b"II*\x00", "image/tiff")},
        verify=TLS,
    )
    assert refused.status_code == 403
    viewer.close()

    contributor = browser.new_context(locale="en-GB")
    page = contributor.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, server.url, OWNER)
    page.goto(dataset_page)
    expect(page.locator("p.facts")).to_contain_text("Your role: contributor")
    noise = tmp_path / "noise.tif"
    noise.write_bytes(os.urandom(4096))
    page.set_input_files("#upload-form input[type=file]", str(noise))
    page.click("#upload-form button[type=submit]")
    page.wait_for_url(f"{dataset_page}?uploaded=1")
    # The page follows the job and shows why it failed once the worker gives up on the file.
    failed = page.locator("tr.job.failed", has_text="noise.tif")
    expect(failed).to_contain_text("unrecognised file format", timeout=60_000)
    expect(failed).to_contain_text("failed")

    page.click("header form[action='/logout'] button")
    page.wait_for_url(f"{server.url}/login")
    page.goto(dataset_page)
    page.wait_for_url(re.compile(r"/login\?next="))
    contributor.close()


def test_an_emi_and_its_ser_sent_through_the_form_one_by_one_make_one_image(
    network: Network, browser: Any
) -> None:
    """The form sends file by file without a group; the server joins them by TIA's naming rule
    however they come, here the .ser in one submission and the .emi in the next."""
    from playwright.sync_api import expect

    from tests.conftest import SAMPLES, wait_until

    server = network.server
    dataset_page = f"{server.url}/datasets/{network.dataset_id}"
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, server.url, OWNER)
    for name in ("64x64_TEM_images_acquire_1.ser", "64x64_TEM_images_acquire.emi"):
        page.goto(dataset_page)
        page.set_input_files("#upload-form input[type=file]", str(SAMPLES / "tia" / name))
        page.click("#upload-form button[type=submit]")
        page.wait_for_url(f"{dataset_page}?uploaded=1")

    def images_shown() -> list[str] | None:
        page.goto(dataset_page)
        names = page.locator("li.card .name").all_inner_texts()
        return names if "64x64_TEM_images_acquire.emi" in names else None

    names = wait_until(images_shown, timeout=60, interval=0.5, what="the acquisition's image")
    assert names == ["64x64_TEM_images_acquire.emi"]
    expect(page.locator("li.card .facts")).to_contain_text("TEM")
    context.close()
