"""Search facts on SQLite and PostgreSQL: local acquisition times found by date, one vendor per
company in filters and facets (rows stored before the vendor table too), light modalities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from allmicro_data import directory
from allmicro_data.access import Caller
from allmicro_data.acquisition import catalogue_time
from allmicro_data.catalogue.models import Image, ImageStatus
from allmicro_data.search import ImageQuery, modality_facet, search_images, vendor_facet
from allmicro_data.search_facts import refresh_search_facts
from allmicro_data.vendors import VENDOR_AS_WRITTEN

# name, modality, vendor as stored (old rows keep their spelling), acquired as the reader gave it
# (naive: the instrument's wall clock, zone unknown).
IMAGES = [
    ("helios.tif", "SEM", "FEI Company", datetime(2016, 6, 13, 17, 6, 40)),
    ("phenom.elid", "SEM", "Thermo Fisher Scientific (Phenom)", datetime(2019, 12, 31, 23, 30)),
    ("ultra.tif", "SEM", "Carl Zeiss Microscopy GmbH", datetime(2020, 1, 1, 0, 30)),
    ("older.tif", "SEM", "Carl Zeiss", datetime(2014, 12, 31, 23, 59)),
    (
        "sightx.tif",
        "TEM",
        "JEOL Ltd.",
        datetime(2019, 11, 27, 16, 11, tzinfo=timezone(timedelta(hours=9))),
    ),
    # 00:30 on 1 January 2020 in UTC+2 is 22:30 UTC on 31 December 2019: inside, as an instant.
    (
        "titan.emd",
        "TEM",
        "Thermo Fisher Scientific",
        datetime(2020, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))),
    ),
    ("arm.dm3", "STEM", "JEOL", datetime(2020, 1, 1, 0, 30, tzinfo=UTC)),
    ("cells.czi", "fluorescence", "Zeiss", None),
    ("slide.tif", "brightfield", None, None),
    ("stand.lif", "optical", "Leica Microsystems", None),
]


def _catalogue(services: Any) -> Caller:
    with services.session() as session:
        org = directory.create_organisation(session, name="Lab", kind="partner")
        user = directory.create_user(
            session, email="m@lab.example", organisation_id=org.id, password=None
        )
        project = directory.create_project(session, name="Facility")
        directory.add_membership(session, project_id=project.id, user_id=user.id, role="viewer")
        dataset = directory.create_dataset(session, project_id=project.id, name="all")
        for name, modality, vendor, acquired in IMAGES:
            stored, local = catalogue_time(acquired)
            session.add(
                Image(
                    dataset_id=dataset.id,
                    name=name,
                    status=ImageStatus.READY,
                    modality=modality,
                    vendor=vendor,
                    acquired_at=stored,
                    acquired_at_local=local,
                    search_text=name,
                )
            )
        session.flush()
        return Caller.for_user(user)


def _names(services: Any, caller: Caller, **query: Any) -> list[str]:
    with services.session() as session:
        found = search_images(session, caller, ImageQuery(**query))
        return sorted(image.name for image in found.items)


def test_a_date_range_finds_local_times_by_their_wall_clock_date(services: Any) -> None:
    caller = _catalogue(services)
    start = datetime(2015, 1, 1, tzinfo=UTC)
    end = datetime(2019, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    # The SEMs wrote local time: 23:30 on 31 December 2019 is inside whatever the zone was, and
    # 00:30 on 1 January 2020 outside; zone-aware times compare as instants.
    assert _names(services, caller, acquired_from=start, acquired_to=end) == [
        "helios.tif",
        "phenom.elid",
        "sightx.tif",
        "titan.emd",
    ]
    # A bound given in another zone compares local times with its own calendar date.
    new_york = timezone(timedelta(hours=-5))
    assert _names(
        services, caller, acquired_from=datetime(2020, 1, 1, tzinfo=new_york), modality="sem"
    ) == ["ultra.tif"]
    assert _names(
        services, caller, acquired_to=datetime(2014, 12, 31, 0, 0, tzinfo=UTC), modality="SEM"
    ) == ["older.tif"]
    # Sorting by acquisition time puts local times by their wall clock.
    with services.session() as session:
        found = search_images(
            session, caller, ImageQuery(sort="acquired_at", acquired_from=start, acquired_to=end)
        )
        assert [i.name for i in found.items] == [
            "helios.tif",
            "sightx.tif",
            "titan.emd",
            "phenom.elid",
        ]
        local = {i.name: i.acquired_at_local for i in found.items}
        assert local == {
            "helios.tif": True,
            "sightx.tif": False,
            "titan.emd": False,
            "phenom.elid": True,
        }


def test_vendor_filter_and_facet_give_one_entry_per_company(services: Any) -> None:
    caller = _catalogue(services)
    with services.session() as session:
        assert vendor_facet(session, caller) == [
            "JEOL",
            "Leica Microsystems",
            "Thermo Fisher Scientific",
            "Zeiss",
        ]
        assert modality_facet(session, caller) == [
            "brightfield",
            "fluorescence",
            "optical",
            "SEM",
            "STEM",
            "TEM",
        ]
    thermo = ["helios.tif", "phenom.elid", "titan.emd"]
    assert _names(services, caller, vendor="Thermo Fisher Scientific") == thermo
    assert _names(services, caller, vendor="FEI") == thermo
    assert _names(services, caller, vendor="fei company") == thermo
    assert _names(services, caller, vendor="Zeiss") == ["cells.czi", "older.tif", "ultra.tif"]
    assert _names(services, caller, vendor="JEOL") == ["arm.dm3", "sightx.tif"]
    # A name the table does not know still matches as text; LIKE wildcards are plain.
    assert _names(services, caller, vendor="microsystems") == ["stand.lif"]
    assert _names(services, caller, vendor="%") == []


def test_optical_finds_every_light_microscopy_modality(services: Any) -> None:
    caller = _catalogue(services)
    light = ["cells.czi", "slide.tif", "stand.lif"]
    assert _names(services, caller, modality="optical") == light
    assert _names(services, caller, modality="Optical") == light
    assert _names(services, caller, modality="fluorescence") == ["cells.czi"]
    assert _names(services, caller, modality="brightfield") == ["slide.tif"]


def test_refresh_gives_rows_stored_before_the_rules_their_facts(services: Any) -> None:
    """`allmicro db refresh-search-facts`: what older ingests stored, brought up to date once."""
    with services.session() as session:
        org = directory.create_organisation(session, name="Lab", kind="partner")
        admin = directory.create_user(
            session, email="a@lab.example", organisation_id=org.id, password=None, is_admin=True
        )
        project = directory.create_project(session, name="Facility")
        dataset = directory.create_dataset(session, project_id=project.id, name="old")
        rows = [
            # An older ingest dropped the local time and kept it in the vendor metadata.
            Image(
                name="helios.tif",
                modality="SEM",
                vendor="Thermo Fisher Scientific (FEI)",
                format="TIFF",
                vendor_metadata={"_acquired_at_local": "2016-06-13T17:06:40"},
            ),
            Image(
                name="cells.czi",
                modality="optical",
                vendor="Carl Zeiss",
                format="Zeiss CZI",
                channels=[{"name": "DAPI", "emission_wavelength": 4.65e-7}],
            ),
            Image(
                name="axiocam.tif",
                instrument="AxioCamERc5s",
                format="TIFF",
                axes="cyx",
                shape=[3, 8, 8],
                dtype="uint8",
                acquired_at=datetime(2016, 6, 13, 15, 59, tzinfo=UTC),
            ),
            Image(name="plain.tif", format="TIFF", axes="cyx", shape=[3, 8, 8], dtype="uint8"),
        ]
        for image in rows:
            image.dataset_id = dataset.id
            image.status = ImageStatus.READY
            session.add(image)
        session.flush()
        caller = Caller.for_user(admin)

    with services.session() as session:
        counts = refresh_search_facts(session)
    assert (counts.seen, counts.local_times, counts.vendors, counts.modalities) == (4, 1, 3, 2)
    with services.session() as session:
        again = refresh_search_facts(session)
    assert (again.local_times, again.vendors, again.modalities) == (0, 0, 0)

    with services.session() as session:
        stored = {i.name: i for i in session.scalars(select(Image))}
        helios = stored["helios.tif"]
        assert helios.acquired_at == datetime(2016, 6, 13, 17, 6, 40, tzinfo=UTC)
        assert helios.acquired_at_local is True and helios.vendor == "Thermo Fisher Scientific"
        assert helios.vendor_metadata[VENDOR_AS_WRITTEN] == "Thermo Fisher Scientific (FEI)"
        assert "fei" in (helios.search_text or "")
        assert (stored["cells.czi"].modality, stored["cells.czi"].vendor) == (
            "fluorescence",
            "Zeiss",
        )
        assert (stored["axiocam.tif"].modality, stored["axiocam.tif"].vendor) == (
            "brightfield",
            "Zeiss",
        )
        # A colour TIFF with nothing saying which instrument made it gets no guess.
        assert (stored["plain.tif"].modality, stored["plain.tif"].vendor) == (None, None)
    found = _names(
        services,
        caller,
        acquired_from=datetime(2015, 1, 1, tzinfo=UTC),
        acquired_to=datetime(2019, 12, 31, 23, 59, tzinfo=UTC),
        modality="SEM",
        vendor="FEI",
    )
    assert found == ["helios.tif"]
