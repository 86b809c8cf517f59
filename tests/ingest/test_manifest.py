"""Every primary file in tests/data/samples/MANIFEST.json reads with the shape, calibration and facts measured."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from allmicro_data.ingest.readers import Series, open_image_file
from allmicro_data.ingest.readers.normalise import length_factor
from allmicro_data.vendors import VENDOR_AS_WRITTEN, canonical_vendor
from tests.ingest.conftest import SAMPLES, manifest

PRIMARY = [f for f in manifest()["files"] if f.get("role") == "primary"]

# Manifest axis letters (tifffile's and the reference readers') onto ours; S (RGB samples) is c.
_LETTERS = {"S": "c", "C": "c", "Z": "z", "T": "t", "I": "z", "Y": "y", "X": "x"}
_PIXEL_AXIS = {"x": "x", "y": "y", "z": "z", "width": "x", "height": "y"}


def _close(a: float, b: float, rel: float = 0.01) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12 if b == 0 else 0.0)


def _sizes_by_axis(axes: str, shape: list[int] | tuple[int, ...]) -> dict[str, int]:
    """Axis letter -> size, without singleton axes: readers differ in which they keep."""
    return {a: int(n) for a, n in zip(axes, shape, strict=True) if int(n) != 1}


def _expected_sizes(expected: dict[str, Any]) -> dict[str, int]:
    letters = expected["axes"].split()[0]
    shape = list(expected["shape"])
    mrc = expected.get("mrc_header")
    if mrc and mrc["mapc_mapr_maps"] != [1, 2, 3] and mrc["is_volume"]:
        # The manifest gives MRC shapes as stored (sections, rows, cols), i.e. crystallographic
        # axes (maps, mapr, mapc); we present volumes as z, y, x so voxel sizes fit their axes.
        mapc, mapr, maps = mrc["mapc_mapr_maps"]
        by_axis = {maps: shape[0], mapr: shape[1], mapc: shape[2]}
        shape = [by_axis[3], by_axis[2], by_axis[1]]
    return _sizes_by_axis("".join(_LETTERS[c] for c in letters), shape)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [value, *[leaf for v in value for leaf in _leaves(v)]]
    return [value]


def _same(a: Any, b: Any) -> bool:
    try:
        return _close(float(a), float(b), 1e-6)
    except (TypeError, ValueError):
        return str(a).strip() == str(b).strip()


def _in_vendor(series: Series, value: Any) -> bool:
    """A fact kept verbatim: it appears among the vendor keys (or as the series name)."""
    leaves = [*_leaves(series.vendor), series.name]
    if isinstance(value, list):
        return any(
            isinstance(leaf, list) and len(leaf) == len(value) and all(map(_same, leaf, value))
            for leaf in leaves
        ) or all(any(_same(leaf, v) for leaf in leaves) for v in value)
    return any(_same(leaf, value) for leaf in leaves)


def _si(value: Any, unit: str | None) -> float:
    factors = {"v": 1.0, "kv": 1e3, "s": 1.0, "ms": 1e-3, "m": 1.0, "mm": 1e-3, "deg": 1.0}
    if unit is None:
        return float(value)
    return float(value) * factors[unit.lower()]


def _magnification(value: Any) -> float:
    if isinstance(value, str):
        match = re.match(r"^\s*([\d.]+)\s*(K)?\s*X?\s*$", value, re.IGNORECASE)
        assert match, value
        return float(match.group(1)) * (1000 if match.group(2) else 1)
    return float(value)


def _parse_expected_time(text: str) -> datetime:
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in (
        "%m/%d/%Y %I:%M:%S %p",
        "%d %b %Y %H:%M:%S",
        "%Y:%m:%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%a %b %d %H:%M:%S %Y",
    ):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise AssertionError(f"test cannot parse manifest time {text!r}")


def _check_time(ours: datetime | None, expected_text: str) -> None:
    assert ours is not None, "acquisition time missing"
    expected = _parse_expected_time(expected_text)
    if (expected.tzinfo is None) == (ours.tzinfo is None):
        assert abs(ours - expected) < timedelta(seconds=1)
    else:
        # One side is a wall-clock time without zone (the manifest quotes what the file shows),
        # the other the same instant in UTC (DM's FILETIME, TIA's unix time): equal up to a
        # zone offset, which is a whole number of quarter hours within +-14 h.
        a = ours.replace(tzinfo=None)
        b = expected.replace(tzinfo=None)
        delta = abs((a - b).total_seconds())
        assert delta <= 14 * 3600 and (delta % 900 < 1 or 900 - delta % 900 < 1), (ours, expected)


def _check_fact(series: Series, fact: dict[str, Any]) -> None:
    name, value, unit = fact["name"], fact["value"], fact.get("unit")
    acq = series.acquisition
    base = name.split(" (")[0]
    if value is None:
        return
    if base == "accelerating_voltage":
        assert acq.accelerating_voltage is not None and _close(
            acq.accelerating_voltage, _si(value, unit)
        )
    elif base in ("working_distance", "horizontal_field_width", "camera_length", "dwell_time"):
        ours = getattr(acq, base)
        assert ours is not None and _close(ours, _si(value, unit)), (base, ours, value, unit)
    elif base == "exposure_time":
        assert acq.exposure_time is not None and _close(acq.exposure_time, _si(value, unit))
    elif base == "exposure_or_dwell_time":
        ours = acq.exposure_time or acq.dwell_time
        assert ours is not None and _close(ours, _si(value, unit))
    elif base == "magnification":
        assert acq.magnification is not None and _close(acq.magnification, _magnification(value))
    elif base == "tilt_alpha":
        assert acq.tilt_angle_deg is not None and _close(acq.tilt_angle_deg, float(value))
    elif base == "microscope":
        parts = [v for v in value.values() if v] if isinstance(value, dict) else [value]
        ours = (acq.instrument or "").lower()
        assert ours, "instrument missing"
        assert all(p.lower() in ours or ours in p.lower() for p in parts), (ours, value)
    elif base in ("detector", "camera", "camera_model"):
        text = " ".join(filter(None, [acq.detector, acq.instrument])).lower()
        wanted = value.get("model") if isinstance(value, dict) else value
        assert str(wanted).lower() in text, (text, value)
    elif base == "camera_make_model":
        make, model = (p.strip() for p in str(value).split("/"))
        # The vendor table's name for the maker; the file's spelling stays among the vendor keys.
        assert acq.vendor == canonical_vendor(make) and acq.instrument == model
        assert series.vendor.get(VENDOR_AS_WRITTEN, acq.vendor) == make
    elif base == "acquired_at_local":
        # Readers say whether a time is zone-aware: naive is the instrument's wall clock.
        assert acq.acquired_at is not None and (acq.acquired_at.tzinfo is None) is value
    elif base in ("vendor", "modality"):
        # Normalised facts search filters on (allmicro_data.vendors, allmicro_data.modalities).
        assert getattr(acq, base) == value, (base, getattr(acq, base), value)
    elif base == "objective":
        ours = acq.objective or ""
        # Follows the image's InstrumentRef/ObjectiveSettings, which may name another
        # objective than instruments[0] the manifest quotes; model or NA must match. An
        # objective with neither has nothing to show.
        if value.get("model"):
            assert value["model"] in ours
        elif value.get("lens_na"):
            assert f"NA {value['lens_na']:g}" in ours
    elif base == "channel_names":
        assert [c.name for c in acq.channels] == value
    elif base == "acquisition_datetime":
        _check_time(acq.acquired_at, str(value))
    elif base in ("title", "image_name"):
        assert series.name == value or _in_vendor(series, value)
    else:
        # Everything else the manifest lists is a vendor key we must keep losslessly.
        assert _in_vendor(series, value), f"{name}={value!r} not among the vendor keys"


def _check_unsure(series: Series, fact: dict[str, Any]) -> None:
    """Facts the manifest marks unsure: ours may be absent (we do not guess); if present, it
    must agree. E.g. TVIPS 99 kV, a DM 'STEM Camera Length' in SEM mode, Olympus modality."""
    if fact["name"] == "modality":
        assert series.acquisition.modality in (None, fact["value"])
        return
    if fact["name"] == "embedded_dm_tag_blob_bytes":
        return  # the raw tag blob is not kept as bytes; its content is not parsed from TIFF
    try:
        _check_fact(series, fact)
    except AssertionError:
        base = fact["name"].split(" (")[0]
        assert getattr(series.acquisition, base, None) is None, fact


@pytest.mark.parametrize("entry", PRIMARY, ids=[f["path"] for f in PRIMARY])
def test_primary_sample_matches_manifest(entry: dict[str, Any]) -> None:
    expected = entry["expected"]
    companions = [SAMPLES / c for c in entry.get("companions", [])]
    with open_image_file(SAMPLES / entry["path"], companions) as image_file:
        assert len(image_file.series) == expected["n_series"]
        if "series_names" in expected:
            # Containers (Phenom ELID, Bruker BCF) give every image and analysis its own series.
            assert [s.name for s in image_file.series] == expected["series_names"]
        index = expected.get("primary_series_index", 0)
        assert image_file.primary_series == index
        series = image_file.series[index]

        assert _sizes_by_axis(series.axes, series.shape) == _expected_sizes(expected)
        assert str(series.dtype) == expected["dtype"]

        for size in expected["pixel_size"]:
            axis = _PIXEL_AXIS[size["axis"]]
            factor = length_factor(size["unit"])
            ours = series.pixel_size.for_axis(axis)
            if factor is None:
                # Not a length (1/nm for diffraction): kept as the file states it.
                scale, unit = series.axis_calibration[axis]
                assert unit == size["unit"] and _close(scale, size["value"])
            elif size["value"] <= 0:
                assert ours is None, "a zero or negative cell is not a calibration"
            elif size.get("unsure"):
                assert ours is None or _close(ours, size["value"] * factor)
            else:
                assert ours is not None and _close(ours, size["value"] * factor), (axis, ours)
        if not expected["pixel_size"]:
            # Nominal dpi and unit-less resolution tags must not turn into a pixel size.
            assert series.pixel_size.x is None and series.pixel_size.y is None

        for fact in expected.get("facts", []):
            if fact.get("unsure"):
                _check_unsure(series, fact)
            else:
                _check_fact(series, fact)

        if "Z" in expected["axes"] or series.viewable:
            region = tuple(slice(0, min(2, n)) for n in series.shape)
            if series.viewable:
                block = series.read(region)
                assert block.shape == tuple(min(2, n) for n in series.shape)
                assert block.dtype == series.dtype


def test_every_sample_in_the_corpus_opens(samples: Path) -> None:
    """Companions read on their own too (a lone .ser, DE virtual images); only sidecar text fails."""
    for entry in manifest()["files"]:
        if entry.get("role") == "primary" or entry["expected"].get("shape") is None:
            continue
        with open_image_file(samples / entry["path"]) as image_file:
            series = image_file.series[0]
            assert _sizes_by_axis(series.axes, series.shape) == _expected_sizes(entry["expected"])
