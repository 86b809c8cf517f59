"""Where the repository keeps each thing in the object store: every key built, and parsed back, here.

The layout (DESIGN.md, Data flow):

    raw/<sha256>                          an original, content-addressed, immutable
    images/<id>/image.ome.zarr/…          an image's OME-Zarr pyramid
    images/<id>/metadata.ome.xml          its OME-XML
    images/<id>/manifest.json             its checksum manifest (every object above, with sha256)

The stores themselves (`storage/`) know none of this: to them a key is an opaque path.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

RAW_PREFIX = "raw/"
IMAGES_PREFIX = "images/"
PYRAMID_NAME = "image.ome.zarr"
OME_XML_NAME = "metadata.ome.xml"
MANIFEST_NAME = "manifest.json"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class KeyKind(enum.StrEnum):
    """What an object of the layout is."""

    ORIGINAL = "original"  # raw/<sha256>; the id is the sha256
    PYRAMID = "pyramid"  # a chunk or metadata document of images/<id>/image.ome.zarr
    OME_XML = "ome_xml"
    MANIFEST = "manifest"
    IMAGE = "image"  # any other object under images/<id>/ (what later versions add there)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key of the layout: its kind and the id it belongs to (an original's sha256 or an image id)."""

    kind: KeyKind
    id: str


def original_key(sha256: str) -> str:
    """Where an original's bytes are stored: named by their sha256, so equal uploads share it."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    return f"{RAW_PREFIX}{sha256}"


def image_prefix(image_id: str) -> str:
    """The prefix every object of an image starts with (to list or remove them all)."""
    return f"{IMAGES_PREFIX}{_image_id(image_id)}/"


def pyramid_key(image_id: str) -> str:
    """The root of an image's OME-Zarr pyramid; its objects are `<root>/<zarr key>`."""
    return f"{image_prefix(image_id)}{PYRAMID_NAME}"


def ome_xml_key(image_id: str) -> str:
    return f"{image_prefix(image_id)}{OME_XML_NAME}"


def manifest_key(image_id: str) -> str:
    return f"{image_prefix(image_id)}{MANIFEST_NAME}"


def parse_key(key: str) -> ParsedKey | None:
    """The kind and id of a key of the layout; None for a key outside it."""
    if key.startswith(RAW_PREFIX):
        sha256 = key[len(RAW_PREFIX) :]
        return ParsedKey(KeyKind.ORIGINAL, sha256) if _SHA256.match(sha256) else None
    if not key.startswith(IMAGES_PREFIX):
        return None
    image_id, slash, rest = key[len(IMAGES_PREFIX) :].partition("/")
    if not image_id or not slash or not rest:
        return None
    if rest == OME_XML_NAME:
        return ParsedKey(KeyKind.OME_XML, image_id)
    if rest == MANIFEST_NAME:
        return ParsedKey(KeyKind.MANIFEST, image_id)
    if rest.startswith(f"{PYRAMID_NAME}/"):
        return ParsedKey(KeyKind.PYRAMID, image_id)
    return ParsedKey(KeyKind.IMAGE, image_id)


def _image_id(image_id: str) -> str:
    # An id with a slash would put its objects under another image's prefix.
    if not image_id or "/" in image_id:
        raise ValueError(f"not an image id: {image_id!r}")
    return image_id
