"""Image search: structured filters and free text over names and metadata values, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session, defer, object_session

from allmicro_data.access import Caller, scoped
from allmicro_data.acquisition import ACQUISITION_FIELDS
from allmicro_data.annotations import of_image, paired, tagged
from allmicro_data.catalogue.models import Dataset, Image
from allmicro_data.modalities import family
from allmicro_data.paging import Found, Window, fetch
from allmicro_data.vendors import canonical_vendor, vendor_of

SORTS: dict[str, Any] = {
    "name": Image.name,
    "acquired_at": Image.acquired_at,
    "created_at": Image.created_at,
    "pixel_size": Image.pixel_size_x,
}
MAX_SEARCH_TEXT = 100_000


@dataclass(frozen=True)
class ImageQuery(Window):
    project_id: str | None = None
    dataset_id: str | None = None
    modality: str | None = None
    vendor: str | None = None
    instrument: str | None = None
    acquired_from: datetime | None = None
    acquired_to: datetime | None = None
    pixel_size_min: float | None = None
    pixel_size_max: float | None = None
    text: str | None = None
    # Tags the image or its dataset carries, and (key, value) pairs (allmicro_data.annotations).
    tags: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    sort: str = "name"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filtered(caller: Caller, query: ImageQuery) -> Select[Any]:
    """The SELECT of the images matching query among those the caller may see."""
    stmt = scoped(select(Image), Image, caller)
    if query.dataset_id is not None:
        stmt = stmt.where(Image.dataset_id == query.dataset_id)
    if query.project_id is not None:
        stmt = stmt.where(
            Image.dataset_id.in_(select(Dataset.id).where(Dataset.project_id == query.project_id))
        )
    if query.modality:
        stmt = stmt.where(func.lower(Image.modality).in_(family(query.modality)))
    if query.vendor:
        stmt = stmt.where(vendor_matches(query.vendor))
    if query.instrument:
        stmt = stmt.where(
            func.lower(Image.instrument).contains(query.instrument.lower(), autoescape=True)
        )
    if query.acquired_from is not None:
        stmt = stmt.where(acquired_since(query.acquired_from))
    if query.acquired_to is not None:
        stmt = stmt.where(acquired_until(query.acquired_to))
    if query.pixel_size_min is not None:
        stmt = stmt.where(Image.pixel_size_x >= query.pixel_size_min)
    if query.pixel_size_max is not None:
        stmt = stmt.where(Image.pixel_size_x <= query.pixel_size_max)
    words, tags = split_tags(query.text)
    for tag in (*query.tags, *tags):
        stmt = stmt.where(tagged(tag, Image.id, Image.dataset_id))
    for key, value in query.pairs:
        stmt = stmt.where(paired(key, value, Image.id, Image.dataset_id))
    # Every word must appear somewhere in the name or the metadata (case-insensitive).
    for word in words:
        stmt = stmt.where(Image.search_text.like(f"%{_escape_like(word)}%", escape="\\"))
    return stmt


def vendor_matches(text: str) -> ColumnElement[bool]:
    """Images whose vendor contains the text, or is any spelling of the company it names (the
    vendor table applies to rows stored before it too: "FEI Company" is Thermo Fisher)."""
    column = func.lower(Image.vendor)
    vendor = vendor_of(text)
    words = vendor.keywords if vendor is not None else ()
    return or_(*(column.contains(w, autoescape=True) for w in (text.lower().strip(), *words)))


# A local time (zone unknown) is stored as if UTC; it is within a range when its wall-clock
# calendar date is within the range's dates (in the zone the bound was given in).
_LOCAL = Image.acquired_at_local.is_(True)
_INSTANT = or_(Image.acquired_at_local.is_(None), Image.acquired_at_local.is_(False))


def _midnight(day: datetime) -> datetime:
    return datetime.combine(day.date(), time.min, tzinfo=UTC)


def acquired_since(bound: datetime) -> ColumnElement[bool]:
    """Images acquired at or after the bound (local times: on or after its date)."""
    return or_(
        _INSTANT & (Image.acquired_at >= bound),
        _LOCAL & (Image.acquired_at >= _midnight(bound)),
    )


def acquired_until(bound: datetime) -> ColumnElement[bool]:
    """Images acquired at or before the bound (local times: on or before its date)."""
    return or_(
        _INSTANT & (Image.acquired_at <= bound),
        _LOCAL & (Image.acquired_at < _midnight(bound) + timedelta(days=1)),
    )


FACET_LIMIT = 200


def _facet(session: Session, caller: Caller, column: Any) -> list[str]:
    stmt = scoped(select(column), Image, caller).where(column.is_not(None)).distinct()
    return [str(v) for v in session.scalars(stmt.limit(FACET_LIMIT)) if v]


def vendor_facet(session: Session, caller: Caller) -> list[str]:
    """The vendors of the images the caller may see, one entry per company (vendor table)."""
    names = {canonical_vendor(v) for v in _facet(session, caller, Image.vendor)}
    return sorted((n for n in names if n), key=str.lower)


def modality_facet(session: Session, caller: Caller) -> list[str]:
    """The modalities of the images the caller may see."""
    return sorted(set(_facet(session, caller, Image.modality)), key=str.lower)


TAG_PREFIX = "tag:"


def split_tags(text: str | None) -> tuple[list[str], list[str]]:
    """Free text as typed: (lower-cased words, tags written `tag:NAME`)."""
    words: list[str] = []
    tags: list[str] = []
    for word in (text or "").split():
        if word.lower().startswith(TAG_PREFIX) and len(word) > len(TAG_PREFIX):
            tags.append(word[len(TAG_PREFIX) :])
        else:
            words.append(word.lower())
    return words, tags


# Counting stops here: "more than 10 000 images" is as useful as the exact figure, and an exact
# count of half a million rows costs more than the page itself.
COUNT_LIMIT = 10_000


def search_images(session: Session, caller: Caller, query: ImageQuery) -> Found[Image]:
    """One page of matching images, and how many match in all (counted up to COUNT_LIMIT)."""
    stmt = filtered(caller, query)
    column = SORTS[query.sort.lstrip("-")]
    order = column.desc() if query.sort.startswith("-") else column.asc()
    return fetch(
        session,
        stmt.options(defer(Image.vendor_metadata), defer(Image.search_text)),
        query,
        order_by=(order, Image.id),
        counted=stmt.with_only_columns(Image.id),
        count_limit=COUNT_LIMIT,
    )


def _values(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _values(item)
    elif value is not None:
        yield str(value)


def search_text(image: Image) -> str:
    """What free-text search looks through: name, normalised text fields, vendor keys and values."""
    parts = [
        image.name,
        image.format,
        *(getattr(image, f.name) for f in ACQUISITION_FIELDS if f.searchable),
    ]
    text = " ".join(p for p in parts if p)
    text += " " + " ".join(_values(image.channels)) + " " + " ".join(_values(image.vendor_metadata))
    # The image's own tags and pairs, first among the metadata so the cap never cuts them.
    session = object_session(image)
    if session is not None and image.id is not None:
        text = f"{of_image(session, image.id).text()} {image.description or ''} {text}"
    return text.lower()[:MAX_SEARCH_TEXT]
