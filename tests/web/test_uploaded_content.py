"""Uploaded content never runs on our origin: a hostile OME-TIFF opened by a manager in Chromium."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import tifffile

from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.web.conftest import OWNER, Network
from tests.web.test_viewer import TIMEOUT_MS, sign_in

MANAGER = "mara@ijs.example"
MARKER = "uploaded-script-ran"
# What the reviewer's file did: read the CSRF cookie, mint a personal token as whoever opened it,
# and leave a marker. XHTML-namespaced scripts run in any XML document a browser renders.
SCRIPT = f"""
console.log("{MARKER}");
var csrf = (document.cookie.match(/allmicro_csrf=([^;]+)/) || [])[1] || "";
fetch("/api/tokens", {{
  method: "POST", credentials: "include",
  headers: {{"Content-Type": "application/json", "X-CSRF-Token": csrf}},
  body: JSON.stringify({{name: "{MARKER}", scope: "read"}})
}});
"""
HOSTILE_OME_XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xsi:schemaLocation="http://www.openmicroscopy.org/Schemas/OME/2016-06
       http://www.openmicroscopy.org/Schemas/OME/2016-06/ome.xsd">
  <Image ID="Image:0" Name="hostile">
    <Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="64" SizeY="48"
            SizeC="1" SizeZ="1" SizeT="1" BigEndian="false">
      <Channel ID="Channel:0:0" SamplesPerPixel="1"/>
      <TiffData IFD="0" PlaneCount="1"/>
    </Pixels>
  </Image>
  <StructuredAnnotations>
    <XMLAnnotation ID="Annotation:0">
      <Value><script xmlns="http://www.w3.org/1999/xhtml">{SCRIPT}</script></Value>
    </XMLAnnotation>
  </StructuredAnnotations>
</OME>"""


def hostile_ome_tiff() -> bytes:
    """A valid OME-TIFF whose OME-XML carries an XHTML script in an XMLAnnotation."""
    out = io.BytesIO()
    pixels = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    # metadata=None: tifffile writes our description verbatim instead of its own OME-XML.
    tifffile.imwrite(out, pixels, description=HOSTILE_OME_XML, metadata=None)
    return out.getvalue()


def test_hostile_ome_xml_opened_by_a_manager_runs_no_script(network: Network, browser: Any) -> None:
    from playwright.sync_api import expect

    server = network.server
    with server.client() as admin:
        organisation_id = admin.get("/api/me").json()["organisation"]["id"]
        body = {"email": MANAGER, "organisation_id": organisation_id, "password": USER_PASSWORD}
        manager_id = admin.post("/api/users", json=body).raise_for_status().json()["id"]
        admin.post(
            f"/api/projects/{network.project_id}/members",
            json={"user_id": manager_id, "role": "manager"},
        ).raise_for_status()
    # A contributor (the attacker) uploads the file; it ingests like any OME-TIFF.
    contributor = server.client(OWNER, USER_PASSWORD)
    uploaded = upload(contributor, network.dataset_id, "hostile.ome.tif", hostile_ome_tiff())
    job = wait_for_job(contributor, uploaded["job_id"])
    assert job["status"] == "succeeded", job["error"]
    (image_id,) = job["image_ids"]
    manager = server.client(MANAGER, USER_PASSWORD)
    tokens_before = manager.get("/api/tokens").raise_for_status().json()

    context = browser.new_context(locale="en-GB", accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    sign_in(page, server.url, MANAGER)
    image_page = page.goto(f"{server.url}/images/{image_id}")
    # Our own pages keep their strict policy (scripts from this server only), not the sandbox.
    assert image_page is not None and image_page.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in image_page.headers["content-security-policy"]
    assert "sandbox" not in image_page.headers["content-security-policy"]

    # The image page's OME-XML link shows the document as text, script and all.
    page.click("#ome-xml-link")
    page.wait_for_load_state("networkidle")
    assert manager.get("/api/tokens").raise_for_status().json() == tokens_before
    assert not [text for text in console if MARKER in text], console
    expect(page.locator("pre.ome-xml")).to_contain_text("<script")
    # The API's own URL, typed in or linked from elsewhere, is a download, not a page.
    with page.expect_download() as download:
        page.evaluate("url => { window.location.href = url; }", f"/api/images/{image_id}/ome.xml")
    assert download.value.suggested_filename.endswith(".ome.xml")
    assert MARKER.encode() in download.value.path().read_bytes()
    # So is the copy inside the pyramid, however a browser is sent to it.
    with page.expect_download():
        page.evaluate(
            "url => { window.location.href = url; }", f"/zarr/{image_id}/OME/METADATA.ome.xml"
        )
    page.wait_for_load_state("networkidle")

    # Should a browser render it anyway (an old one, a proxy that drops Content-Disposition),
    # the response's own policy keeps the script from running.
    def without_disposition(route: Any) -> None:
        response = route.fetch()
        headers = {k: v for k, v in response.headers.items() if k != "content-disposition"}
        route.fulfill(response=response, headers=headers)

    page.route(f"**/api/images/{image_id}/ome.xml", without_disposition)
    rendered = page.goto(f"{server.url}/api/images/{image_id}/ome.xml")
    assert rendered is not None and rendered.status == 200
    page.wait_for_load_state("networkidle")
    assert page.evaluate("() => document.documentElement.localName") == "OME"
    context.close()

    assert not [text for text in console if MARKER in text], console
    assert manager.get("/api/tokens").raise_for_status().json() == tokens_before

    served = manager.get(f"/api/images/{image_id}/ome.xml")
    assert served.status_code == 200
    assert MARKER in served.text  # stored as uploaded: originals and their metadata are sacred
    assert_served_as_data(served)


def assert_served_as_data(response: httpx.Response) -> None:
    """The headers that keep a document derived from an upload from running as our page."""
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = [part.strip() for part in response.headers["content-security-policy"].split(";")]
    assert "sandbox" in policy and "default-src 'none'" in policy, policy
    assert response.headers["content-disposition"].startswith("attachment")
