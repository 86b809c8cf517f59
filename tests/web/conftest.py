"""Fixtures of the web UI tests: Debian's Chromium driven by Playwright, people and an image."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from allmicro_data.api.web.pages import OPENSEADRAGON
from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.conftest import SAMPLES, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a quiet, reproducible headless browser in a container without a GPU or a sandbox.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FEI = SAMPLES / "fei" / "FEI-Helios-Ebeam-16bits.tif"
OWNER = "maja@ijs.example"
VIEWER = "vid@ijs.example"
OUTSIDER = "eve@company-b.example"


def _unavailable(reason: str) -> None:
    # In CI a missing browser is a failure (make pytest installs it); elsewhere a skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The browser tests exercise pages, not SQL dialects: SQLite only, once."""
    return f"sqlite:///{tmp_path / 'catalogue.sqlite3'}"


def launch_browser() -> Iterator[Any]:
    """The session's one Chromium: `browser` in tests/conftest.py, so that test files outside
    tests/web share it (a second sync Playwright in one process fails)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: `make pytest` installs Debian's chromium")
    # Assertions wait as long as actions do: on a loaded 2-core CI machine a page that renders a
    # large document (Swagger UI, ReDoc) can take well over Playwright's default 5 s.
    playwright_api.expect.set_options(timeout=30_000)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def viewer_files() -> None:
    if not OPENSEADRAGON.is_file():
        _unavailable(f"{OPENSEADRAGON} is missing: `make web` installs it from npm")


@dataclass
class Network:
    """A partner project with a contributor and a viewer, and a company with its own pilot."""

    server: LiveServer
    project_id: str
    dataset_id: str


def _created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def network(live_server: LiveServer) -> Iterator[Network]:
    """Made through the admin API: much quicker than one CLI process per step."""
    with live_server.client() as admin:

        def organisation(name: str, kind: str) -> str:
            return _created(admin.post("/api/organisations", json={"name": name, "kind": kind}))

        def user(email: str, organisation_id: str) -> str:
            body = {"email": email, "organisation_id": organisation_id, "password": USER_PASSWORD}
            return _created(admin.post("/api/users", json=body))

        def member(project_id: str, role: str, **who: str) -> None:
            _created(admin.post(f"/api/projects/{project_id}/members", json={"role": role, **who}))

        partner = organisation("Institut Jozef Stefan", "partner")
        company = organisation("Company B", "company")
        project_id = _created(admin.post("/api/projects", json={"name": "FIB-SEM of coatings"}))
        member(project_id, "contributor", user_id=user(OWNER, partner))
        member(project_id, "viewer", user_id=user(VIEWER, partner))
        pilot = _created(
            admin.post(
                "/api/projects",
                json={
                    "name": "Company B pilot",
                    "kind": "pilot",
                    "client_organisation_id": company,
                },
            )
        )
        user(OUTSIDER, company)
        member(pilot, "viewer", organisation_id=company)
        dataset_id = _created(
            admin.post(f"/api/projects/{project_id}/datasets", json={"name": "SEM session"})
        )
    yield Network(server=live_server, project_id=project_id, dataset_id=dataset_id)


def ingest_fei(network: Network) -> str:
    """Upload the FEI sample through the API and wait for its image; the image id."""
    client = network.server.client(OWNER, USER_PASSWORD)
    uploaded = upload(client, network.dataset_id, FEI.name, FEI.read_bytes())
    job = wait_for_job(client, uploaded["job_id"])
    assert job["status"] == "succeeded", job["error"]
    (image_id,) = job["image_ids"]
    return str(image_id)


# --- What people see: every page a test opens is checked the same way -----------------------

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
# axe impacts that fail a page; "moderate" and "minor" ones are left to review.
FAILING_IMPACTS = ("serious", "critical")


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (axe from npm)."""
    if not AXE.is_file():
        _unavailable(f"{AXE} is missing: `make web` installs axe-core from npm")
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol, not as a <script> tag: our pages' CSP
        # (script-src 'self') rightly refuses inline scripts.
        page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        # Only violations come back in full: nodes that pass cost axe time and the protocol bytes.
        "async () => await window.axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {
            "id": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "targets": [node["target"] for node in violation["nodes"][:5]],
        }
        for violation in result["violations"]
        if violation["impact"] in FAILING_IMPACTS
    ]


def horizontal_overflow(page: Any) -> int:
    """How many CSS pixels the page is wider than its viewport (0 when it fits)."""
    return int(
        page.evaluate(
            "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - window.innerWidth"
        )
    )


def check_page(page: Any, name: str, *, screenshot: bool = True) -> None:
    """The checks every page gets: no serious or critical axe-core violation at the current
    viewport, and, at 390x844, no horizontal overflow. With `screenshot`, a full-page picture at
    the current viewport goes to build/screenshots/{name}-{width}.png for people to look at.
    The page keeps its viewport; call once per size (see `check_page_at_both_sizes`)."""
    page.wait_for_load_state("load")
    violations = axe_violations(page)
    assert not violations, f"{name}: axe-core violations {violations}"
    width = page.viewport_size["width"]
    if width <= PHONE["width"]:
        overflow = horizontal_overflow(page)
        assert overflow <= 0, f"{name}: {overflow} px wider than a {width} px phone"
    if screenshot:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)


def check_page_at_both_sizes(page: Any, name: str) -> None:
    """`check_page` at 1440x900 and at 390x844; the page is left at the phone size's scroll
    position but its desktop viewport is restored."""
    original = page.viewport_size
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        check_page(page, name)
    page.set_viewport_size(original or DESKTOP)
