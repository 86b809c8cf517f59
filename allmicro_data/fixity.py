"""Fixity policy: the checksum manifest written beside each pyramid, what reads expect from it, and its totals in the catalogue (storage/checksums.py checks and copies)."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import File, ImageFixity, utcnow
from allmicro_data.object_keys import KeyKind, manifest_key, parse_key
from allmicro_data.storage import ObjectNotFound, ObjectStore, StorageError, StoredObject

MANIFEST_FORMAT = "allmicro-manifest/1"


@dataclass(frozen=True)
class Manifest:
    """Every object an image consists of (originals, pyramid chunks and metadata), with checksums."""

    image_id: str
    objects: tuple[StoredObject, ...]
    created_at: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "image_id": self.image_id,
            "created_at": self.created_at or datetime.now(UTC).isoformat(),
            "count": len(self.objects),
            "total_bytes": self.total_bytes,
            "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in self.objects],
        }
        return json.dumps(document, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            document = json.loads(data)
            if document.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"unknown manifest format {document.get('format')!r}")
            objects = tuple(
                StoredObject(key=str(o["key"]), size=int(o["size"]), sha256=str(o["sha256"]))
                for o in document["objects"]
            )
            return cls(str(document["image_id"]), objects, str(document.get("created_at", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"unreadable checksum manifest: {exc}") from exc


def build_manifest(image_id: str, objects: Iterable[StoredObject]) -> Manifest:
    """One entry per key (the last write of a key wins), sorted by key."""
    by_key = {o.key: o for o in objects}
    return Manifest(image_id, tuple(by_key[k] for k in sorted(by_key)))


def original_objects(files: Iterable[File]) -> list[StoredObject]:
    """The originals as the catalogue recorded them when they were received."""
    return [StoredObject(key=f.storage_key, size=f.size, sha256=f.sha256) for f in files]


def write_image_manifest(
    store: ObjectStore, image_id: str, objects: Iterable[StoredObject]
) -> tuple[Manifest, StoredObject]:
    """Write the image's manifest listing every object of the image; (manifest, its object)."""
    manifest = build_manifest(image_id, objects)
    return manifest, store.put_bytes(manifest_key(image_id), manifest.to_json())


def record_image_fixity(
    session: Session, image_id: str, manifest: Manifest, stored: StoredObject
) -> ImageFixity:
    """Record the manifest's own checksum and the image's totals; scrub starts from these."""
    row = session.get(ImageFixity, image_id)
    if row is None:
        row = ImageFixity(image_id=image_id)
        session.add(row)
    row.manifest_key = manifest_key(image_id)
    row.manifest_sha256 = stored.sha256
    row.manifest_size = stored.size
    row.object_count = len(manifest.objects)
    row.total_bytes = manifest.total_bytes
    row.recorded_at = utcnow()
    return row


class ManifestChecksums:
    """Expected checksums from what the store itself holds, for a store that verifies its reads
    (storage's ExpectedChecksums): content-addressed originals carry theirs in the key, an
    image's other objects in its manifest (cached, a few hundred images)."""

    def __init__(self, capacity: int = 256, missing_ttl: float = 30.0) -> None:
        self.capacity = capacity
        self.missing_ttl = missing_ttl
        self._cache: OrderedDict[str, tuple[float, dict[str, str] | None]] = OrderedDict()
        self._lock = threading.Lock()

    def expected(self, key: str, store: ObjectStore) -> str | None:
        parsed = parse_key(key)
        if parsed is None or parsed.kind is KeyKind.MANIFEST:
            return None
        if parsed.kind is KeyKind.ORIGINAL:
            return parsed.id
        checksums = self._manifest(parsed.id, store)
        return checksums.get(key) if checksums else None

    def forget(self, key: str) -> None:
        parsed = parse_key(key)
        if parsed is not None and parsed.kind is not KeyKind.ORIGINAL:
            with self._lock:
                self._cache.pop(parsed.id, None)

    def _manifest(self, image_id: str, store: ObjectStore) -> dict[str, str] | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(image_id)
            if cached is not None and (cached[1] is not None or cached[0] > now):
                self._cache.move_to_end(image_id)
                return cached[1]
        try:
            manifest = Manifest.from_json(store.get_bytes(manifest_key(image_id)))
            checksums: dict[str, str] | None = {o.key: o.sha256 for o in manifest.objects}
        except ObjectNotFound:
            # Not written yet (ingest running) or an image from before manifests: look again later.
            checksums = None
        except StorageError:
            return None
        with self._lock:
            self._cache[image_id] = (now + self.missing_ttl, checksums)
            self._cache.move_to_end(image_id)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return checksums
