"""Unit conversion, vendor date parsing and JSON-safe vendor dictionaries shared by the readers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

# Length units as vendors spell them, in metres.
LENGTH_UNITS: dict[str, float] = {
    "m": 1.0,
    "meter": 1.0,
    "metre": 1.0,
    "cm": 1e-2,
    "centimeter": 1e-2,
    "mm": 1e-3,
    "millimeter": 1e-3,
    "um": 1e-6,
    "µm": 1e-6,
    "μm": 1e-6,
    "micron": 1e-6,
    "microns": 1e-6,
    "micrometer": 1e-6,
    "micrometre": 1e-6,
    "nm": 1e-9,
    "nanometer": 1e-9,
    "nanometre": 1e-9,
    "pm": 1e-12,
    "picometer": 1e-12,
    "a": 1e-10,
    "å": 1e-10,
    "angstrom": 1e-10,
    "ångström": 1e-10,
    "\\u00c5": 1e-10,
    "inch": 0.0254,
    "in": 0.0254,
}

VOLTAGE_UNITS = {"v": 1.0, "volt": 1.0, "kv": 1e3, "mv": 1e6}
TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
CURRENT_UNITS = {"a": 1.0, "ma": 1e-3, "ua": 1e-6, "µa": 1e-6, "na": 1e-9, "pa": 1e-12}


def length_factor(unit: str | None) -> float | None:
    """Metres per unit, or None when the unit is not a length (pixel, 1/nm, empty)."""
    if unit is None:
        return None
    return LENGTH_UNITS.get(unit.strip().lower().replace("\u00b5", "µ"))


def as_float(value: Any) -> float | None:
    """A finite float, or None for missing, empty, non-numeric, NaN or infinite values."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def positive(value: float | None) -> float | None:
    """Vendors write 0 for 'not recorded'; a zero or negative physical size is no value."""
    return value if value is not None and value > 0 else None


_QUANTITY = re.compile(r"^\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*([A-Za-zµμÅ/]*)\s*$")


def parse_quantity(text: Any, units: Mapping[str, float]) -> float | None:
    """'5000 Volt', '8000 um', '100.00 msec' -> SI float, using the given unit table."""
    if text is None:
        return None
    match = _QUANTITY.match(str(text))
    if not match:
        return None
    unit = match.group(2).lower().replace("μ", "µ")
    factor = units.get(unit) if unit else None
    if factor is None:
        return None
    return float(match.group(1)) * factor


def from_unix(seconds: Any) -> datetime | None:
    """A UTC datetime from seconds since the epoch; None for missing or implausible values."""
    number = as_float(seconds)
    # Before 1990 or after 2100 is a counter or a default, not an acquisition time.
    if number is None or not 631152000 <= number <= 4102444800:
        return None
    return datetime.fromtimestamp(number, tz=UTC)


def parse_datetime(text: str, formats: tuple[str, ...]) -> datetime | None:
    """The first format that parses text; ISO 8601 is always tried first."""
    text = text.strip().strip("\u2028").strip()
    if not text:
        return None
    try:
        # Python < 3.11 cannot read 7 fractional digits (JEOL, .NET); trim to microseconds.
        iso = re.sub(r"(\.\d{6})\d+", r"\1", text)
        return datetime.fromisoformat(iso)
    except ValueError:
        pass
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def to_utc(value: datetime | None) -> datetime | None:
    """Aware datetimes become UTC; naive ones stay naive because their zone is unknown."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC)


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON copy of a vendor value, the one sanitiser of vendor metadata (readers and the
    catalogue's vendor_metadata): numpy scalars and arrays, nesting, dates and enums as text.

    NaN and infinities become null: JSON has no such numbers (PostgreSQL refuses them), and a
    vendor writes NaN where it has no value. Bytes become their UTF-8 text without trailing NULs,
    else their hex digits; more than 256 bytes become a note of their length.
    """
    if depth > 40:
        return repr(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, np.ndarray):
        if value.size > 4096:
            return f"<array shape={list(value.shape)} dtype={value.dtype}>"
        if value.dtype.names:
            return [
                jsonable(dict(zip(value.dtype.names, row, strict=True)), depth + 1)
                for row in value.reshape(-1)
            ]
        return jsonable(value.tolist(), depth + 1)
    if isinstance(value, np.void) and value.dtype.names:
        return {n: jsonable(value[n], depth + 1) for n in value.dtype.names}
    if isinstance(value, np.generic):
        return jsonable(value.item(), depth + 1)
    if isinstance(value, bytes | bytearray):
        if len(value) > 256:
            return f"<{len(value)} bytes>"
        text = bytes(value).rstrip(b"\x00")
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            return text.hex()
    if isinstance(value, complex):
        return jsonable([value.real, value.imag] if value.imag else value.real, depth + 1)
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "name") and hasattr(value, "value"):  # enums
        return str(value.name)
    return str(value)


def dig(data: Any, *path: str | int) -> Any:
    """data[path[0]][path[1]]…, or None as soon as a step is missing."""
    for key in path:
        if isinstance(data, Mapping):
            data = data.get(key)
        elif (
            isinstance(data, list | tuple)
            and isinstance(key, int)
            and -len(data) <= key < len(data)
        ):
            data = data[key]
        else:
            return None
        if data is None:
            return None
    return data


def text_or_none(value: Any) -> str | None:
    """A stripped string, or None for missing and empty values."""
    if value is None or (isinstance(value, list | tuple | dict) and not value):
        return None
    if isinstance(value, bytes):
        value = value.rstrip(b"\x00").decode("utf-8", "replace")
    text = str(value).strip().strip("\x00").strip()
    return text or None
