"""The modality vocabulary and the inference of light-microscopy modalities from what a file says.

Electron microscopes name their own mode (SEM, TEM, STEM, FIB); readers set those. Light
microscopes rarely do, so light images get a modality from evidence the file carries: channels
with an emission wavelength are fluorescence; a colour (RGB) camera image from a light
microscope is brightfield; other light-microscope images are "optical" (contrast not stated).
Searching for "optical" finds all three, as a facility asks for "the light microscopes' images".

Evidence that an image is from a light microscope: a light-microscopy format (CZI, LIF, ND2), a
reader that already said "optical" (OME objectives, excitation wavelengths), or an
instrument of a light-microscope product line. Without evidence the modality stays None: a plain
TIFF may be from any instrument.

This module imports only the standard library (readers, catalogue and API all use it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

OPTICAL = "optical"
FLUORESCENCE = "fluorescence"
BRIGHTFIELD = "brightfield"
# A search for a family finds its members too (lower case, as the filter compares).
FAMILIES: dict[str, tuple[str, ...]] = {
    OPTICAL: (OPTICAL, FLUORESCENCE, BRIGHTFIELD),
    "light": (OPTICAL, FLUORESCENCE, BRIGHTFIELD),
}

# Formats only light microscopes write (the `format` readers report, lower case, prefix).
_LIGHT_FORMATS = ("zeiss czi", "leica lif", "nikon nd2")
# Light-microscope product lines as instruments name themselves (cameras and stands).
_LIGHT_INSTRUMENTS = re.compile(
    r"\b(axio\w*|lsm ?\d{3}|eclipse|ti2? microscope|nikon a1\w*|dmi\d+\w*|dm\d{4}\w*|"
    r"stellaris|nanozoomer|slideview|bx\d\d|ix\d\d|fv\d{4})",
    re.IGNORECASE,
)


def family(modality: str) -> tuple[str, ...]:
    """The lower-case modalities a search for `modality` matches."""
    lowered = modality.strip().lower()
    return FAMILIES.get(lowered, (lowered,))


def _emission(channel: Any) -> float | None:
    value = (
        channel.get("emission_wavelength")
        if isinstance(channel, dict)
        else getattr(channel, "emission_wavelength", None)
    )
    return value if isinstance(value, int | float) and value > 0 else None


def is_light_microscope(modality: str | None, fmt: str | None, instrument: str | None) -> bool:
    """True when the file shows a light microscope made the image (never a guess from pixels)."""
    if modality is not None and modality.lower() in FAMILIES[OPTICAL]:
        return True
    if fmt and fmt.lower().startswith(_LIGHT_FORMATS):
        return True
    return bool(instrument and _LIGHT_INSTRUMENTS.search(instrument))


def inferred_modality(
    modality: str | None,
    fmt: str | None,
    instrument: str | None,
    channels: Sequence[Any],
    rgb: bool,
) -> str | None:
    """The modality to record: the reader's for electron images, else the light one the evidence
    shows (fluorescence, brightfield or optical), else None."""
    if modality is not None and modality.lower() != OPTICAL:
        return modality  # electron modalities, or a light one a reader already knew
    if not is_light_microscope(modality, fmt, instrument):
        return modality
    if any(_emission(c) for c in channels):
        return FLUORESCENCE
    if rgb:
        return BRIGHTFIELD
    return OPTICAL
