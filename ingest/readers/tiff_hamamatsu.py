"""Hamamatsu HPD-TA streak-camera TIFFs: the INI-like description and the per-pixel axis tables (non-linear time, wavelength) the file stores."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from allmicro_data.ingest.readers.normalise import parse_quantity, positive, text_or_none
from allmicro_data.ingest.readers.tiff_vendors import TiffContext

# Axis tables are float32 arrays at an offset the description names ("#0688212,0672").
_TABLE = re.compile(r"^#\s*(\d+)\s*,\s*(\d+)")
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12}


def is_hamamatsu_streak(description: str) -> bool:
    return description.startswith("[Application]") and "HPD-TA" in description[:400]


_SECTION = re.compile(r"\[([A-Za-z][^\]=,\r\n]*)\]")
# Values are quoted where they hold commas ('ScalingXScalingFile="#0688212,0672"'); the quote
# opens mid-field, which csv does not honour.
_PAIR = re.compile(r'\s*([^=,\[\]]+?)\s*=\s*("[^"]*"|[^,]*)\s*(?:,|$)')


def _sections(description: str) -> dict[str, dict[str, str]]:
    """'[Section],Key=Value,Key="Value, with comma"' text into {section: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    # Sections sometimes follow each other on one line ('...Type=5,SubType=0[DisplayLUT],...').
    heads = list(_SECTION.finditer(description))
    for index, head in enumerate(heads):
        stop = heads[index + 1].start() if index + 1 < len(heads) else len(description)
        body = description[head.end() : stop].strip().lstrip(",")
        values = out.setdefault(head.group(1), {})
        for pair in _PAIR.finditer(body):
            values[pair.group(1)] = pair.group(2).strip('"')
    return out


def _axis_table(ctx: TiffContext, spec: str, length: int) -> np.ndarray[Any, Any] | None:
    match = _TABLE.match(spec)
    if not match or int(match.group(2)) != length:
        return None
    offset = int(match.group(1))
    handle = ctx.tiff.filehandle
    if offset + 4 * length > handle.size:
        return None
    handle.seek(offset)
    values = np.frombuffer(handle.read(4 * length), "<f4").astype(np.float64)
    return values if np.all(np.isfinite(values)) else None


def _describe_axis(
    ctx: TiffContext, scaling: dict[str, str], letter: str, quantity: str, length: int
) -> dict[str, Any]:
    key = letter.upper()
    spec = scaling.get(f"Scaling{key}ScalingFile", "")
    unit = scaling.get(f"Scaling{key}Unit") or None
    axis: dict[str, Any] = {"quantity": quantity, "unit": unit, "source": spec or None}
    values = _axis_table(ctx, spec, length)
    if values is None:
        axis["calibrated"] = False
        return axis
    steps = np.diff(values)
    axis.update(
        calibrated=True,
        first=float(values[0]),
        last=float(values[-1]),
        # A table is the calibration only when its steps vary: a linear axis would have said so.
        uniform=bool(np.allclose(steps, steps.mean(), rtol=1e-3)),
        values=[float(v) for v in values],
    )
    return axis


def hamamatsu_streak(ctx: TiffContext, description: str) -> bool:
    """HPD-TA: x is the spectrograph's wavelength (or the slit position), y the sweep's time."""
    if not is_hamamatsu_streak(description):
        return False
    sections = _sections(description)
    series, acq = ctx.series, ctx.series.acquisition
    series.vendor["hamamatsu"] = sections
    acq.vendor = "Hamamatsu Photonics"
    # The Artist tag holds the software's copyright line, not the person who acquired.
    if (acq.operator or "").lower().startswith("copyright"):
        acq.operator = None
    streak = sections.get("Streak camera", {})
    camera = sections.get("Camera", {})
    acq.instrument = text_or_none(streak.get("DeviceName"))
    acq.detector = text_or_none(camera.get("CameraName"))
    acq.exposure_time = positive(
        parse_quantity(sections.get("Acquisition", {}).get("ExposureTime"), _TIME_UNITS)
    )
    scaling = sections.get("Scaling", {})
    spectrograph = sections.get("Spectrograph", {}).get("UseDevice", "0") not in ("0", "")
    x = _describe_axis(ctx, scaling, "x", "wavelength" if spectrograph else "position", ctx.width)
    y = _describe_axis(ctx, scaling, "y", "time", ctx.height)
    mode = streak.get("Mode")
    y["mode"] = mode
    series.vendor["streak_axes"] = {"x": x, "y": y}
    if y.get("calibrated"):
        kind = "uniform" if y["uniform"] else "non-linear"
        series.warnings.append(
            f"streak image: y is time ({kind}, {y['first']:g} to {y['last']:g} {y['unit'] or ''}"
            ", one value per row in vendor streak_axes.y.values), not a length"
        )
    else:
        series.warnings.append(
            f"streak image in {mode or 'unknown'} mode: the time axis (y) is not calibrated"
        )
    if x.get("calibrated"):
        series.warnings.append(
            f"streak image: x is {x['quantity']} ({x['first']:g} to {x['last']:g} "
            f"{x['unit'] or ''}, one value per column in vendor streak_axes.x.values)"
        )
    return True
