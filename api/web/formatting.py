"""Acquisition values for people: SI numbers shown in the units microscopists read, per locale."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from babel.dates import format_datetime
from babel.numbers import format_decimal

from allmicro_data.api.schemas import AcquisitionOut, PixelSizeOut


def number(value: float, language: str, digits: int = 4) -> str:
    """A number rounded to `digits` significant figures, with the locale's separators."""
    if value == 0 or not math.isfinite(value):
        return format_decimal(value, locale=language)
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return format_decimal(rounded, format="#,##0.########", locale=language)


# Length units from metres, largest first: a length is shown in the first unit it reaches 1 in.
LENGTH_UNITS: tuple[tuple[str, float], ...] = (
    ("m", 1.0),
    ("mm", 1e-3),
    ("µm", 1e-6),
    ("nm", 1e-9),
    ("pm", 1e-12),
)


def length(metres: float, language: str) -> str:
    """A length in the unit that gives a number of at least 1 (3.3724e-6 m is "3.372 µm")."""
    for unit, size in LENGTH_UNITS:
        if abs(metres) >= size:
            return f"{number(metres / size, language)} {unit}"
    return f"{number(metres / 1e-12, language)} pm"


# Data sizes in binary units, as storage is bought and the image page shows originals.
DATA_SIZE_UNITS: tuple[str, ...] = ("KiB", "MiB", "GiB", "TiB", "PiB")


def data_size(size: int, language: str) -> str:
    """A number of bytes in the largest binary unit it reaches 1 in (1536 is "1.5 KiB")."""
    if abs(size) < 1024:
        return f"{format_decimal(size, locale=language)} B"
    value = size / 1024
    for unit in DATA_SIZE_UNITS[:-1]:
        if abs(value) < 1024:
            return f"{number(value, language)} {unit}"
        value /= 1024
    return f"{number(value, language)} {DATA_SIZE_UNITS[-1]}"


def pixel_size(size: PixelSizeOut, language: str) -> str | None:
    """One length for square pixels, one per axis when they differ; None if uncalibrated."""
    values = [v for v in (size.x, size.y, size.z) if v is not None]
    if not values:
        return None
    if len(set(values)) == 1:
        return length(values[0], language)
    return " \N{MULTIPLICATION SIGN} ".join(length(v, language) for v in values)


@dataclass(frozen=True, slots=True)
class Field:
    """One normalised field as a row of the metadata panel."""

    key: str
    label: str
    value: str


def _scaled(factor: float, unit: str) -> Callable[[Any, str], str]:
    def show(value: Any, language: str) -> str:
        return f"{number(float(value) / factor, language)} {unit}"

    return show


def _ranged(units: tuple[tuple[str, float], ...]) -> Callable[[Any, str], str]:
    """The first unit (largest first) the value reaches 1 in: 6.25e-12 A is "6.25 pA"."""

    def show(value: Any, language: str) -> str:
        number_ = float(value)
        for unit, size in units:
            if abs(number_) >= size:
                return f"{number(number_ / size, language)} {unit}"
        unit, size = units[-1]
        return f"{number(number_ / size, language)} {unit}"

    return show


CURRENTS = (("µA", 1e-6), ("nA", 1e-9), ("pA", 1e-12))
TIMES = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))


def _text(value: Any, _language: str) -> str:
    return str(value)


def _when(value: Any, language: str) -> str:
    if isinstance(value, datetime):
        return format_datetime(value, format="medium", tzinfo=None, locale=language)
    return str(value)


def _magnification(value: Any, language: str) -> str:
    return f"{number(float(value), language)} \N{MULTIPLICATION SIGN}"


def _degrees(value: Any, language: str) -> str:
    return f"{number(float(value), language)}°"


# The normalised fields in the order a microscopist reads them, each with its display unit.
FIELDS: tuple[tuple[str, Callable[[Any, str], str]], ...] = (
    ("modality", _text),
    ("vendor", _text),
    ("instrument", _text),
    ("acquired_at", _when),
    ("operator", _text),
    ("detector", _text),
    ("accelerating_voltage", _scaled(1e3, "kV")),
    ("magnification", _magnification),
    ("horizontal_field_width", _ranged(LENGTH_UNITS)),
    ("working_distance", _scaled(1e-3, "mm")),
    ("beam_current", _ranged(CURRENTS)),
    ("dwell_time", _ranged(TIMES)),
    ("exposure_time", _ranged(TIMES)),
    ("tilt_angle_deg", _degrees),
    ("camera_length", _scaled(1e-3, "mm")),
    ("objective", _text),
)


def acquisition_fields(
    acquisition: AcquisitionOut, labels: dict[str, str], language: str
) -> list[Field]:
    """The fields the file states, formatted; missing ones are left out, never shown as 0."""
    rows = []
    for key, show in FIELDS:
        value = getattr(acquisition, key)
        if value is None or value == "":
            continue
        rows.append(Field(key=key, label=labels.get(key, key), value=show(value, language)))
    return rows
