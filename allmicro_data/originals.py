"""Originals: store uploaded bytes content-addressed under raw/<sha256>, register the File, queue its ingest."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import Dataset, File, Job, JobKind, new_id, utcnow
from allmicro_data.errors import Conflict, Invalid
from allmicro_data.jobs import enqueue
from allmicro_data.lifecycle import take_out_of_trash
from allmicro_data.names import unfit_character
from allmicro_data.object_keys import original_key
from allmicro_data.storage import ObjectStore, SupportsFileAdoption, SupportsLocalPaths
from allmicro_data.storage.base import CHUNK_SIZE

if TYPE_CHECKING:
    from allmicro_data.settings import Settings

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 255
# A local copy kept for an ingest job that has not read it by then is removed by the upload
# sweep: its job runs elsewhere, or is long gone.
LOCAL_COPY_MAX_AGE_SECONDS = 24 * 3600.0


@dataclass
class StoredOriginal:
    file: File
    job: Job | None
    already_present: bool

    @property
    def ingests_new_bytes(self) -> bool:
        """A job was queued for bytes the dataset did not hold: the upload's spool file is then
        worth keeping for that job (keep_for_ingest)."""
        return self.job is not None and not self.already_present


def clean_name(name: str | None) -> str:
    """The base name of an uploaded file, as the user will see it and download it again."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if (ch := unfit_character(base)) is not None:
        # Refused, not stripped: the uploader learns at once, and no header or CSV line breaks.
        raise Invalid(f"the file name holds the control character U+{ord(ch):04X}")
    if not base or base in (".", ".."):
        raise Invalid("the upload has no file name")
    return base[:MAX_NAME_LENGTH]


