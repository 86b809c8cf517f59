"""Every entry of the acquisition field table reaches the catalogue, API, CSV, image page, OME-XML and search."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import ome_types
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from allmicro_data.acquisition import ACQUISITION_FIELDS, AcquisitionField
from allmicro_data.api.web.formatting import FIELDS
from allmicro_data.api.web.i18n import translations
from allmicro_data.catalogue.db import normalise_url
from allmicro_data.catalogue.models import Image
from allmicro_data.ingest import pipeline
from allmicro_data.ingest.ome_xml import ACQUISITION_NS, build_ome_xml
from allmicro_data.ingest.readers.array import ArraySeries
from tests.api.test_end_to_end import upload, wait_for_job
from tests.conftest import SAMPLES, LiveServer

FEI = SAMPLES / "fei" / "FEI-Helios-Ebeam-16bits.tif"
SHOWN = dict(FIELDS)


def _value(index: int, field: AcquisitionField) -> Any:
    """A value for each field that no other field has, and that free-text search can find."""
    if field.kind is datetime:
        return datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    if field.kind is float:
        return 1.25 * (index + 2)
    return f"zq{field.name.replace('_', '')}"


VALUES = {f.name: _value(i, f) for i, f in enumerate(ACQUISITION_FIELDS)}


def _same(text: Any, expected: Any) -> bool:
    """A value as JSON or a CSV cell gives it back, against what the reader said."""
    if isinstance(expected, datetime):
        return datetime.fromisoformat(str(text)) == expected
    if isinstance(expected, float):
        return float(text) == expected
    return bool(text == expected)


def _dataset(admin: httpx.Client, name: str) -> str:
    project = admin.post("/api/projects", json={"name": f"{name} project"}).json()["id"]
    dataset: str = admin.post(f"/api/projects/{project}/datasets", json={"name": name}).json()["id"]
    return dataset


def _ingested(server: LiveServer, name: str) -> tuple[httpx.Client, str, str]:
    """The FEI sample ingested into a dataset of its own: (client, dataset id, image id)."""
    admin = server.client()
    dataset = _dataset(admin, name)
    job = wait_for_job(admin, upload(admin, dataset, FEI.name, FEI.read_bytes())["job_id"])
    assert job["status"] == "succeeded", job
    return admin, dataset, job["image_ids"][0]


def _panel(page: str) -> dict[str, tuple[str, str]]:
    """The metadata panel of an image page: field name -> (label, value)."""
    rows = re.findall(r'<dt>([^<]*)</dt><dd data-field="([^"]+)">([^<]*)</dd>', page)
    return {key: (html.unescape(label), html.unescape(value)) for label, key, value in rows}


def _csv_row(admin: httpx.Client, dataset: str) -> dict[str, str]:
    response = admin.get(f"/api/datasets/{dataset}/metadata.csv")
    assert response.status_code == 200, response.text
    (row,) = csv.DictReader(io.StringIO(response.text))
    return row


def _acquisition_pairs(ome_xml: str) -> dict[str, str]:
    document = ome_types.from_xml(ome_xml)
    (annotation,) = [
        a for a in document.structured_annotations.map_annotations if a.namespace == ACQUISITION_NS
    ]
    return {m.k: m.value for m in annotation.value.ms if m.k is not None}


def test_every_table_field_reaches_catalogue_api_csv_page_ome_xml_and_search(
    shared_server: LiveServer,
) -> None:
    series = ArraySeries(np.zeros((4, 4), np.uint8), "yx")
    for name, value in VALUES.items():
        setattr(series.acquisition, name, value)

    # OME-XML: each field under its own name in the acquisition annotation.
    pairs = _acquisition_pairs(build_ome_xml(series, "all fields"))
    for field in ACQUISITION_FIELDS:
        assert field.name in pairs, f"{field.name} missing from the OME-XML annotation"
        assert _same(pairs[field.name], VALUES[field.name]), field.name

    # Catalogue: ingest's copy (pipeline._record) onto a real image row of the server.
    admin, dataset, image_id = _ingested(shared_server, "Every acquisition field")
    engine = create_engine(normalise_url(shared_server.env["ALLMICRO_DATABASE_URL"]))
    try:
        with Session(engine) as session:
            image = session.scalars(select(Image).where(Image.id == image_id)).one()
            info = pipeline.PyramidInfo(
                key=image.pyramid_key or "",
                ngff_version=image.ngff_version or "",
                axes=image.axes or "yx",
                level_shapes=[tuple(image.shape or ())] * (image.levels or 1),
                dtype=image.dtype or "uint16",
            )
            pipeline._record(image, series, info, image.ome_xml_key or "", image.format or "")
            session.commit()
    finally:
        engine.dispose()

    acquisition = admin.get(f"/api/images/{image_id}").json()["acquisition"]
    row = _csv_row(admin, dataset)
    english = _panel(admin.get(f"/images/{image_id}").text)
    italian = _panel(admin.get(f"/images/{image_id}", headers={"Accept-Language": "it"}).text)
    schema = admin.get("/openapi.json").json()["components"]["schemas"]["AcquisitionOut"]
    for field in ACQUISITION_FIELDS:
        expected = VALUES[field.name]
        assert field.name in schema["properties"], f"{field.name} missing from the API schema"
        assert _same(acquisition[field.name], expected), (field.name, acquisition[field.name])
        assert _same(row[field.name], expected), (field.name, row[field.name])
        shown = SHOWN[field.name](expected, "en")
        assert english[field.name] == (field.label, shown), field.name
        assert italian[field.name][0] == translations("it").gettext(field.label), field.name
        if field.searchable:
            found = admin.get("/api/images", params={"q": str(expected)}).json()["items"]
            assert [i["id"] for i in found] == [image_id], f"search misses {field.name}"


@pytest.mark.parametrize(
    ("value", "field", "shown"),
    [(2.5e20, "electron_dose", "2.5 e⁻/Å²"), (3.0, "spot_size", "3")],
)
def test_dose_and_spot_size_are_shown_in_the_units_microscopists_read(
    value: float, field: str, shown: str
) -> None:
    assert SHOWN[field](value, "en") == shown


def test_fei_spot_size_is_ingested_into_api_csv_page_and_ome_xml(
    shared_server: LiveServer,
) -> None:
    admin, dataset, image_id = _ingested(shared_server, "FEI spot size")
    # xT writes [Beam] Spot=1; the sample carries no dose, so that stays null, not 0.
    acquisition = admin.get(f"/api/images/{image_id}").json()["acquisition"]
    assert acquisition["spot_size"] == 1.0 and acquisition["electron_dose"] is None
    row = _csv_row(admin, dataset)
    assert row["spot_size"] == "1.0" and row["electron_dose"] == ""
    panel = _panel(admin.get(f"/images/{image_id}").text)
    assert panel["spot_size"] == ("Spot size", "1") and "electron_dose" not in panel
    ome_xml = admin.get(f"/api/images/{image_id}/ome.xml")
    assert ome_xml.status_code == 200
    pairs = _acquisition_pairs(ome_xml.text)
    assert pairs["spot_size"] == "1.0" and "electron_dose" not in pairs
