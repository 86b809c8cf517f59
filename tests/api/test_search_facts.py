"""Through the server: SEM samples whose instruments wrote local time are found by a 2015-2019
date search, shown and exported as local time, and listed under one vendor name each."""

from __future__ import annotations

import csv
import html
import io
import re

import httpx

from tests.api.test_end_to_end import upload, wait_for_job
from tests.conftest import SAMPLES, LiveServer

# Both wrote their acquisition time as wall-clock time without a zone (MANIFEST.json).
FEI = SAMPLES / "fei" / "FEI-Helios-Ebeam-16bits.tif"  # 2016-06-13 17:06:40, "(FEI)"
ZEISS = SAMPLES / "zeiss-sem" / "test_tiff_Zeiss_SEM_512pix.tif"  # 2018-09-25 08:20:42


def _ingest(admin: httpx.Client, dataset: str, path: object) -> str:
    assert hasattr(path, "read_bytes") and hasattr(path, "name")
    job = wait_for_job(admin, upload(admin, dataset, path.name, path.read_bytes())["job_id"])
    assert job["status"] == "succeeded", job
    image_id: str = job["image_ids"][0]
    return image_id


def test_local_time_sems_are_found_by_date_shown_as_local_and_listed_once(
    shared_server: LiveServer,
) -> None:
    admin = shared_server.client()
    project = admin.post("/api/projects", json={"name": "Search facts"}).json()["id"]
    dataset = admin.post(f"/api/projects/{project}/datasets", json={"name": "SEMs"}).json()["id"]
    fei, zeiss = _ingest(admin, dataset, FEI), _ingest(admin, dataset, ZEISS)

    found = admin.get(
        "/api/images",
        params={
            "project_id": project,
            "acquired_from": "2015-01-01T00:00:00Z",
            "acquired_to": "2019-12-31T23:59:59Z",
            "modality": "SEM",
        },
    ).json()["items"]
    by_id = {image["id"]: image["acquisition"] for image in found}
    assert set(by_id) == {fei, zeiss}
    # The time as the instrument wrote it, without an offset, flagged local.
    assert by_id[fei]["acquired_at"] == "2016-06-13T17:06:40"
    assert by_id[zeiss]["acquired_at"] == "2018-09-25T08:20:42"
    assert by_id[fei]["acquired_at_local"] is True
    assert by_id[fei]["vendor"] == "Thermo Fisher Scientific"
    assert by_id[zeiss]["vendor"] == "Zeiss"
    outside = admin.get(
        "/api/images",
        params={"project_id": project, "acquired_from": "2016-06-14T00:00:00+14:00"},
    ).json()["items"]
    assert [i["id"] for i in outside] == [zeiss]
    # The vendor filter takes any spelling of the company.
    fei_only = admin.get("/api/images", params={"project_id": project, "vendor": "FEI Company"})
    assert [i["id"] for i in fei_only.json()["items"]] == [fei]

    page = admin.get(f"/images/{fei}").text
    shown = dict(re.findall(r'<dd data-field="([^"]+)">([^<]*)</dd>', page))
    assert html.unescape(shown["acquired_at"]).endswith("(local time, zone not recorded)")
    assert "Jun 13, 2016, 5:06:40" in shown["acquired_at"]  # the wall clock, not shifted

    rows = list(
        csv.DictReader(io.StringIO(admin.get(f"/api/datasets/{dataset}/metadata.csv").text))
    )
    exported = {row["id"]: row for row in rows}
    assert exported[fei]["acquired_at"] == "2016-06-13T17:06:40"
    assert exported[fei]["acquired_at_local"] == "True"
    records = admin.get(f"/api/datasets/{dataset}/metadata.json").json()
    assert {r["id"]: r["acquired_at_local"] for r in records} == {fei: True, zeiss: True}

    search = admin.get("/search", params={"project": project}).text
    vendors = re.search(r'<datalist id="vendors">(.*?)</datalist>', search, re.S)
    assert vendors is not None
    options = re.findall(r'<option value="([^"]*)">', vendors.group(1))
    assert options.count("Thermo Fisher Scientific") == 1
    assert not [o for o in options if "FEI" in o or o == "Carl Zeiss"]
