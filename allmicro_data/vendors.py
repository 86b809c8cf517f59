"""The one table of microscope makers: every spelling a file or reader uses, mapped to one name.

Files name their maker many ways ("FEI Company", "Thermo Fisher Scientific (FEI)", a TIFF Make
tag of "ZEISS", "JEOL Ltd."); a facility filtering by vendor wants one entry per company. Ingest
stores the canonical name (the spelling the file used stays in the vendor metadata under
`VENDOR_AS_WRITTEN`, so free text still finds "FEI" or "Phenom"); search filters and facets
apply the same table to rows stored before it, so no data migration is needed.

A spelling belongs to a company when its lower-cased text contains one of the company's
keywords; the same keywords become SQL `LIKE '%keyword%'` conditions, so Python and the
database agree on which rows are one vendor.

This module imports only the standard library (readers, catalogue and API all use it).
"""

from __future__ import annotations

from dataclasses import dataclass

# The vendor-metadata key that keeps the maker as the file spelled it, when it differs.
VENDOR_AS_WRITTEN = "vendor_as_written"


@dataclass(frozen=True, slots=True)
class Vendor:
    """One company: its name as filters show it and the lower-case keywords of its spellings."""

    name: str
    keywords: tuple[str, ...]


# First match wins: brands bought by a company list under the company (FEI and Phenom-World are
# Thermo Fisher Scientific since 2016/2017; the brand stays in the instrument and as written).
VENDORS: tuple[Vendor, ...] = (
    Vendor("Thermo Fisher Scientific", ("thermo", "fei", "phenom")),
    Vendor("Zeiss", ("zeiss",)),
    Vendor("JEOL", ("jeol",)),
    Vendor("Hitachi High-Tech", ("hitachi",)),
    Vendor("Tescan", ("tescan",)),
    Vendor("Leica Microsystems", ("leica",)),
    Vendor("Nikon", ("nikon",)),
    # Olympus's life-science microscopes are sold as Evident since 2022; Soft Imaging Solutions
    # (now EMSIS) cameras carried the Olympus name.
    Vendor("Olympus", ("olympus", "evident")),
    Vendor("Hamamatsu Photonics", ("hamamatsu",)),
    Vendor("Gatan", ("gatan",)),
    Vendor("Bruker", ("bruker",)),
    Vendor("Oxford Instruments", ("oxford instruments",)),
    Vendor("Direct Electron", ("direct electron",)),
    Vendor("Quantum Detectors", ("quantum detectors",)),
    Vendor("TVIPS", ("tvips",)),
    Vendor("NanoMegas", ("nanomegas",)),
)


# Product lines whose name says the maker when the file names none (a TIFF with a Model tag only).
_PRODUCT_LINES: tuple[tuple[str, str], ...] = (("axiocam", "Zeiss"), ("axio ", "Zeiss"))


def vendor_of_instrument(instrument: str | None) -> str | None:
    """The maker a product name states (Zeiss AxioCam cameras), else None."""
    lowered = (instrument or "").lower()
    return next((name for prefix, name in _PRODUCT_LINES if lowered.startswith(prefix)), None)


def vendor_of(text: str | None) -> Vendor | None:
    """The company of a spelling, or None when the table does not know it."""
    if not text:
        return None
    lowered = " ".join(text.lower().split())
    for vendor in VENDORS:
        if any(keyword in lowered for keyword in vendor.keywords):
            return vendor
    return None


def canonical_vendor(text: str | None) -> str | None:
    """The name filters show for a spelling: the table's, else the spelling without stray spaces."""
    if text is None:
        return None
    cleaned = " ".join(text.split())
    if not cleaned:
        return None
    vendor = vendor_of(cleaned)
    return vendor.name if vendor is not None else cleaned
