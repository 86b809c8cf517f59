"""Gatan DigitalMicrograph tag trees (DM3/DM4 files, and as embedded in ImageJ or TIFF) -> Acquisition."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from allmicro_data.ingest.readers.base import Acquisition
from allmicro_data.ingest.readers.normalise import (
    as_float,
    parse_datetime,
    positive,
    text_or_none,
)

# Windows FILETIME: 100 ns ticks since 1601-01-01 UTC; DM stores the acquisition instant this way.
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def find_image_tags(tree: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tag group holding 'Microscope Info'/'DataBar', wherever DM nested it (stacks keep the
    tags of the source image under 'source/Tags at creation')."""
    queue: list[Mapping[str, Any]] = [tree]
    seen = 0
    while queue and seen < 5000:
        node = queue.pop(0)
        seen += 1
        if "Microscope Info" in node or "DataBar" in node:
            return node
        queue.extend(v for v in node.values() if isinstance(v, Mapping))
    return None


def _filetime(value: Any) -> datetime | None:
    ticks = as_float(value)
    # Anything before 1990 is a zero or a counter, not an acquisition time.
    if ticks is None or ticks < 1.2e17:
        return None
    return _FILETIME_EPOCH + timedelta(microseconds=ticks / 10)


def dm_acquisition(tags: Mapping[str, Any]) -> tuple[Acquisition, list[str]]:
    """Normalised facts from a DM ImageTags group; warnings for values that need a caveat."""
    warnings: list[str] = []
    mic = tags.get("Microscope Info") if isinstance(tags.get("Microscope Info"), Mapping) else {}
    session = tags.get("Session Info") if isinstance(tags.get("Session Info"), Mapping) else {}
    databar = tags.get("DataBar") if isinstance(tags.get("DataBar"), Mapping) else {}
    digiscan = tags.get("DigiScan") if isinstance(tags.get("DigiScan"), Mapping) else {}
    assert isinstance(mic, Mapping) and isinstance(session, Mapping)
    assert isinstance(databar, Mapping) and isinstance(digiscan, Mapping)

    acq = Acquisition(vendor="Gatan")
    illumination = (text_or_none(mic.get("Illumination Mode")) or "").upper()
    operation = (text_or_none(mic.get("Operation Mode")) or "").upper()
    if illumination.startswith("SEM"):
        acq.modality = "SEM"
    elif "STEM" in illumination or operation == "SCANNING":
        acq.modality = "STEM"
    elif illumination.startswith("TEM") or operation in ("IMAGING", "DIFFRACTION"):
        acq.modality = "TEM"
    # 'Microscope Info.Name' is the DM microscope plug-in ("FEI Tecnai Remote"); the model the
    # operator typed lives in Session Info or Microscope Info.Microscope.
    acq.instrument = (
        text_or_none(session.get("Microscope"))
        or text_or_none(mic.get("Microscope"))
        or text_or_none(mic.get("Name"))
    )
    acq.operator = text_or_none(session.get("Operator")) or text_or_none(mic.get("Operator"))
    acq.accelerating_voltage = positive(as_float(mic.get("Voltage")))
    acq.magnification = positive(
        as_float(mic.get("Indicated Magnification")) or as_float(mic.get("Actual Magnification"))
    )
    probe_na = positive(as_float(mic.get("Probe Current (nA)")))
    acq.beam_current = probe_na * 1e-9 if probe_na else None
    # The 'STEM Camera Length' tag is written in every mode; it means something only when the
    # beam is scanned in a TEM or a diffraction pattern is recorded.
    if acq.modality == "STEM" or operation == "DIFFRACTION":
        cl_mm = positive(as_float(mic.get("STEM Camera Length")))
        acq.camera_length = cl_mm * 1e-3 if cl_mm else None
    stage = mic.get("Stage Position")
    if isinstance(stage, Mapping):
        acq.tilt_angle_deg = as_float(stage.get("Stage Alpha"))
    acq.detector = text_or_none(databar.get("Device Name"))
    acq.exposure_time = positive(as_float(databar.get("Exposure Time (s)")))
    sample_us = positive(as_float(digiscan.get("Sample Time")))
    if sample_us is not None:
        acq.dwell_time = sample_us * 1e-6

    utc = _filetime(databar.get("Acquisition Time (OS)"))
    date_text = text_or_none(databar.get("Acquisition Date"))
    time_text = text_or_none(databar.get("Acquisition Time"))
    local = None
    if date_text and time_text:
        # DM writes these in the Windows locale of the acquisition PC; US order is the default.
        local = parse_datetime(
            f"{date_text} {time_text}",
            ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S"),
        )
    if utc is not None:
        acq.acquired_at = utc
    elif local is not None:
        acq.acquired_at = local
        warnings.append("acquisition time has no time zone (DM local time of the acquisition PC)")
    return acq, warnings


def dm_tags_from_imagej_info(info: str) -> dict[str, Any]:
    """The DM tag tree ImageJ copies into its 'Info' property as 'root.a.b = value' lines."""
    tree: dict[str, Any] = {}
    for line in info.splitlines()[:200_000]:
        key, sep, value = line.partition(" = ")
        if not sep or not key.startswith("root."):
            continue
        node = tree
        parts = key[5:].split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value.strip()
    return tree
