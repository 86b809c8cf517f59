"""Tags and key-value annotations (sample, batch, client reference…) on images and datasets.

Contributors edit them; search finds images by a tag of their own or of their dataset
(`tag:NAME`) and by a pair (`KEY=VALUE`), and free text looks through an image's own values;
they leave in the metadata CSV/JSON exports and, in the served OME-XML, as TagAnnotations and
MapAnnotations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, or_, select
from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import Annotation
from allmicro_data.errors import Invalid
from allmicro_data.names import unfit_character

MAX_KEY_CHARS = 100
MAX_VALUE_CHARS = 1000
MAX_PER_OBJECT = 200


@dataclass(frozen=True)
class Annotations:
    """What an image or a dataset is tagged with, and its key-value pairs, in the order given."""

    tags: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tags or self.pairs)

    def text(self) -> str:
        """For free-text search: every tag, key and value."""
        return " ".join([*self.tags, *(f"{k} {v}" for k, v in self.pairs)])


def _clean(text: str, what: str, limit: int) -> str:
    cleaned = " ".join(text.split())
    if (ch := unfit_character(cleaned)) is not None:
        raise Invalid(f"a {what} must be one line of text; it holds U+{ord(ch):04X}")
    if len(cleaned) > limit:
        raise Invalid(f"a {what} is at most {limit} characters")
    return cleaned


def normalised(tags: Iterable[str], pairs: Iterable[tuple[str, str]]) -> Annotations:
    """Tags and pairs as stored: whitespace collapsed, empty ones dropped, repeated tags and
    repeated (key, value) pairs kept once; Invalid for control characters or overlong text."""
    clean_tags: list[str] = []
    for tag in tags:
        text = _clean(tag, "tag", MAX_VALUE_CHARS)
        if text and text.lower() not in {t.lower() for t in clean_tags}:
            clean_tags.append(text)
    clean_pairs: list[tuple[str, str]] = []
    for key, value in pairs:
        k = _clean(key, "key", MAX_KEY_CHARS)
        v = _clean(value, "value", MAX_VALUE_CHARS)
        if not k and not v:
            continue
        if not k:
            raise Invalid(f"the value {v!r} needs a key")
        if (k, v) not in clean_pairs:
            clean_pairs.append((k, v))
    if len(clean_tags) + len(clean_pairs) > MAX_PER_OBJECT:
        raise Invalid(f"an image or dataset holds at most {MAX_PER_OBJECT} tags and pairs")
    return Annotations(clean_tags, clean_pairs)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Pairs typed one per line as `key = value` (or `key: value`), as the web form sends them."""
    pairs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        separator = "=" if "=" in line else ":" if ":" in line else None
        if separator is None:
            raise Invalid(f"write each pair as “key = value”: {line.strip()!r}")
        key, _, value = line.partition(separator)
        pairs.append((key, value))
    return pairs


def parse_tags(text: str) -> list[str]:
    """Tags typed comma-separated, as the web form sends them."""
    return [t for t in text.split(",") if t.strip()]


def _of(rows: Iterable[Annotation]) -> Annotations:
    tags: list[str] = []
    pairs: list[tuple[str, str]] = []
    for row in rows:
        if row.key is None:
            tags.append(row.value)
        else:
            pairs.append((row.key, row.value))
    return Annotations(tags, pairs)


def _ordered(stmt: Select[Any]) -> Select[Any]:
    return stmt.order_by(Annotation.created_at, Annotation.id)


def of_image(session: Session, image_id: str) -> Annotations:
    return _of(session.scalars(_ordered(select(Annotation).where(Annotation.image_id == image_id))))


def of_dataset(session: Session, dataset_id: str) -> Annotations:
    return _of(
        session.scalars(_ordered(select(Annotation).where(Annotation.dataset_id == dataset_id)))
    )


def of_images(session: Session, image_ids: Sequence[str]) -> dict[str, Annotations]:
    """Annotations of many images at once (exports), by image id; images without any absent."""
    found: dict[str, list[Annotation]] = {}
    for start in range(0, len(image_ids), 500):
        chunk = list(image_ids[start : start + 500])
        rows = session.scalars(_ordered(select(Annotation).where(Annotation.image_id.in_(chunk))))
        for row in rows:
            assert row.image_id is not None
            found.setdefault(row.image_id, []).append(row)
    return {image_id: _of(rows) for image_id, rows in found.items()}


def replace(
    session: Session,
    annotations: Annotations,
    *,
    image_id: str | None = None,
    dataset_id: str | None = None,
    created_by_id: str | None,
) -> None:
    """Make an image's or a dataset's annotations exactly these (the caller has checked rights)."""
    if (image_id is None) == (dataset_id is None):
        raise ValueError("annotations belong to one image or one dataset")
    owner = (
        Annotation.image_id == image_id
        if image_id is not None
        else Annotation.dataset_id == dataset_id
    )
    session.execute(delete(Annotation).where(owner))
    rows = [(None, tag) for tag in annotations.tags] + list(annotations.pairs)
    for key, value in rows:
        session.add(
            Annotation(
                image_id=image_id,
                dataset_id=dataset_id,
                key=key,
                value=value,
                value_lower=value.lower(),
                created_by_id=created_by_id,
            )
        )
    session.flush()


def tagged(tag: str, image_id_column: Any, dataset_id_column: Any) -> ColumnElement[bool]:
    """A WHERE clause: the image, or its dataset, carries this tag (case-insensitive)."""
    wanted = " ".join(tag.split()).lower()
    by_tag = select(Annotation.image_id, Annotation.dataset_id).where(
        Annotation.key.is_(None), Annotation.value_lower == wanted
    )
    return or_(
        image_id_column.in_(by_tag.with_only_columns(Annotation.image_id)),
        dataset_id_column.in_(by_tag.with_only_columns(Annotation.dataset_id)),
    )


def paired(
    key: str, value: str, image_id_column: Any, dataset_id_column: Any
) -> ColumnElement[bool]:
    """A WHERE clause: the image, or its dataset, has this key with this value (the key as
    written, the value case-insensitive)."""
    wanted = select(Annotation.image_id, Annotation.dataset_id).where(
        Annotation.key == " ".join(key.split()),
        Annotation.value_lower == " ".join(value.split()).lower(),
    )
    return or_(
        image_id_column.in_(wanted.with_only_columns(Annotation.image_id)),
        dataset_id_column.in_(wanted.with_only_columns(Annotation.dataset_id)),
    )
