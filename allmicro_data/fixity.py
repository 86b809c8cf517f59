"""Per-image fixity: the checksum manifest written beside each pyramid, and its totals in the catalogue."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import File, ImageFixity, utcnow
from allmicro_data.storage import Manifest, ObjectStore, StoredObject
from allmicro_data.storage.fixity import build_manifest, manifest_key, write_manifest


def original_objects(files: Iterable[File]) -> list[StoredObject]:
    """The originals as the catalogue recorded them when they were received."""
    return [StoredObject(key=f.storage_key, size=f.size, sha256=f.sha256) for f in files]


def write_image_manifest(
    store: ObjectStore, image_id: str, objects: Iterable[StoredObject]
) -> tuple[Manifest, StoredObject]:
    """Write images/<id>/manifest.json listing every object of the image; (manifest, its object)."""
    manifest = build_manifest(image_id, objects)
    return manifest, write_manifest(store, manifest)


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
