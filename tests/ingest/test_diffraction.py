"""4D-STEM detector files (Merlin MIB + .hdr, NanoMegas blockfile): geometry catalogued, virtual bright field equal to an independent sum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allmicro_data.ingest.readers import ReadError, open_image_file
from tests.ingest.conftest import SAMPLES

MERLIN = SAMPLES / "quantumdetector" / "Single_9_Frame_CounterDepth_12_Rows_256.mib"
MERLIN_HDR = MERLIN.with_suffix(".hdr")
QUAD = SAMPLES / "quantumdetector" / "Quad_1_Frame_CounterDepth_12_Rows_256.mib"
BLOCKFILE = SAMPLES / "blockfile" / "test1.blo"


def test_merlin_virtual_bright_field_is_the_sum_over_each_frame() -> None:
    # Read the MIB another way: fixed-size frames of a 384-byte header + 256 x 256 big-endian
    # uint16 counts (the frame header says so: "MQ1,000001,00384,01,0256,0256,U16").
    frame = np.dtype([("head", "S384"), ("counts", ">u2", (256, 256))])
    frames = np.memmap(MERLIN, dtype=frame, mode="r")["counts"]
    expected = frames.astype(np.uint64).sum(axis=(1, 2))
    with open_image_file(MERLIN, [MERLIN_HDR]) as image_file:
        series = image_file.series[0]
        assert series.viewable and series.axes == "yx" and series.shape == (1, 9)
        np.testing.assert_array_equal(series.read()[0], expected)
        assert series.vendor["geometry"]["scan_shape"] == [9]
        assert series.vendor["geometry"]["detector_shape"] == [256, 256]
        # Read with its .hdr: the chip settings are among the vendor keys, no warning.
        assert series.vendor["original_metadata"]["hdr_file"]["Chip ID"].startswith("W556_B4")
        assert not image_file.warnings
        assert series.acquisition.detector == "Merlin Medipix 3RX (single)"
        # Where the reader laid the pair out for rosettasciio stays on the server.
        assert "allmicro-merlin-" not in json.dumps(series.vendor)


def test_merlin_without_its_header_says_what_is_missing() -> None:
    with open_image_file(MERLIN) as image_file:
        assert any(".hdr" in w for w in image_file.warnings)


def test_blockfile_virtual_bright_field_and_geometry() -> None:
    from rsciio.blockfile import file_reader

    eager = file_reader(str(BLOCKFILE), lazy=False)[0]["data"]
    expected = np.asarray(eager).astype(np.uint64).sum(axis=(2, 3))
    with open_image_file(BLOCKFILE) as image_file:
        series = image_file.series[0]
        assert series.shape == (3, 2)
        # Streaming: a region of one scan row sums that row's frames only.
        np.testing.assert_array_equal(series.read((slice(1, 2), slice(0, 2))), expected[1:2])
        assert set(series._rows) == {1}  # type: ignore[attr-defined]
        np.testing.assert_array_equal(series.read(), expected)
        assert series.pixel_size.x == pytest.approx(12.8e-9)
        assert series.pixel_size.y == pytest.approx(12.8e-9)
        geometry = series.vendor["geometry"]
        assert geometry["scan_shape"] == [3, 2] and geometry["detector_shape"] == [144, 144]
        assert geometry["detector_pixel"][0] == {"scale": pytest.approx(100 / 6226), "unit": "cm"}
        assert series.acquisition.accelerating_voltage == 200e3


def test_single_merlin_frame_is_shown_as_the_pattern() -> None:
    with open_image_file(QUAD, [QUAD.with_suffix(".hdr")]) as image_file:
        series = image_file.series[0]
        assert series.name == "diffraction pattern" and series.shape == (512, 512)
        frame = np.memmap(QUAD, dtype=">u2", mode="r", offset=768, shape=(512, 512))
        # Merlin stores rows bottom-up (rosettasciio flips them too): the pattern is upright.
        np.testing.assert_array_equal(series.read(), frame[::-1])


@pytest.mark.parametrize(("sample", "keep"), [(MERLIN, 200_000), (BLOCKFILE, 5_000)])
def test_truncated_detector_file_fails_when_opened(tmp_path: Path, sample: Path, keep: int) -> None:
    cut = tmp_path / sample.name
    cut.write_bytes(sample.read_bytes()[:keep])
    with pytest.raises(ReadError, match=rf"^{cut.name}: truncated"):
        open_image_file(cut)


def test_de_server_movie_with_its_info_is_a_virtual_bright_field() -> None:
    from rsciio.mrc import file_reader

    folder = SAMPLES / "direct-electron"
    movie, info = folder / "20241021_00405_movie.mrc", folder / "20241021_00405_info.txt"
    # rosettasciio reads the pair eagerly as a (scan y, scan x, ky, kx) array.
    frames = np.asarray(file_reader(str(movie), lazy=False)[0]["data"])
    assert frames.shape == (4, 8, 4, 8)
    with open_image_file(movie, [info]) as image_file:
        series = image_file.series[0]
        assert series.viewable and series.shape == (4, 8) and series.dtype == np.uint32
        np.testing.assert_array_equal(series.read(), frames.astype(np.uint64).sum(axis=(2, 3)))
        # Scan steps from the _info.txt ("Specimen Pixel Size X/Y (nanometers)").
        assert series.pixel_size.x == pytest.approx(0.1e-9)
        assert series.pixel_size.y == pytest.approx(0.2e-9)
        assert series.vendor["geometry"]["detector_shape"] == [4, 8]
        assert series.vendor["de_info"]["Camera Model"] == "DESim"
        assert series.acquisition.modality == "STEM" and series.acquisition.camera_length == 1e-3
    # Without its _info.txt the movie is the stack of frames the MRC header describes.
    with open_image_file(movie) as image_file:
        assert image_file.series[0].shape == (32, 4, 8)


# An EMPAD v1.2.2 acquisition XML as its camera server writes it (the layout of
# rosettasciio's EMPAD_v1.2.2 test file), shortened to what a reader looks at.
EMPAD_XML = """<root name="EMPAD_v1.2.2_x4_y3_size0.6"><timestamp timestamp="1774471672.586728" \
isoformat="2026-03-25T16:47:52.586728"/><software_version>1.2.2  (2021-08-20)</software_version>\
<raw_file filename="scan_x4_y3.raw"/><exposure_time>1</exposure_time>\
<camserver_parameters><camserver_scan_enabled>True</camserver_scan_enabled>\
<camserver_connected>True</camserver_connected></camserver_parameters>\
<scan_parameters mode="acquire"><scan_size>0.6</scan_size><scan_resolution_y>3</scan_resolution_y>\
<scan_resolution_x>4</scan_resolution_x></scan_parameters><iom_measurements>\
<is_column_in_stem_mode>True</is_column_in_stem_mode><spot_size_index>7</spot_size_index>\
<full_scan_field_of_view><scale_factor>0.72</scale_factor><x>1.272412341559544e-06</x>\
<y>1.272412341559544e-06</y></full_scan_field_of_view><nominal_camera_length>0.369\
</nominal_camera_length><high_voltage>300000.0</high_voltage></iom_measurements></root>"""


def _empad(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(7)
    # Frames of 128 x 128 float32 counts, each followed by two footer rows the sums must skip.
    frames = rng.random((3, 4, 130, 128), dtype=np.float32) * 100
    frames[..., 128:, :] = 1e9
    xml, raw = tmp_path / "acquisition.xml", tmp_path / "scan_x4_y3.raw"
    xml.write_text(EMPAD_XML)
    raw.write_bytes(frames.astype("<f4").tobytes())
    return xml, raw, frames


def test_empad_xml_and_raw_make_a_virtual_bright_field(tmp_path: Path) -> None:
    xml, raw, frames = _empad(tmp_path)
    expected = frames[..., :128, :].astype(np.float64).sum(axis=(2, 3))
    with open_image_file(xml, [raw]) as image_file:
        series = image_file.series[0]
        assert image_file.format == "EMPAD" and series.shape == (3, 4)
        np.testing.assert_allclose(series.read(), expected, rtol=1e-6)
        assert series.vendor["geometry"]["detector_shape"] == [128, 128]
        # The full field of view over the larger scan side, corrected by EMPAD's scale factor.
        assert series.pixel_size.x == pytest.approx(1.272412341559544e-06 / 0.72 / 4)
        acq = series.acquisition
        assert acq.accelerating_voltage == 300e3 and acq.camera_length == 0.369
        assert acq.spot_size == 7 and acq.modality == "STEM"
        assert acq.acquired_at is not None and acq.acquired_at.year == 2026
    with pytest.raises(ReadError, match=r"upload the \.raw"):
        open_image_file(xml)
    raw.write_bytes(raw.read_bytes()[:-1000])
    with pytest.raises(ReadError, match="truncated"):
        open_image_file(xml, [raw])
