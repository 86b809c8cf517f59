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
from typing import Generic, TypeVar

from sqlalchemy import select

from allmicro_data.access import Caller, get_visible, scoped
from allmicro_data.api.viewing import DECISION_SECONDS, ImageView, TTLCache
from allmicro_data.catalogue.models import Dataset, Image
from allmicro_data.fixity import Manifest
from allmicro_data.ingest.ngff.collection import (
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
        return self._stored.get(
            (view.pyramid_key, view.version), lambda: stored_documents(self.store, view.pyramid_key)
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

    def series(self, caller: Caller, capability_id: str, dataset_id: str) -> list[str]:
        """The ids of the dataset's ready images in series order (by creation), as the
        capability's caller sees them now, remembered briefly like every access decision of
        the viewing routes; blocking."""
        cache_key = (capability_id, caller.user_id)
        found: list[str] | None = self._series.get(cache_key)
        if found is not None:
            return found
        with self.services.session() as session:
            get_visible(session, caller, Dataset, dataset_id)
            ids = list(
                session.scalars(
                    scoped(
                        select(Image.id)
                        .where(Image.dataset_id == dataset_id)
                        .order_by(Image.created_at, Image.id),
                        Image,
                        caller,
                    )
                ).all()
            )
        self._series.put(cache_key, ids)
        return ids

    def collection(self, views: list[ImageView]) -> dict[str, bytes]:
        """The documents of the collection of these images, in this order; blocking."""
        key = tuple((view.id, view.version, view.name) for view in views)
        return self._collections.get(
            key,
            lambda: collection_documents(
                [CollectionImage(name=view.name, stored=self.stored(view)) for view in views]
            ),
        )
