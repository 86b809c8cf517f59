"""Metadata shown in the units microscopists read, with each language's number format."""

from __future__ import annotations

from datetime import UTC, datetime

from allmicro_data.api.schemas import AcquisitionOut, PixelSizeOut
from allmicro_data.api.web.formatting import acquisition_fields, data_size, length, pixel_size
from allmicro_data.api.web.pages import local_path


def _acquisition(**values: object) -> AcquisitionOut:
    fields = dict.fromkeys(AcquisitionOut.model_fields)
    fields["channels"] = []
    fields.update(values)
    return AcquisitionOut.model_validate(fields)


def test_data_sizes_take_the_binary_unit_that_reads_best() -> None:
    assert data_size(0, "en") == "0 B"
    assert data_size(1000, "it") == "1.000 B"
    assert data_size(1536, "en") == "1.5 KiB"
    assert data_size(3500, "sl") == "3,418 KiB"
    assert data_size(200 * 1024**3, "en") == "200 GiB"
    assert data_size(10**15, "en") == "909.5 TiB"
    assert data_size(10**20, "en") == "88,820 PiB"


def test_lengths_take_the_unit_that_reads_best() -> None:
    assert length(3.3724e-6, "en") == "3.372 µm"
    assert length(3.3724e-6, "it") == "3,372 µm"
    assert length(0.00403466, "sl") == "4,035 mm"
    assert length(1.14e-9, "en") == "1.14 nm"
    assert length(5.2e-10, "en") == "5.2 Å"  # a TEM pixel size
    assert length(2.5e-13, "en") == "0.25 pm"
    assert pixel_size(PixelSizeOut(x=3.3724e-6, y=3.3724e-6, z=None), "en") == "3.372 µm"
    assert pixel_size(PixelSizeOut(x=None, y=None, z=None), "en") is None
    assert (
        pixel_size(PixelSizeOut(x=1e-9, y=1e-9, z=2e-9), "en")
        == "1 nm \N{MULTIPLICATION SIGN} 1 nm \N{MULTIPLICATION SIGN} 2 nm"
    )


def test_acquisition_fields_in_display_units_and_missing_ones_left_out() -> None:
    acquisition = _acquisition(
        modality="SEM",
        accelerating_voltage=5000.0,
        working_distance=0.00403466,
        horizontal_field_width=0.00172667,
        beam_current=6.25e-12,
        dwell_time=1e-5,
        exposure_time=0.25,
        magnification=120.0,
        acquired_at=datetime(2016, 6, 13, 17, 6, 40, tzinfo=UTC),
    )
    rows = {f.key: f.value for f in acquisition_fields(acquisition, {}, "en")}
    assert rows["accelerating_voltage"] == "5 kV"
    assert rows["working_distance"] == "4.035 mm"
    assert rows["horizontal_field_width"] == "1.727 mm"
    assert rows["beam_current"] == "6.25 pA"
    assert rows["dwell_time"] == "10 µs"
    assert rows["exposure_time"] == "250 ms"
    assert rows["magnification"] == "120 \N{MULTIPLICATION SIGN}"
    assert "2016" in rows["acquired_at"]
    # Never a guess: what the file does not state is not shown, not shown as 0.
    assert "tilt_angle_deg" not in rows and "detector" not in rows
    assert next(iter(rows)) == "modality"
    assert {f.key: f.value for f in acquisition_fields(acquisition, {}, "it")}["dwell_time"] == (
        "10 µs"
    )


def test_next_page_after_sign_in_stays_on_this_server() -> None:
    assert local_path("/images/abc?x=1") == "/images/abc?x=1"
    for hostile in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "", None):
        assert local_path(hostile) == "/projects"
