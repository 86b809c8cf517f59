"""The dataset page's resumable uploader in Chromium: a TIA .emi and its .ser dropped together
become one image, files joined by hand share a group, a file the dataset holds already says so
(also through the plain form without JavaScript), a refused file says why, and a 300 MB upload
goes on from where it stopped after its server was killed and started again, by itself once a
dropped network is back, and after the page was reloaded, the file chosen anew and the
upload paused and resumed."""

from __future__ import annotations

import base64
import hashlib
import re
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mrcfile
import pytest

from allmicro_data.api.web.pages import STATIC_DIR
from allmicro_data.ingest.grouping import member
from tests.api.test_end_to_end import upload
from tests.api.test_lifecycle import _created, tiny_tiff
from tests.conftest import SAMPLES, TLS, LiveServer, PostgresDatabases, module_server, wait_until
from tests.web.conftest import USER_PASSWORD, _unavailable, check_page_at_both_sizes
from tests.web.test_viewer import TIMEOUT_MS, sign_in

CONTRIBUTOR = "tina@lab.example"
TIA = SAMPLES / "tia"
EMI = TIA / "64x64_TEM_images_acquire.emi"
SER = TIA / "64x64_TEM_images_acquire_1.ser"
# The first project's storage quota: a refusal to show.
QUOTA = 4 * 1024 * 1024


@dataclass
class Site:
    server: LiveServer
    dataset: str  # in a project with a quota of QUOTA bytes
    roomy: str  # in a project without one


TUS_BUNDLE = STATIC_DIR / "vendor" / "tus-js-client" / "tus.min.js"


@pytest.fixture(scope="module", params=["sqlite"])
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases | None,
) -> Iterator[Site]:
    """One server for the file; the last test kills it and starts it again."""
    if not TUS_BUNDLE.is_file():
        _unavailable(f"{TUS_BUNDLE} is missing: `make web` copies it from npm")
    with (
        module_server(request, tmp_path_factory, postgres_databases, "browser-upload") as server,
        server.client() as admin,
    ):
        org = _created(admin.post("/api/organisations", json={"name": "Lab", "kind": "partner"}))
        body = {"email": CONTRIBUTOR, "organisation_id": org, "password": USER_PASSWORD}
        user = _created(admin.post("/api/users", json=body))
        datasets = []
        for name, quota in (("Lamellae", QUOTA), ("Tomography", None)):
            project = _created(admin.post("/api/projects", json={"name": name}))
            if quota is not None:
                admin.patch(f"/api/projects/{project}", json={"quota_bytes": quota})
            member_body = {"user_id": user, "role": "contributor"}
            _created(admin.post(f"/api/projects/{project}/members", json=member_body))
            new = admin.post(f"/api/projects/{project}/datasets", json={"name": "TEM"})
            datasets.append(_created(new))
        yield Site(server=server, dataset=datasets[0], roomy=datasets[1])


def _dataset_page(
    browser: Any, server: LiveServer, dataset: str, *, scripts: bool = True
) -> tuple[Any, Any]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="en-GB", java_script_enabled=scripts
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, server.url, CONTRIBUTOR)
    page.goto(f"{server.url}/datasets/{dataset}")
    return context, page


def _settled_jobs(client: httpx.Client, dataset: str, count: int) -> list[dict[str, Any]]:
    """The dataset's jobs once there are `count` of them and none is queued or running."""

    def settled() -> list[dict[str, Any]] | None:
        jobs: list[dict[str, Any]] = (
            client.get(f"/api/datasets/{dataset}/jobs").raise_for_status().json()["items"]
        )
        pending = any(job["status"] in ("queued", "running") for job in jobs)
        return jobs if len(jobs) >= count and not pending else None

    found: list[dict[str, Any]] = wait_until(
        settled, timeout=180, interval=0.25, what="the dataset's jobs"
    )
    return found


