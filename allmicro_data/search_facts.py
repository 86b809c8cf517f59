"""Bring stored images' search facts up to what ingest records now, without re-reading originals.

Images ingested before local acquisition times were kept have acquired_at null and the time the
file wrote in their vendor metadata (`_acquired_at_local`); their vendor is spelled as the file
spelled it; light images may lack a modality. `allmicro db refresh-search-facts` applies the
rules ingest applies today (allmicro_data.acquisition.catalogue_time, allmicro_data.vendors,
allmicro_data.modalities) to every stored image. Running it twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data.acquisition import catalogue_time
from allmicro_data.catalogue.models import Image
from allmicro_data.modalities import inferred_modality
from allmicro_data.search import search_text
from allmicro_data.vendors import VENDOR_AS_WRITTEN, canonical_vendor, vendor_of_instrument

# Where ingest before acquired_at_local kept a wall-clock time without a zone.
LEGACY_LOCAL_KEY = "_acquired_at_local"
BATCH = 500


@dataclass
class Refreshed:
    """How many images each rule changed."""

    seen: int = 0
    local_times: int = 0
    vendors: int = 0
    modalities: int = 0


def _rgb(image: Image) -> bool:
    """A colour camera's image: three 8-bit channels without names (as readers mark RGB)."""
    axes, shape = image.axes or "", image.shape or []
    if "c" not in axes or len(shape) != len(axes) or image.dtype != "uint8":
        return False
    named = any(isinstance(c, dict) and c.get("name") for c in image.channels or [])
    return int(shape[axes.index("c")]) == 3 and not named


def _legacy_local_time(image: Image) -> datetime | None:
    text = (image.vendor_metadata or {}).get(LEGACY_LOCAL_KEY)
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is None else None


def refresh_image(image: Image, counts: Refreshed) -> None:
    """Apply today's rules to one stored image."""
    counts.seen += 1
    changed = False
    if image.acquired_at is None:
        stamp = _legacy_local_time(image)
        if stamp is not None:
            image.acquired_at, image.acquired_at_local = catalogue_time(stamp)
            counts.local_times += 1
    vendor = canonical_vendor(image.vendor) or vendor_of_instrument(image.instrument)
    if vendor != image.vendor:
        if image.vendor:
            metadata: dict[str, Any] = dict(image.vendor_metadata or {})
            metadata.setdefault(VENDOR_AS_WRITTEN, image.vendor)
            image.vendor_metadata = metadata
        image.vendor = vendor
        counts.vendors += 1
        changed = True
    modality = inferred_modality(
        image.modality, image.format, image.instrument, image.channels or [], _rgb(image)
    )
    if modality != image.modality:
        image.modality = modality
        counts.modalities += 1
        changed = True
    if changed:
        image.search_text = search_text(image)


def refresh_search_facts(session: Session) -> Refreshed:
    """Refresh every stored image, committing batch by batch."""
    counts = Refreshed()
    last = ""
    while True:
        images = session.scalars(
            select(Image).where(Image.id > last).order_by(Image.id).limit(BATCH)
        ).all()
        if not images:
            return counts
        for image in images:
            refresh_image(image, counts)
        last = images[-1].id
        session.commit()
