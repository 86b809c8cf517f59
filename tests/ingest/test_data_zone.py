"""The data zone a Zeiss SmartSEM draws over the bottom of its scan is found by its pixels (the
metadata does not say it is there), and nothing is cut from a frame without one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from allmicro_data.ingest.readers import open_image_file
from tests.ingest.conftest import SAMPLES

ZEISS = SAMPLES / "zeiss-sem" / "test_tiff_Zeiss_SEM_512pix.tif"


def _region(path: Path) -> tuple[int, int, int, int] | None:
    with open_image_file(path) as reader:
        (series,) = reader.series
        return series.image_region


def _with_bottom_rows(tmp_path: Path, rows: np.ndarray) -> Path:
    """A copy of the Zeiss sample, tags and all, with its bottom rows replaced."""
    with tifffile.TiffFile(ZEISS) as tiff:
        page = tiff.pages.first
        assert page.compression == 1  # uncompressed strips, one after the other
        offset, size = page.dataoffsets[0], sum(page.databytecounts)
        width = page.shape[1]
    data = bytearray(ZEISS.read_bytes())
    start = offset + size - rows.size
    assert rows.shape[1] == width and rows.dtype == np.uint8
    data[start : offset + size] = rows.tobytes()
    copy = tmp_path / "zeiss.tif"
    copy.write_bytes(bytes(data))
    return copy


def test_the_zeiss_data_zone_is_found_under_its_frame_line() -> None:
    # Rows 350-382 of the sample are the zone (a black line, then the light panel with text).
    assert _region(ZEISS) == (0, 350, 0, 512)


def test_a_scan_without_a_drawn_zone_keeps_every_row(tmp_path: Path) -> None:
    noise = np.random.default_rng(7).integers(60, 200, size=(34, 512), dtype=np.uint8)
    assert _region(_with_bottom_rows(tmp_path, noise)) is None


def test_a_flat_band_without_its_frame_line_is_not_a_zone(tmp_path: Path) -> None:
    # A dark, featureless bottom of a sample (a hole, the stage) is not taken for a data zone.
    panel = np.full((34, 512), 243, dtype=np.uint8)
    assert _region(_with_bottom_rows(tmp_path, panel)) is None