def test_an_emi_and_its_ser_dropped_together_become_one_image(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    context, page = _dataset_page(browser, site.server, site.dataset)
    # The page applies grouping.py's table: each group it forms is one acquisition there.
    names = [
        "scan_movie.mrc",
        "scan_info.txt",
        "run.mib",
        "run.hdr",
        "tilt.mrc",
        "tilt.mrc.mdoc",
        "grid.tif",
        "grid.txt",
        "a.tif",
        "a.jpg",
        "alone.dm4",
    ]
    groups = page.evaluate("names => window.AllMicroUploader.groups(names)", names)
    joined = [g for g in groups if g["group"] is not None]
    for group in joined:
        keys = {found.key for found in (member(n) for n in group["names"]) if found is not None}
        assert keys == {group["group"]}, group
    assert sorted(sorted(g["names"]) for g in joined) == [
        ["grid.tif", "grid.txt"],
        ["run.hdr", "run.mib"],
        ["scan_info.txt", "scan_movie.mrc"],
        ["tilt.mrc", "tilt.mrc.mdoc"],
    ]

    # Dropped together on the upload section, as from a file manager.
    dropped = page.evaluate_handle(
        """files => {
            const transfer = new DataTransfer();
            for (const [name, b64] of files) {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name));
            }
            return transfer;
        }""",
        [[path.name, base64.b64encode(path.read_bytes()).decode()] for path in (EMI, SER)],
    )
    page.dispatch_event("#upload", "dragover", {"dataTransfer": dropped})
    expect(page.locator("#upload")).to_have_class(re.compile(r"\bdropping\b"))
    page.dispatch_event("#upload-queue", "drop", {"dataTransfer": dropped})
    expect(page.locator("#upload")).not_to_have_class(re.compile(r"\bdropping\b"))
    # The picker holds the dropped files too.
    assert page.evaluate("() => document.getElementById('upload-files').files.length") == 2
    item = page.locator("#upload-items > li")
    expect(item).to_have_count(1)
    expect(item).to_have_attribute("data-group", "FEI TIA:64x64_tem_images_acquire")
    expect(item.locator(".upload-file")).to_have_count(2)
    page.click("#upload-start")
    # Everything new arrived: the page shows the processing, as after the plain form.
    page.wait_for_url(re.compile(r"\?uploaded=2$"))
    context.close()

    with site.server.client(CONTRIBUTOR, USER_PASSWORD) as client:
        jobs = _settled_jobs(client, site.dataset, 2)
        images = client.get(f"/api/datasets/{site.dataset}/images").raise_for_status().json()
    # One image, read from the .emi's metadata and the .ser's frames (the .emi alone has none).
    assert images["total"] == 1, images
    assert images["items"][0]["shape"][-2:] == [64, 64]
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs


def test_a_present_file_says_so_a_refused_file_says_why_and_files_join_by_hand(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    present, fresh = tmp_path / "film.tif", tmp_path / "film-notes.tif"
    present.write_bytes(tiny_tiff(31))
    fresh.write_bytes(tiny_tiff(32))
    with site.server.client(CONTRIBUTOR, USER_PASSWORD) as client:
        upload(client, site.dataset, "film.tif", present.read_bytes())
    too_big = tmp_path / "too-big.raw"
    with too_big.open("wb") as handle:
        handle.truncate(QUOTA + 1)  # refused when the upload is created: never read

    context, page = _dataset_page(browser, site.server, site.dataset)
    page.set_input_files("#upload-files", [str(present), str(fresh), str(too_big)])
    items = page.locator("#upload-items > li")
    expect(items).to_have_count(3)
    # "These files belong together": the two ticked become one item, one group.
    page.check("#upload-items input[type=checkbox] >> nth=0")
    page.check("#upload-items input[type=checkbox] >> nth=1")
    page.click("#upload-together")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_attribute("data-group", re.compile(r"^manual:"))
    group = items.nth(0).get_attribute("data-group")
    page.click("#upload-start")
    rows = page.locator("#upload-items .upload-file")
    expect(rows.nth(0).locator(".upload-status")).to_have_text(
        "Already in this dataset: not processed again."
    )
    expect(rows.nth(1).locator(".upload-status")).to_have_text(
        "Received and verified. Processing starts now."
    )
    refusal = rows.nth(2).locator(".upload-status")
    expect(refusal).to_contain_text(
        f"Refused: project 'Lamellae' has a storage quota of {QUOTA} bytes"
    )
    expect(refusal).to_contain_text("ask an admin to raise the quota")
    # The page stays to show all three; the button comes back for another try.
    expect(page.locator("#upload-start")).to_be_enabled()
    assert "uploaded=" not in page.url
    check_page_at_both_sizes(page, "dataset-uploader-outcomes")
    with site.server.client(CONTRIBUTOR, USER_PASSWORD) as client:
        jobs = client.get(f"/api/datasets/{site.dataset}/jobs").raise_for_status().json()
        stored = [
            client.get(f"/api/files/{job['file_id']}").raise_for_status().json()
            for job in jobs["items"]
        ]
    (joined,) = [f for f in stored if f["original_name"] == fresh.name]
    assert joined["group_key"] == group

    # The session's cookie alone does not open the tus endpoint: its CSRF token must come too.
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "1"}
    metadata = "filename Zi50aWY=,dataset_id " + _b64(site.dataset)
    created = httpx.post(
        f"{site.server.url}/api/uploads/",
        headers={**headers, "Upload-Metadata": metadata},
        cookies=cookies,
        verify=TLS,
    )
    assert created.status_code == 401, created.text
    context.close()

    # Without JavaScript the plain form sends the file, and the page says it was there already.
    context, page = _dataset_page(browser, site.server, site.dataset, scripts=False)
    expect(page.locator("#upload-queue")).to_be_hidden()
    page.set_input_files("#upload-files", str(present))
    page.click("#upload-start")
    page.wait_for_url(re.compile(r"\?uploaded=1&present=1$"))
    expect(page.locator("p.notice[role=status]")).to_have_text(
        "Already in this dataset: not processed again."
    )
    context.close()


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


# ------------------------------------------------------------------ a server killed mid-way

BIG_SIDE = 17736  # an int8 plane of 300 MiB (and the MRC header)


def _big_mrc(path: Path) -> str:
    """A valid 300 MiB MRC made in a moment (a memory map: mostly zeros, a line every 64
    rows), and its sha256."""
    with mrcfile.new_mmap(path, shape=(BIG_SIDE, BIG_SIDE), mrc_mode=0, overwrite=True) as mrc:
        mrc.data[::64, :] = 50
        mrc.voxel_size = 1.5
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def _acknowledged(catalogue: Path) -> int:
    with sqlite3.connect(catalogue, timeout=10) as db:
        row = db.execute("SELECT max(upload_offset) FROM upload").fetchone()
    return int(row[0] or 0)


def test_a_300_mb_upload_resumes_after_a_killed_server_a_network_drop_and_a_reload(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    """Last in the file: it kills the module's server (and starts it again)."""
    from playwright.sync_api import expect

    live_server, dataset = site.server, site.roomy
    big = tmp_path / "lamella.mrc"
    sha256 = _big_mrc(big)
    size = big.stat().st_size
    catalogue = Path(live_server.env["ALLMICRO_DATABASE_URL"].removeprefix("sqlite:///"))

    context, page = _dataset_page(browser, live_server, dataset)
    try:
        # The PATCHes sent and those cut, in order (Playwright hands the events over late, but in
        # the order they happened).
        patches: list[tuple[str, int]] = []
        checksums: list[str] = []

        def sent(request: Any) -> None:
            # Chromium may report a request with its provisional headers only (one sent as the
            # server or the network went away): such a PATCH tells nothing, and an exception here
            # would break Playwright's event handling for the rest of the session.
            offset = request.headers.get("upload-offset")
            if request.method == "PATCH" and offset is not None:
                patches.append(("sent", int(offset)))
                checksums.append(request.headers.get("upload-checksum", ""))

        def cut(request: Any) -> None:
            # A failed request's headers may be incomplete: only when it happened counts.
            if request.method == "PATCH":
                patches.append(("cut", -1))

        page.on("request", sent)
        page.on("requestfailed", cut)
        page.set_input_files("#upload-files", str(big))
        page.click("#upload-start")
        expect(page.locator("#upload-start")).to_be_disabled()
        acked = wait_until(
            lambda: (o := _acknowledged(catalogue)) >= size * 0.3 and o,
            timeout=120,
            interval=0.02,
            what="30 % of the upload",
        )
        assert acked < size, "the upload finished before the server could be killed"
        live_server.stop(signal.SIGKILL)
        live_server.start()

        # Then the network drops: the upload waits for it and goes on by itself once it is back.
        wait_until(lambda: _acknowledged(catalogue) >= size * 0.45, timeout=180, interval=0.02)
        status = page.locator("#upload-items .upload-status")
        context.set_offline(True)
        expect(status).to_have_text("Connection lost: the upload goes on when the network is back.")
        context.set_offline(False)
        expect(status).to_have_text("Sending")

        # Then the page is reloaded: choosing the same file again goes on where it stopped.
        acked_again = wait_until(
            lambda: (o := _acknowledged(catalogue)) >= size * 0.65 and o,
            timeout=180,
            interval=0.02,
            what="65 % of the upload",
        )
        assert acked_again < size, "the upload finished before the page could be reloaded"
        page.evaluate("0")  # every event so far is in `patches`
        patches.append(("reload", acked_again))
        page.reload()
        # The page names what a reload left unfinished, with how far the server has it.
        expect(page.locator("#upload-unfinished")).to_contain_text(
            re.compile(re.escape(big.name) + r" \((6[5-9]|[7-9]\d) %\)")
        )
        page.set_input_files("#upload-files", str(big))
        page.click("#upload-start")
        # Paused at once, it waits for Resume.
        page.click("#upload-pause")
        # The button offers Resume and the upload stays paused, even when the aborted request's
        # last progress event arrives after the pause (on a loaded machine it did, and the
        # upload read "Sending", so that Resume paused it again and it never finished).
        expect(page.locator("#upload-pause")).to_have_text("Resume")
        expect(page.locator("#upload-start")).to_be_disabled()
        expect(status).to_have_text("Paused")
        page.click("#upload-pause")
        page.wait_for_url(re.compile(r"\?uploaded=1$"), timeout=240_000)
    finally:
        # Closed even when the test fails: late events of its page must not reach the next
        # test's calls on the same browser.
        context.close()

    # Each time it went on from what the server had kept, not from the start.
    killed = patches.index(next(p for p in patches if p[0] == "cut"))
    reload = patches.index(("reload", acked_again))
    resumed = [offset for event, offset in patches[killed:reload] if event == "sent"]
    reloaded = [offset for event, offset in patches[reload:] if event == "sent"]
    assert resumed and reloaded, patches
    assert resumed[0] >= acked > 0, patches
    assert reloaded[0] >= acked_again > acked, patches
    assert [offset for event, offset in patches if event == "sent"].count(0) == 1, patches
    # Every request carried its bytes' sha256 (tus checksum extension), which the server checked.
    assert all(c.startswith("sha256 ") for c in checksums), checksums
    with live_server.client(CONTRIBUTOR, USER_PASSWORD) as client:
        (job,) = _settled_jobs(client, dataset, 1)
        assert job["status"] == "succeeded", job
        stored = client.get(f"/api/files/{job['file_id']}").raise_for_status().json()
        assert (stored["sha256"], stored["size"]) == (sha256, size)
        images = client.get(f"/api/datasets/{dataset}/images").raise_for_status().json()
        assert images["total"] == 1
        assert images["items"][0]["shape"][-2:] == [BIG_SIDE, BIG_SIDE]
