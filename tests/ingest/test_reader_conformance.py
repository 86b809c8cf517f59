"""The check every registered reader passes on the corpus samples it reads (as bioio's test_utilities).

Whatever the format, a reader reports axes, shape and dtype that its pixels have, reads a region
as the same pixels a full read has there, gives pixel sizes that are positive or None and
metadata that JSON can hold, and fails on a broken file with a ReadError that names the file
and the reader. A new reader is held to this by being in REGISTRY: one without a sample fails.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from allmicro_data.ingest.readers import (
    REGISTRY,
    Reader,
    ReadError,
    Series,
    open_image_file,
    sniff,
)
from allmicro_data.ingest.readers.base import AXIS_ORDER
from tests.ingest.conftest import SAMPLES, manifest

# Every file of the corpus a reader recognises, with the companions it is read with.
READABLE = [
    (sniff(SAMPLES / entry["path"]), entry)
    for entry in manifest()["files"]
    if entry["expected"].get("shape") is not None
]


def _reader_id(reader: Reader) -> str:
    return reader.name


def check_series(series: Series) -> None:
    """The promises of readers.base.Series, for one series."""
    axes, shape = series.axes, series.shape
    assert axes and len(set(axes)) == len(axes), axes
    assert "".join(a for a in AXIS_ORDER if a in axes) == axes, f"{axes} not in tczyx order"
    assert len(shape) == len(axes) and all(isinstance(n, int) and n >= 1 for n in shape), shape
    assert isinstance(series.dtype, np.dtype)
    if series.rgb:
        assert shape[axes.index("c")] in (3, 4)
    if series.image_region is not None:
        y0, y1, x0, x1 = series.image_region
        assert 0 <= y0 < y1 <= shape[axes.index("y")] and 0 <= x0 < x1 <= shape[axes.index("x")]
    for size in (series.pixel_size.x, series.pixel_size.y, series.pixel_size.z):
        assert size is None or (math.isfinite(size) and size > 0), series.pixel_size
    for scale, unit in series.axis_calibration.values():
        assert math.isfinite(scale) and isinstance(unit, str)
    # What the catalogue, info --json and the metadata downloads store: strict JSON, no NaN.
    json.dumps(
        {
            "name": series.name,
            "vendor": series.vendor,
            "acquisition": series.acquisition.to_json(),
            "warnings": series.warnings,
        },
        allow_nan=False,
    )
    assert all(isinstance(w, str) for w in series.warnings)
    assert series.ome_xml() is None or isinstance(series.ome_xml(), str)
    if not series.viewable:
        return  # catalogued with its metadata, no pixels promised
    full = series.read()
    assert full.shape == shape and full.dtype == series.dtype
    # A region inside, and one at the far corner: the same pixels as the full read has there.
    for region in (
        tuple(slice(n // 3, max(n // 3 + 1, 2 * n // 3)) for n in shape),
        tuple(slice(n - 1, n) for n in shape),
    ):
        np.testing.assert_array_equal(series.read(region), full[region])
    for level in series.levels():
        assert level.axes == axes and level.dtype == series.dtype
        assert all(m <= n for m, n in zip(level.shape, shape, strict=True))
        corner = tuple(slice(0, min(2, n)) for n in level.shape)
        assert level.read(corner).shape == tuple(min(2, n) for n in level.shape)


def test_every_registered_reader_reads_a_sample_of_the_corpus() -> None:
    assert {reader.name for reader, _ in READABLE} == {reader.name for reader in REGISTRY}


@pytest.mark.parametrize(
    ("reader", "entry"), READABLE, ids=[f"{r.name}:{e['path']}" for r, e in READABLE]
)
def test_reader_keeps_the_series_promises(reader: Reader, entry: dict[str, Any]) -> None:
    companions = [SAMPLES / c for c in entry.get("companions", [])]
    with reader.open(SAMPLES / entry["path"], companions) as image_file:
        assert image_file.format and image_file.series
        assert 0 <= image_file.primary_series < len(image_file.series)
        json.dumps(image_file.warnings)
        for series in image_file.series:
            check_series(series)


def _read_everything(path: Path, break_after_open: bool = False) -> None:
    with open_image_file(path) as image_file:
        if break_after_open:
            # The bytes go while the file is open: pixels the reader reads lazily are gone
            # (as when they do not decode), whatever the header promised.
            os.truncate(path, path.stat().st_size // 2)
        for series in image_file.series:
            if series.viewable:
                series.read()


@pytest.mark.parametrize("reader", REGISTRY, ids=_reader_id)
def test_a_broken_file_fails_with_a_read_error_naming_the_file_and_the_reader(
    reader: Reader, tmp_path: Path
) -> None:
    """Each sample that opens alone, cut in half before it is opened and after: whatever fails
    must fail with a ReadError naming the file and the reader (or its format)."""
    failures: list[tuple[str, str, str]] = []
    for candidate, entry in READABLE:
        if candidate is not reader or entry.get("companions"):
            continue
        source = SAMPLES / entry["path"]
        with open_image_file(source) as intact:
            fmt = intact.format
        for when in ("before", "after"):
            broken = tmp_path / f"cut {when} opening {source.name}"
            data = source.read_bytes()
            broken.write_bytes(data[: len(data) // 2] if when == "before" else data)
            try:
                if sniff(broken) is not reader:
                    continue
            except ReadError:
                continue  # not even recognisable any more: no reader's error
            try:
                _read_everything(broken, break_after_open=when == "after")
            except ReadError as exc:
                failures.append((broken.name, fmt, str(exc)))
            except Exception as exc:
                pytest.fail(f"{broken.name}: {type(exc).__name__} instead of a ReadError: {exc}")
    assert failures, f"no broken sample of {reader.name} fails: nothing checked"
    for name, fmt, message in failures:
        assert name in message, message
        lowered = message.lower()
        assert reader.name.lower() in lowered or fmt.lower() in lowered, (fmt, message)
