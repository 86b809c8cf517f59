"""The facts search filters on, as reads leave them: zone-aware or local times, one vendor name
per company, light modalities. The real samples' values are pinned in MANIFEST.json."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from allmicro_data.acquisition import Channel, catalogue_time, wall_clock
from allmicro_data.ingest.readers import open_image_file
from allmicro_data.modalities import family, inferred_modality
from allmicro_data.vendors import VENDOR_AS_WRITTEN, canonical_vendor
from tests.ingest.conftest import SAMPLES

# The SEM samples whose instruments wrote local time without a zone, acquired 2015-2019.
LOCAL_TIME_SEMS = {
    "fei/FEI-Helios-Ebeam-16bits.tif": datetime(2016, 6, 13, 17, 6, 40),
    "zeiss-sem/test_tiff_Zeiss_SEM_512pix.tif": datetime(2018, 9, 25, 8, 20, 42),
    "phenom/Elid2Version1.elid": datetime(2019, 8, 7, 9, 37, 31),
    "bruker/P45_the_default_job.bcf": datetime(2016, 4, 1, 18, 5, 10),
}


@pytest.mark.parametrize("path", sorted(LOCAL_TIME_SEMS))
def test_sems_that_wrote_local_time_keep_it_as_wall_clock(path: str) -> None:
    with open_image_file(SAMPLES / path) as image_file:
        acq = image_file.series[image_file.primary_series].acquisition
    assert acq.modality == "SEM"
    assert acq.acquired_at == LOCAL_TIME_SEMS[path] and acq.acquired_at.tzinfo is None
    stored, local = catalogue_time(acq.acquired_at)
    assert local is True and stored == LOCAL_TIME_SEMS[path].replace(tzinfo=UTC)
    assert wall_clock(stored, local) == LOCAL_TIME_SEMS[path]


def test_zone_aware_times_are_stored_as_utc_instants() -> None:
    tokyo = datetime(2019, 11, 27, 16, 11, 26, tzinfo=timezone(timedelta(hours=9)))
    stored, local = catalogue_time(tokyo)
    assert local is False and stored == datetime(2019, 11, 27, 7, 11, 26, tzinfo=UTC)
    assert wall_clock(stored, local) == stored
    assert catalogue_time(None) == (None, None)


@pytest.mark.parametrize(
    ("written", "name"),
    [
        ("FEI Company", "Thermo Fisher Scientific"),
        ("Thermo Fisher Scientific (FEI)", "Thermo Fisher Scientific"),
        ("Thermo Fisher Scientific (Phenom)", "Thermo Fisher Scientific"),
        ("Thermo Scientific", "Thermo Fisher Scientific"),
        ("FEI", "Thermo Fisher Scientific"),
        ("Carl Zeiss", "Zeiss"),
        ("Carl Zeiss Microscopy GmbH", "Zeiss"),
        ("ZEISS", "Zeiss"),
        ("JEOL Ltd.", "JEOL"),
        ("NIKON CORPORATION", "Nikon"),
        ("Leica Microsystems CMS GmbH", "Leica Microsystems"),
        ("Hitachi High-Technologies Corp.", "Hitachi High-Tech"),
        ("TESCAN ORSAY HOLDING", "Tescan"),
        ("  Keyence   Corporation ", "Keyence Corporation"),  # unknown: kept, spaces tidied
        ("   ", None),
    ],
)
def test_vendor_spellings_become_one_name_per_company(written: str, name: str | None) -> None:
    assert canonical_vendor(written) == name


def test_a_file_spelling_of_the_maker_stays_among_the_vendor_keys() -> None:
    with open_image_file(SAMPLES / "velox" / "fei_example_tem_stack.emd") as image_file:
        series = image_file.series[image_file.primary_series]
    assert series.acquisition.vendor == "Thermo Fisher Scientific"
    assert series.vendor[VENDOR_AS_WRITTEN] == "FEI Company"


def test_light_modalities_come_from_evidence_never_from_pixels_alone() -> None:
    dapi = [Channel(name="DAPI", emission_wavelength=4.65e-7)]
    assert inferred_modality("optical", "Zeiss CZI", None, dapi, rgb=False) == "fluorescence"
    assert inferred_modality(None, "Leica LIF", None, [], rgb=False) == "optical"
    assert inferred_modality(None, "TIFF", "AxioCamERc5s", [], rgb=True) == "brightfield"
    assert inferred_modality(None, "TIFF", "Axio Imager.Z2", [Channel()], rgb=False) == "optical"
    # Electron modalities are the reader's; a plain colour TIFF of unknown origin stays unknown.
    assert inferred_modality("SEM", "TIFF", "AxioCam", dapi, rgb=True) == "SEM"
    assert inferred_modality(None, "TIFF", None, [], rgb=True) is None
    assert inferred_modality(None, "TIFF", "Quemesa", [], rgb=True) is None
    # Stored channels are dictionaries (catalogue JSON).
    stored = [{"name": "GFP", "emission_wavelength": 5.09e-7}]
    assert inferred_modality(None, "Nikon ND2", None, stored, rgb=False) == "fluorescence"
    assert family("Optical") == ("optical", "fluorescence", "brightfield")
    assert family("SEM") == ("sem",)
