"""EM containers read series by series: Phenom ELID, JEOL Analysis Station (with its .ASW project), Bruker BCF."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from rsciio.phenom import file_reader as rsciio_elid

from allmicro_data.ingest.readers import ReadError, open_image_file, sniff
from allmicro_data.ingest.readers.rosettasciio import RsciioReader
from tests.conftest import SAMPLES


@pytest.mark.parametrize("version", [0, 1])
def test_a_phenom_elid_gives_every_image_and_analysis_its_own_series(version: int) -> None:
    path = SAMPLES / "phenom" / f"Elid2Version{version}.elid"
    assert isinstance(sniff(path), RsciioReader)
    reference = rsciio_elid(str(path))
    with open_image_file(path) as elid:
        assert elid.format.endswith(f"(container version {version})")
        assert len(elid.series) == len(reference) == 11
        for ours, theirs in zip(elid.series, reference, strict=True):
            assert ours.name == theirs["metadata"]["General"]["title"]
            if ours.viewable:
                continue
            # Spectra, line scans and maps: catalogued with their energy axis, no pyramid;
            # the counts decoded in bulk equal rosettasciio's value-by-value decoding.
            energy = "c" if ours.axes == "cyx" else "x"
            assert ours.axis_calibration[energy][1] == "keV"
            np.testing.assert_array_equal(ours._data, theirs["data"])  # type: ignore[attr-defined]
        images = [s for s in elid.series if s.viewable]
        assert [s.name for s in images] == ["Image 1", "385test - spectrum", "Image 1"]
        second = images[2].acquisition
        assert second.working_distance == pytest.approx(8.23025e-3)
        assert second.spot_size == pytest.approx(5.1)
        # The ELID names no time zone: the wall-clock time stays naive.
        assert second.acquired_at is not None and second.acquired_at.tzinfo is None
        spot = elid.series[1].acquisition
        assert spot.detector == "EDS (FastSDD_C2)" and spot.accelerating_voltage == 15000.0
        # An imported colour picture: RGB planes, as every reader gives colour.
        picture = images[1]
        assert picture.rgb and picture.axes == "cyx" and picture.shape == (3, 24, 32)
        rgba = reference[7]["data"]
        np.testing.assert_array_equal(picture.read()[1], rgba["G"])


def test_a_truncated_bzip2_stream_says_so_instead_of_unrecognised(tmp_path: Path) -> None:
    cut = tmp_path / "cut.elid"
    cut.write_bytes((SAMPLES / "phenom" / "Elid2Version0.elid").read_bytes()[:5000])
    with pytest.raises(ReadError, match=r"^cut\.elid: bzip2 stream is truncated"):
        sniff(cut)


@pytest.mark.parametrize("name", ["P45_the_default_job.bcf", "test_TEM.bcf"])
def test_every_series_of_a_bcf_carries_the_acquisition_facts(name: str) -> None:
    with open_image_file(SAMPLES / "bruker" / name) as bcf:
        facts = [
            (s.acquisition.accelerating_voltage, s.acquisition.magnification) for s in bcf.series
        ]
        assert len(set(facts)) == 1 and None not in facts[0]
        dates = {s.acquisition.acquired_at for s in bcf.series}
        assert len(dates) == 1 and None not in dates
        working = [s.acquisition.working_distance for s in bcf.series]
        if name.startswith("P45"):
            assert working == [pytest.approx(7.69044e-3)] * len(bcf.series)
        else:
            assert working == [None] * len(bcf.series)  # Esprit's -1: the TEM reported none
        images = [s for s in bcf.series if s.viewable]
        assert all(s.pixel_size.x and s.pixel_size.y for s in images)
        assert [s.acquisition.detector for s in images] == [s.name for s in images]


def _jeol_tree(entries: list[tuple[str, object]]) -> bytes:
    """A JEOL key tree: 0x01, keyword, type and length, then a value or children, then 0xff."""
    out = b""
    for key, value in entries:
        name = key.encode() + b"\x00"
        out += b"\x01" + struct.pack("<i", len(name)) + name
        if isinstance(value, list):
            out += struct.pack("<ii", 0, 0) + _jeol_tree(value) + b"\xff"
        else:
            text = str(value).encode() + b"\x00"
            out += struct.pack("<ii", 12, len(text)) + text + b"\xff"
    return out


def _asw(path: Path, listed: str) -> Path:
    view_data = [("0", [("Filename", listed), ("Comment", "grain boundary")])]
    view = [("0", [("ViewName", "View 003"), ("ViewData", view_data)])]
    sample = [("0", [("SampleName", "Alloy 7"), ("ViewInfo", view)])]
    path.write_bytes(bytes(12) + _jeol_tree([("SampleInfo", sample)]) + b"\x00")
    return path


def test_a_jeol_image_takes_its_sample_and_view_from_the_asw_project(tmp_path: Path) -> None:
    image = SAMPLES / "jeol" / "Dummy-Data_0000000.img"
    project = _asw(tmp_path / "Project.ASW", "Alloy 7\\View 003\\Dummy-Data_0000000.img")
    with open_image_file(image, [project]) as jeol:
        (series,) = jeol.series
        asw = series.vendor["original_metadata"]["asw"]
        assert asw["sample"]["SampleName"] == "Alloy 7"
        assert asw["view"]["ViewName"] == "View 003"
        assert asw["view_data"]["Comment"] == "grain boundary"
        assert not jeol.warnings
    other = _asw(tmp_path / "Other.ASW", "Alloy 7\\View 004\\Dummy-Data_0000009.img")
    with open_image_file(image, [other]) as jeol:
        assert "asw" not in jeol.series[0].vendor["original_metadata"]
        assert jeol.warnings == ["the project Other.ASW does not list Dummy-Data_0000000.img"]


def test_jeol_images_read_whatever_their_stored_name(tmp_path: Path) -> None:
    """Originals are stored content-addressed: the content, not the extension, picks the parser."""
    stored = tmp_path / "3f2a9c"
    stored.write_bytes((SAMPLES / "jeol" / "Dummy-Data_0000001.map").read_bytes())
    with open_image_file(stored) as jeol:
        (series,) = jeol.series
        assert series.shape == (64, 64) and series.pixel_size.x == pytest.approx(7.734375e-9)
        assert series.acquisition.instrument == "JEM-ARM200F(URP)"


def test_analyses_without_a_pyramid_are_catalogued_with_the_image_they_were_made_on() -> None:
    with open_image_file(SAMPLES / "phenom" / "Elid2Version0.elid") as elid:
        first, picture, second = (s for s in elid.series if s.viewable)
        names = [a["name"] for a in first.vendor["analyses"]]
        assert names == [f"Image 1, {n}" for n in ("Spot 1", "Region 2", "Map 3", "Line 4")] + [
            "Image 1, Map 6",
            "Image 1, Difference 3 - 6",
        ]
        assert [a["name"] for a in picture.vendor["analyses"]] == ["385test - spectrum, MSA 1"]
        (mapped,) = second.vendor["analyses"]
        assert mapped["shape"] == [2048, 16, 16] and mapped["dtype"] == "uint32"
        assert mapped["acquisition"]["detector"] == "EDS (FastSDD_C2)"
        assert mapped["axes"][2]["units"] == "keV"
    with open_image_file(SAMPLES / "bruker" / "P45_the_default_job.bcf") as bcf:
        # The hypermap spans every image of the BCF.
        for image in (s for s in bcf.series if s.viewable):
            (hypermap,) = image.vendor["analyses"]
            assert hypermap["name"] == "EDX" and hypermap["shape"] == [2048, 75, 100]
            assert hypermap["original_metadata"]["Detector"]["Type"] == "XFlash 6|10"


def test_an_asw_project_opened_with_its_data_files_gives_a_series_per_listed_file(
    tmp_path: Path,
) -> None:
    image = SAMPLES / "jeol" / "Dummy-Data_0000000.img"
    mapped = SAMPLES / "jeol" / "Dummy-Data_0000001.map"
    project = _asw(tmp_path / "Project.ASW", "Alloy 7\\View 003\\Dummy-Data_0000001.map")
    with open_image_file(project, [image, mapped]) as jeol:
        # Only the file the project lists: the .img is another view's.
        (series,) = jeol.series
        assert series.name == "BF(frame1)" and series.shape == (64, 64)
        assert series.vendor["original_metadata"]["asw"]["sample"]["SampleName"] == "Alloy 7"
    with pytest.raises(ReadError, match=r"^Project\.ASW: a JEOL \.ASW project holds metadata"):
        open_image_file(project)


def test_elid_maps_are_decoded_only_when_read() -> None:
    """A spectrum image is catalogued, not converted: its counts stay in the file until read."""
    from allmicro_data.ingest.readers.phenom import LazyCounts

    with open_image_file(SAMPLES / "phenom" / "Elid2Version1.elid") as elid:
        maps = [s for s in elid.series if ", Map " in s.name or ", Line " in s.name]
        assert len(maps) == 4
        for series in maps:
            assert isinstance(series._data, LazyCounts)  # type: ignore[attr-defined]
        corner = maps[0].read((slice(0, 2048), slice(0, 2), slice(0, 2)))
        assert corner.shape == (2048, 2, 2) and corner.dtype == np.uint32 and corner.sum() > 0


def test_a_spectrum_image_is_energy_channels_over_a_calibrated_scan() -> None:
    """An EDS hypermap or map: c is energy (keV per channel), y and x the scan with its pixel
    size, as the image it was acquired on has."""
    with open_image_file(SAMPLES / "bruker" / "P45_the_default_job.bcf") as bcf:
        image, _, hypermap = bcf.series
        assert hypermap.axes == "cyx" and hypermap.shape == (2048, 75, 100)
        assert hypermap.axis_calibration["c"] == (pytest.approx(0.010001), "keV")
        assert hypermap.pixel_size.x == pytest.approx(image.pixel_size.x, rel=1e-9)
        assert hypermap.pixel_size.y == pytest.approx(image.pixel_size.y, rel=1e-9)
    path = SAMPLES / "phenom" / "Elid2Version0.elid"
    counts = np.asarray(rsciio_elid(str(path))[3]["data"])  # "Image 1, Map 3", (y, x, energy)
    with open_image_file(path) as elid:
        mapped = elid.series[3]
        assert mapped.name == "Image 1, Map 3" and mapped.axes == "cyx"
        assert mapped.pixel_size.x == pytest.approx(1.2197240748650153e-6)
        region = (slice(100, 300), slice(2, 5), slice(0, 16))
        np.testing.assert_array_equal(
            mapped.read(region), counts[2:5, 0:16, 100:300].transpose(2, 0, 1)
        )


def test_an_elid_map_read_after_its_file_was_cut_fails_naming_the_file(tmp_path: Path) -> None:
    import bz2

    path = tmp_path / "project.elid"
    # Small bzip2 blocks, so that the cut stream still opens up to where it ends.
    whole = bz2.compress(
        bz2.decompress((SAMPLES / "phenom" / "Elid2Version1.elid").read_bytes()), 1
    )
    path.write_bytes(whole)
    with open_image_file(path) as elid:
        mapped = elid.series[3]
        path.write_bytes(whole[: len(whole) // 12])
        with pytest.raises(ReadError, match=r"^project\.elid: cannot read .* truncated"):
            mapped.read()