def spool(stream: BinaryIO, directory: Path, max_bytes: int) -> tuple[Path, str, int]:
    """Copy a stream to a temporary file, hashing as it goes; (path, sha256, size)."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix="upload-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    try:
        with handle:
            while block := stream.read(CHUNK_SIZE):
                size += len(block)
                if size > max_bytes:
                    raise Invalid(f"the upload is larger than the limit of {max_bytes} bytes")
                digest.update(block)
                handle.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


def place_original(store: ObjectStore, path: Path, sha256: str, original_name: str) -> bool:
    """Store a spooled file, already hashed, under raw/<sha256>; False if those bytes were there.

    A store that adopts files (a local store on the spool's filesystem) takes the spool file over
    by renaming it, so a large original is written once and never copied again; other stores get
    a streamed copy.
    """
    key = original_key(sha256)
    if store.exists(key):
        return False
    if isinstance(store, SupportsFileAdoption) and store.adopt_file(key, path):
        return True
    with path.open("rb") as handle:
        stored = store.put(key, handle)
    if stored.sha256 != sha256:
        # The spool and the store disagree: the disk or the store corrupted the bytes.
        store.delete(key)
        raise OSError(f"stored bytes of {original_name!r} do not match what was received")
    return True


def local_copies_dir(settings: Settings) -> Path:
    """Where just-uploaded originals wait for their ingest job, by sha256 (beside the spool)."""
    return settings.uploads_dir / "for-ingest"


def keep_for_ingest(settings: Settings, store: ObjectStore, path: Path, sha256: str) -> bool:
    """Keep a spooled original that the store took a copy of (S3) as its ingest job's local
    copy, by renaming it; False (the file left where it is) when the store keeps its objects as
    files here anyway, or the copies kept would pass `ingest_local_copies_gb`.

    A job on this machine then reads the original from disk instead of downloading from the
    store the bytes that just went up, which costs our CPU, the store's, and the time of a
    whole transfer before the conversion starts. Only an optimisation: a copy that cannot be
    kept is logged, and the job downloads the original instead.
    """
    limit = settings.ingest_local_copies_gb * 1e9
    if limit <= 0 or isinstance(store, SupportsLocalPaths):
        return False
    directory = local_copies_dir(settings)
    try:
        size = path.stat().st_size
        directory.mkdir(parents=True, exist_ok=True)
        kept = 0
        for entry in os.scandir(directory):
            with contextlib.suppress(FileNotFoundError):
                kept += entry.stat().st_size
        if kept + size > limit:
            return False
        os.replace(path, directory / sha256)
    except OSError as exc:
        log.warning("could not keep a local copy of %s for its ingest job: %s", sha256, exc)
        return False
    return True


def local_copy(settings: Settings, sha256: str, size: int) -> Path | None:
    """The local copy of an original kept by keep_for_ingest, if it is here and whole."""
    path = local_copies_dir(settings) / sha256
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == size:
            return path
    return None


def release_local_copy(settings: Settings, sha256: str) -> None:
    """The ingest job has read its original: its local copy goes."""
    (local_copies_dir(settings) / sha256).unlink(missing_ok=True)


def sweep_local_copies(settings: Settings, now: float | None = None) -> int:
    """Remove local copies older than LOCAL_COPY_MAX_AGE_SECONDS; how many went."""
    directory = local_copies_dir(settings)
    if not directory.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - LOCAL_COPY_MAX_AGE_SECONDS
    removed = 0
    for entry in os.scandir(directory):
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
    return removed


def store_original(
    session: Session,
    store: ObjectStore,
    *,
    dataset: Dataset,
    path: Path,
    sha256: str,
    size: int,
    original_name: str,
    uploaded_by_id: str | None,
    relative_path: str | None = None,
    group_key: str | None = None,
    max_attempts: int = 3,
) -> StoredOriginal:
    """Make the spooled file an original of dataset and queue its ingest.

    The bytes are stored once whoever uploads them; the same bytes uploaded again into the same
    dataset give back the existing file and its job instead of a second image.
    """
    existing = _existing(session, dataset.id, sha256)
    if existing is not None:
        if existing.file.deleted_at is not None:
            # Sent again after its images went to the trash: they come back with it.
            take_out_of_trash(session, existing.file)
        return existing
    key = original_key(sha256)
    place_original(store, path, sha256, original_name)
    # Several clients may send the same file at the same moment: the unique (dataset, sha256)
    # index lets one row in, and the others take that row and its job instead of a second one.
    inserted = session.scalar(
        _insert_for(session)(File)
        .values(
            id=new_id(),
            dataset_id=dataset.id,
            storage_key=key,
            size=size,
            sha256=sha256,
            original_name=clean_name(original_name),
            relative_path=relative_path,
            group_key=group_key or None,
            uploaded_by_id=uploaded_by_id,
            uploaded_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["dataset_id", "sha256"])
        .returning(File.id)
    )
    if inserted is None:
        existing = _existing(session, dataset.id, sha256)
        if existing is None:  # the other row was deleted in between: a rare second try
            raise Conflict("the same file is being stored by another request; try again")
        log.info(
            "original %s of dataset %s was stored at the same moment by another request",
            existing.file.id,
            dataset.id,
        )
        return existing
    file = session.get_one(File, inserted)
    job = enqueue(
        session,
        JobKind.INGEST,
        dataset_id=dataset.id,
        file_id=file.id,
        created_by_id=uploaded_by_id,
        max_attempts=max_attempts,
    )
    log.info("original %s stored as %s (%d bytes), job %s", file.id, key, size, job.id)
    return StoredOriginal(file=file, job=job, already_present=False)


def _existing(session: Session, dataset_id: str, sha256: str) -> StoredOriginal | None:
    """The file of dataset with these bytes, and its latest job, if there is one."""
    existing = session.scalars(
        select(File).where(File.dataset_id == dataset_id, File.sha256 == sha256)
    ).first()
    if existing is None:
        return None
    job = session.scalars(
        select(Job).where(Job.file_id == existing.id).order_by(Job.created_at.desc())
    ).first()
    return StoredOriginal(file=existing, job=job, already_present=True)


def _insert_for(session: Session) -> Callable[..., Any]:
    """INSERT with ON CONFLICT: SQLite and PostgreSQL spell it alike, but SQLAlchemy builds it
    from each dialect's own insert()."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert
