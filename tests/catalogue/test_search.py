"""Image search on SQLite and PostgreSQL: every filter, free text, sorting, paging, bounded counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from allmicro_data import directory, search
from allmicro_data.access import Caller
from allmicro_data.catalogue.models import Image, ImageStatus
from allmicro_data.search import ImageQuery, search_images, search_text

IMAGES = [
    # name, modality, vendor, instrument, acquired (2024-month-day), pixel size, vendor metadata
    ("wafer_001.tif", "SEM", "Thermo Fisher", "Helios 5", (3, 1), 2e-9, {"Detector": "TLD"}),
    ("wafer_002.tif", "SEM", "Thermo Fisher", "Helios 5", (3, 2), 4e-9, {"Detector": "ETD"}),
    ("lamella.dm4", "TEM", "Gatan", "JEM-2100", (5, 10), 1.5e-11, {"Mode": "50%_HR"}),
    ("pollen.czi", "optical", "Zeiss", "Axio Imager", (7, 20), 6.5e-7, {"Stain": "DAPI"}),
    ("tilt_series.mrc", "TEM", None, None, None, None, {}),
]


@pytest.fixture
def catalogue(services: Any) -> Any:
    """Two projects: the member's (all IMAGES plus one still processing) and another one."""
    with services.session() as session:
        org = directory.create_organisation(session, name="Lab", kind="partner")
        member = directory.create_user(
            session, email="m@lab.example", organisation_id=org.id, password=None
        )
        admin = directory.create_user(
            session, email="a@lab.example", organisation_id=org.id, password=None, is_admin=True
        )
        mine = directory.create_project(session, name="Mine")
        other = directory.create_project(session, name="Other")
        directory.add_membership(session, project_id=mine.id, user_id=member.id, role="viewer")
        first = directory.create_dataset(session, project_id=mine.id, name="first")
        second = directory.create_dataset(session, project_id=mine.id, name="second")
        hidden = directory.create_dataset(session, project_id=other.id, name="hidden")
        for n, (name, modality, vendor, instrument, day, pixel, meta) in enumerate(IMAGES):
            image = Image(
                dataset_id=(first if n < 3 else second).id,
                name=name,
                status=ImageStatus.READY,
                modality=modality,
                vendor=vendor,
                instrument=instrument,
                acquired_at=datetime(2024, *day, 12, tzinfo=UTC) if day else None,
                pixel_size_x=pixel,
                vendor_metadata=meta,
            )
            image.search_text = search_text(image)
            session.add(image)
        for dataset, name, status in (
            (first, "wafer_003.tif", ImageStatus.PROCESSING),
            (hidden, "wafer_secret.tif", ImageStatus.READY),
        ):
            image = Image(dataset_id=dataset.id, name=name, status=status, modality="SEM")
            image.search_text = search_text(image)
            session.add(image)
        session.flush()
        ids = {
            "member": Caller.for_user(member),
            "admin": Caller.for_user(admin),
            "mine": mine.id,
            "other": other.id,
            "first": first.id,
        }
    return services, ids


def names(catalogue: Any, who: str = "member", **query: Any) -> list[str]:
    services, ids = catalogue
    with services.session() as session:
        found = search_images(session, ids[who], ImageQuery(**query))
        assert found.total_exact and found.total == len(found.items)
        return [image.name for image in found.items]


def test_every_filter_narrows_the_results(catalogue: Any) -> None:
    _, ids = catalogue
    assert names(catalogue) == [
        "lamella.dm4",
        "pollen.czi",
        "tilt_series.mrc",
        "wafer_001.tif",
        "wafer_002.tif",
    ]
    assert names(catalogue, dataset_id=ids["first"]) == [
        "lamella.dm4",
        "wafer_001.tif",
        "wafer_002.tif",
    ]
    assert names(catalogue, project_id=ids["mine"], modality="tem") == [
        "lamella.dm4",
        "tilt_series.mrc",
    ]
    assert names(catalogue, vendor="thermo") == ["wafer_001.tif", "wafer_002.tif"]
    assert names(catalogue, instrument="axio") == ["pollen.czi"]
    may = datetime(2024, 5, 1, tzinfo=UTC)
    assert names(catalogue, acquired_from=may) == ["lamella.dm4", "pollen.czi"]
    assert names(catalogue, acquired_to=may) == ["wafer_001.tif", "wafer_002.tif"]
    assert names(catalogue, pixel_size_min=3e-9, pixel_size_max=1e-6) == [
        "pollen.czi",
        "wafer_002.tif",
    ]


def test_free_text_needs_every_word_in_names_or_vendor_values(catalogue: Any) -> None:
    assert names(catalogue, text="WAFER") == ["wafer_001.tif", "wafer_002.tif"]
    assert names(catalogue, text="wafer etd") == ["wafer_002.tif"]
    assert names(catalogue, text="dapi") == ["pollen.czi"]
    assert names(catalogue, text="stain") == ["pollen.czi"]  # vendor keys count too
    # LIKE wildcards in the query are plain characters.
    assert names(catalogue, text="50%_hr") == ["lamella.dm4"]
    assert names(catalogue, text="50%_xx") == []
    assert names(catalogue, text="wafer_00_") == []


def test_sorting_and_paging(catalogue: Any) -> None:
    newest_first = ["pollen.czi", "lamella.dm4", "wafer_002.tif", "wafer_001.tif"]
    assert names(
        catalogue, sort="-acquired_at", acquired_from=datetime(2000, 1, 1, tzinfo=UTC)
    ) == (newest_first)
    assert names(catalogue, sort="pixel_size", pixel_size_min=0) == [
        "lamella.dm4",
        "wafer_001.tif",
        "wafer_002.tif",
        "pollen.czi",
    ]
    services, ids = catalogue
    with services.session() as session:
        page = search_images(session, ids["member"], ImageQuery(limit=2, offset=2))
    assert [i.name for i in page.items] == ["tilt_series.mrc", "wafer_001.tif"]
    assert page.total == 5 and page.total_exact


def test_nobody_finds_what_they_may_not_see(catalogue: Any) -> None:
    # The member never sees the other project; nobody, admins included, sees unfinished images.
    assert "wafer_secret.tif" not in names(catalogue, text="wafer")
    assert names(catalogue, "admin", text="wafer") == [
        "wafer_001.tif",
        "wafer_002.tif",
        "wafer_secret.tif",
    ]
    _, ids = catalogue
    assert names(catalogue, project_id=ids["other"]) == []


def test_counting_stops_at_the_limit(catalogue: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    services, ids = catalogue
    monkeypatch.setattr(search, "COUNT_LIMIT", 3)
    with services.session() as session:
        many = search_images(session, ids["member"], ImageQuery(limit=2))
        few = search_images(session, ids["member"], ImageQuery(text="wafer"))
        exactly = search_images(session, ids["member"], ImageQuery(modality="sem", limit=1))
    # More than the limit: the total is the limit and says it is a lower bound.
    assert (many.total, many.total_exact, len(many.items)) == (3, False, 2)
    assert (few.total, few.total_exact) == (2, True)
    assert (exactly.total, exactly.total_exact) == (2, True)
