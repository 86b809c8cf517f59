"""What /zarr serves besides stored objects, and the strong ETags of everything it serves.

- an image's root documents with consolidated metadata (older pyramids have none stored: it is
  made from their stored documents, once per image version and process);
- a dataset capability's root: the dataset's ready images as a bioformats2raw collection
  (allmicro_data.ingest.ngff.collection), images numbered in the order they were created;
- ETags: a stored object's is its sha256 from the image's checksum manifest (what fixity
  checks), a made document's the sha256 of its bytes; either changes when the bytes do.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import load_only

from allmicro_data.access import Caller, get_visible, scoped
from allmicro_data.api.viewing import DECISION_SECONDS, ImageView, TTLCache
from allmicro_data.catalogue.models import Dataset, Image
from allmicro_data.fixity import Manifest
from allmicro_data.ingest.ngff.collection import (
    MAX_CONSOLIDATED_IMAGES,
    CollectionImage,
    StoredDocuments,
    collection_documents,
    consolidated_root,
    stored_documents,
)
from allmicro_data.object_keys import manifest_key
from allmicro_data.services import Services
from allmicro_data.storage import ObjectNotFound, ObjectStore, StorageError

# The paths of a dataset capability's root that are the collection's, not an image's.
COLLECTION_ROOT = ("", ".zgroup", ".zattrs", ".zmetadata", "zarr.json", "OME")
IMAGE_ROOT = (".zgroup", ".zattrs", ".zmetadata", "zarr.json")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def strong_etag(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names etag (weak comparison, as RFC 9110 asks for it)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


@dataclass(frozen=True)
class SeriesImage:
    """One image of a dataset collection: where its pyramid is, and what the OME-XML says."""

    id: str
    name: str
    pyramid_key: str
    version: str  # as ImageView's: changes when the image is re-ingested or renamed
    described: CollectionImage

    COLUMNS: ClassVar[tuple[Any, ...]] = (
        Image.id,
        Image.name,
        Image.pyramid_key,
        Image.updated_at,
        Image.ngff_version,
        Image.axes,
        Image.shape,
        Image.dtype,
        Image.pixel_size_x,
        Image.pixel_size_y,
        Image.pixel_size_z,
        Image.channels,
    )

    @classmethod
    def of(cls, image: Image) -> SeriesImage:
        assert image.pyramid_key is not None
        sizes = {"x": image.pixel_size_x, "y": image.pixel_size_y, "z": image.pixel_size_z}
        axes = image.axes or "yx"
        return cls(
            id=image.id,
            name=image.name,
            pyramid_key=image.pyramid_key,
            version=image.updated_at.isoformat(),
            described=CollectionImage(
                name=image.name,
                ngff_version="0.5" if image.ngff_version == "0.5" else "0.4",
                axes=axes,
                shape=tuple(int(n) for n in image.shape or [1] * len(axes)),
                dtype=image.dtype or "uint16",
                pixel_size={a: m for a, m in sizes.items() if m and a in axes},
                channel_names=tuple(
                    c.get("name") if isinstance(c, dict) else None for c in image.channels or []
                ),
            ),
        )


class ZarrDocuments:
    """Per-process caches of the documents /zarr makes and of image manifests. Pyramids never
    change under an image version, so entries are keyed by it and never go stale."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._stored: _Lru[tuple[str, str], StoredDocuments] = _Lru(256)
        self._roots: _Lru[tuple[str, str], dict[str, bytes]] = _Lru(256)
        self._collections: _Lru[tuple[tuple[str, str, str], ...], dict[str, bytes]] = _Lru(32)
        self._manifests: _Lru[tuple[str, str], dict[str, str]] = _Lru(32)
        self._series = TTLCache(DECISION_SECONDS)

    @property
    def store(self) -> ObjectStore:
        return self.services.store

    def stored(self, view: ImageView) -> StoredDocuments:
        return self.stored_at(view.pyramid_key, view.version)

    def stored_at(self, pyramid_key: str, version: str) -> StoredDocuments:
        return self._stored.get(
            (pyramid_key, version), lambda: stored_documents(self.store, pyramid_key)
        )

    def image_root(self, view: ImageView) -> dict[str, bytes]:
        """The image's root documents as served (consolidated); blocking."""
        return self._roots.get(
            (view.pyramid_key, view.version), lambda: consolidated_root(self.stored(view))
        )

    def object_etag(self, view: ImageView, key: str, size: int) -> str:
        """The strong ETag of a stored object of the image; blocking (the manifest, once)."""
        checksums = self._manifests.get((view.id, view.version), lambda: self._checksums(view))
        found = checksums.get(key)
        if found:
            return f'"{found}"'
        # Not in a manifest (an image from before manifests): the image version changes when
        # its pyramid is rewritten, and a key's bytes never change under one version.
        return strong_etag(f"{view.version}\0{key}\0{size}".encode())

    def _checksums(self, view: ImageView) -> dict[str, str]:
        try:
            manifest = Manifest.from_json(self.store.get_bytes(manifest_key(view.id)))
        except (ObjectNotFound, StorageError):
            return {}
        return {o.key: o.sha256 for o in manifest.objects if o.sha256}

    def series(self, caller: Caller, capability_id: str, dataset_id: str) -> list[SeriesImage]:
        """The dataset's ready images in series order (by creation), as the capability's
        caller sees them now, remembered briefly like every access decision of the viewing
        routes; blocking."""
        cache_key = (capability_id, caller.user_id)
        found: list[SeriesImage] | None = self._series.get(cache_key)
        if found is not None:
            return found
        with self.services.session() as session:
            get_visible(session, caller, Dataset, dataset_id)
            images = session.scalars(
                scoped(
                    select(Image)
                    .where(Image.dataset_id == dataset_id, Image.pyramid_key.is_not(None))
                    .order_by(Image.created_at, Image.id)
                    # Not the vendor metadata and search text: a collection needs none of it.
                    .options(load_only(*SeriesImage.COLUMNS)),
                    Image,
                    caller,
                )
            ).all()
            entries = [SeriesImage.of(image) for image in images]
        self._series.put(cache_key, entries)
        return entries

    def collection(self, images: list[SeriesImage]) -> dict[str, bytes]:
        """The documents of the collection of these images, in this order; blocking."""
        key = tuple((i.id, i.version, i.name) for i in images)
        return self._collections.get(key, lambda: self._collection(images))

    def _collection(self, images: list[SeriesImage]) -> dict[str, bytes]:
        consolidated = len(images) <= MAX_CONSOLIDATED_IMAGES
        return collection_documents(
            [
                replace(
                    image.described,
                    stored=self.stored_at(image.pyramid_key, image.version)
                    if consolidated
                    else None,
                )
                for image in images
            ]
        )
