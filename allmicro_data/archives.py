"""Whole datasets and selections as ZIP archives streamed on the fly, with a sha256 manifest inside."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from zipstream import ZIP_STORED, ZipStream

from allmicro_data.acquisition import ACQUISITION_FIELDS, wall_clock
from allmicro_data.annotations import Annotations, of_images
from allmicro_data.catalogue.models import Dataset, File, Image, ImageFile, ImageStatus
from allmicro_data.csv_export import annotation_cell, spreadsheet_row
from allmicro_data.storage import ObjectStore

MANIFEST_NAME = "SHA256SUMS"
METADATA_NAME = "metadata.json"

# Columns of the metadata export, in order (SI units, as in the catalogue): the image, its pixel
# size, then every normalised acquisition field in table order (new fields append at the end).
METADATA_COLUMNS = (
    "id",
    "name",
    "dataset_id",
    "format",
    "axes",
    "shape",
    "dtype",
    "pixel_size_x",
    "pixel_size_y",
    "pixel_size_z",
    *(field.name for field in ACQUISITION_FIELDS),
    # True when acquired_at is the instrument's local wall-clock time (written without offset).
    "acquired_at_local",
)


def _safe_part(text: str) -> str:
    cleaned = "".join("_" if ch in '\\/:*?"<>|' or not ch.isprintable() else ch for ch in text)
    cleaned = cleaned.strip().strip(".")
    return cleaned or "_"


def arcname_for(file: File, folder: str) -> str:
    """Where a file goes in the archive: its folder, then its relative path or its name."""
    relative = (file.relative_path or "").replace("\\", "/").strip("/")
    parts = [p for p in relative.split("/") if p not in ("", ".", "..")] if relative else []
    if not parts or parts[-1] != file.original_name:
        parts.append(file.original_name)
    return "/".join(_safe_part(p) for p in (folder, *parts))


def _unique(name: str, used: set[str]) -> str:
    candidate = name
    stem, dot, ext = name.rpartition(".")
    counter = 2
    while candidate.lower() in used:
        candidate = f"{stem} ({counter}).{ext}" if dot and stem else f"{name} ({counter})"
        counter += 1
    used.add(candidate.lower())
    return candidate


def _lazy(store: ObjectStore, key: str) -> Iterator[bytes]:
    # Opened only when the archive reaches this member, so a dataset of thousands of files
    # never holds thousands of open handles.
    yield from store.open(key)


def image_records(session: Session, dataset_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The normalised metadata of the ready images in the datasets, with their files' names."""
    images = session.scalars(
        select(Image)
        .where(
            Image.dataset_id.in_(dataset_ids),
            Image.status == ImageStatus.READY,
            Image.deleted_at.is_(None),
        )
        .order_by(Image.dataset_id, Image.name, Image.id)
    ).all()
    annotated = of_images(session, [image.id for image in images])
    records: list[dict[str, Any]] = []
    for image in images:
        row: dict[str, Any] = {}
        for column in METADATA_COLUMNS:
            value = getattr(image, column)
            if column == "acquired_at":
                value = wall_clock(value, image.acquired_at_local)
            row[column] = value.isoformat() if isinstance(value, datetime) else value
        files = session.execute(
            select(File.original_name, File.sha256)
            .join(ImageFile, ImageFile.file_id == File.id)
            .where(ImageFile.image_id == image.id)
        ).all()
        row["files"] = [{"name": n, "sha256": s} for n, s in files]
        row["channels"] = image.channels or []
        row["warnings"] = image.warnings or []
        own = annotated.get(image.id, Annotations())
        row["description"] = image.description or ""
        row["tags"] = own.tags
        row["annotations"] = [{"key": k, "value": v} for k, v in own.pairs]
        records.append(row)
    return records


def metadata_csv(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*METADATA_COLUMNS, "files", "sha256", "tags", "annotations"])
    for row in records:
        cells = []
        for column in METADATA_COLUMNS:
            value = row[column]
            cells.append("x".join(str(n) for n in value) if column == "shape" and value else value)
        cells.append(";".join(f["name"] for f in row["files"]))
        cells.append(";".join(f["sha256"] for f in row["files"]))
        cells.append(annotation_cell(row.get("tags", [])))
        cells.append(
            annotation_cell(f"{a['key']}={a['value']}" for a in row.get("annotations", []))
        )
        writer.writerow(spreadsheet_row("" if c is None else c for c in cells))
    return out.getvalue()


class DatasetArchive:
    """A sized, streaming ZIP of originals (stored, not recompressed) plus manifest and metadata."""

    def __init__(self, store: ObjectStore, files: Sequence[File], folders: dict[str, str]) -> None:
        self.files = list(files)
        self._zip = ZipStream(compress_type=ZIP_STORED, sized=True)
        used: set[str] = set()
        manifest: list[str] = []
        for f in self.files:
            name = _unique(arcname_for(f, folders[f.dataset_id]), used)
            self._zip.add(_lazy(store, f.storage_key), name, size=f.size)
            manifest.append(f"{f.sha256}  {name}\n")
        self._manifest = "".join(manifest).encode("utf-8")

    def add_metadata(self, records: list[dict[str, Any]]) -> None:
        data = json.dumps(records, indent=2, ensure_ascii=False).encode("utf-8")
        self._zip.add(data, METADATA_NAME, size=len(data))

    def finish(self) -> None:
        self._zip.add(self._manifest, MANIFEST_NAME, size=len(self._manifest))

    def __len__(self) -> int:
        return len(self._zip)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._zip)


def build_archive(
    session: Session, store: ObjectStore, files: Sequence[File], *, with_metadata: bool = True
) -> DatasetArchive:
    """The archive of these files, each under a folder named after its dataset."""
    dataset_ids = sorted({f.dataset_id for f in files})
    rows = session.execute(select(Dataset.id, Dataset.name).where(Dataset.id.in_(dataset_ids)))
    names = {row.id: row.name for row in rows}
    folders: dict[str, str] = {}
    used: set[str] = set()
    for dataset_id in dataset_ids:
        folders[dataset_id] = _unique(_safe_part(names.get(dataset_id, dataset_id)), used)
    archive = DatasetArchive(store, files, folders)
    if with_metadata:
        archive.add_metadata(image_records(session, dataset_ids))
    archive.finish()
    return archive
