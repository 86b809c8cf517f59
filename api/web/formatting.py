"""Acquisition values for people: SI numbers shown in the units microscopists read, per locale."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from babel.dates import format_datetime
from babel.numbers import format_decimal

from allmicro_data.acquisition import (
    ACQUISITION_FIELDS,
    LENGTHS,
    N_,
    AcquisitionField,
    DisplayUnit,
)
from allmicro_data.api.schemas import AcquisitionOut, PixelSizeOut
from allmicro_data.api.web.i18n import translations

# After an acquisition time the instrument wrote as its local wall clock (acquired_at_local).
LOCAL_TIME_NOTE = N_("(local time, zone not recorded)")


def number(value: float, language: str, digits: int = 4) -> str:
    """A number rounded to `digits` significant figures, with the locale's separators."""
    if value == 0 or not math.isfinite(value):
        return format_decimal(value, locale=language)
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return format_decimal(rounded, format="#,##0.########", locale=language)


def in_units(value: float, units: tuple[DisplayUnit, ...], language: str) -> str:
    """value (SI) in the first of units (largest first) it reaches 1 in, else in the last one."""
    unit = next((u for u in units if abs(value) >= u.size), units[-1])
    # No space before a degree sign, and none without a symbol (a dimensionless setting).
    space = "" if unit.symbol in ("", "°") else " "
    return f"{number(value / unit.size, language)}{space}{unit.symbol}"


def length(metres: float, language: str) -> str:
    """A length in the unit that gives a number of at least 1 (3.3724e-6 m is "3.372 µm")."""
    return in_units(metres, LENGTHS, language)


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


def _text(value: Any, _language: str) -> str:
    return str(value)


def _when(value: Any, language: str) -> str:
    if isinstance(value, datetime):
        return format_datetime(value, format="medium", tzinfo=None, locale=language)
    return str(value)


def _shown_by(field: AcquisitionField) -> Callable[[Any, str], str]:
    """How the metadata panel writes a field: a date, text, or a number in its display units."""
    if field.kind is datetime:
        return _when
    if not field.display:
        return _text
    units = field.display
    return lambda value, language: in_units(float(value), units, language)


# The normalised fields in table order, each with how it is shown.
FIELDS: tuple[tuple[str, Callable[[Any, str], str]], ...] = tuple(
    (field.name, _shown_by(field)) for field in ACQUISITION_FIELDS
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
        shown = show(value, language)
        if key == "acquired_at" and getattr(acquisition, "acquired_at_local", None):
            shown = f"{shown} {translations(language).gettext(LOCAL_TIME_NOTE)}"
        rows.append(Field(key=key, label=labels.get(key, key), value=shown))
    return rows
