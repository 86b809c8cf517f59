"""Resumable uploads: spool files whose offset and sha256 survive restarts; the last byte makes an original."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import CursorResult, delete, select, update

from allmicro_data.access import Caller, Use, get_visible, require_upload_target
from allmicro_data.audit import record
from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Project,
    Upload,
    UploadStatus,
    User,
    utcnow,
)
from allmicro_data.errors import Conflict, DomainError, Invalid, NotFound
from allmicro_data.jobs import lower_thread_priority
from allmicro_data.originals import (
    clean_name,
    keep_for_ingest,
    place_original,
    store_original,
    sweep_local_copies,
)
from allmicro_data.quotas import check_upload
from allmicro_data.services import Services
from allmicro_data.spool import SpoolWriter

log = logging.getLogger(__name__)

READ_BLOCK = 4 * 1024 * 1024
# Inside a long PATCH the offset is recorded every so many bytes, so that a server that dies
# half-way through a large request loses little of what it had received.
CHECKPOINT_BYTES = 64 * 1024 * 1024
# Uploads whose last byte arrived this long ago but which are not yet complete (the server died
# while storing them) are completed by the sweeper.
STUCK_AFTER = timedelta(minutes=1)
SWEEP_INTERVAL_SECONDS = 600.0

HashFactory = Callable[[], Any]


class UploadGone(DomainError):
    """The upload expired, was terminated, or failed; a new one must be started."""

    status = 410
    title = "Gone"


class ChecksumMismatch(DomainError):
    """The bytes received do not have the checksum the client declared (tus status 460)."""

    status = 460
    title = "Checksum mismatch"


class InsufficientStorage(DomainError):
    status = 507
    title = "Insufficient storage"


class OffsetMismatch(Conflict):
    """The request's Upload-Offset is not the upload's (tus 409): the client resumes from
    upload_offset, sent back as the Upload-Offset header."""

    def __init__(self, message: str, upload_offset: int) -> None:
        super().__init__(message)
        self.upload_offset = upload_offset


class UploadBusy(DomainError):
    """Another request, in this process or another one, is writing to the upload."""

    status = 423
    title = "Locked"


class UploadTooLarge(DomainError):
    status = 413
    title = "Request entity too large"


@dataclass(frozen=True, slots=True)
class UploadFields:
    """What the client says about the file it is about to send."""

    filename: str
    dataset_id: str
    relative_path: str | None = None
    group: str | None = None
    sha256: str | None = None


def spool_dir(services: Services) -> Path:
    return services.settings.uploads_dir / "tus"


def spool_path(services: Services, upload_id: str) -> Path:
    return spool_dir(services) / f"{upload_id}.part"


def _changed(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0) if isinstance(result, CursorResult) else 0


class _HashStates:
    """The whole-file sha256 of each upload at its acknowledged offset, kept between requests.

    hashlib state cannot be saved, so after a restart (or in another server process) the
    state is rebuilt by hashing the spool file again from disk.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, tuple[int, Any]] = {}

    def take(self, upload_id: str, offset: int) -> Any | None:
        with self._lock:
            kept = self._states.pop(upload_id, None)
        if kept is not None and kept[0] == offset:
            return kept[1]
        return None

    def keep(self, upload_id: str, offset: int, digest: Any) -> None:
        with self._lock:
            self._states[upload_id] = (offset, digest)

    def forget(self, upload_id: str) -> None:
        with self._lock:
            self._states.pop(upload_id, None)


hash_states = _HashStates()


# Creations in this process check and record their reservations one at a time.
_reserving = threading.Lock()


def _expiry(services: Services, now: datetime) -> datetime:
    return now + timedelta(seconds=services.settings.upload_expiry_seconds)


def create_upload(
    services: Services, caller: Caller, *, length: int, metadata_header: str, fields: UploadFields
) -> Upload:
    """A new, empty upload into a dataset the caller contributes to, within the limits
    (allmicro_data.quotas): its declared length is reserved on the spool until it finishes."""
    name = clean_name(fields.filename)
    directory = spool_dir(services)
    with _reserving, services.session() as session:
        dataset = require_upload_target(session, caller, fields.dataset_id)
        project = session.get(Project, dataset.project_id)
        assert project is not None
        check_upload(
            session,
            services.settings,
            user_id=caller.user_id,
            project=project,
            length=length,
            spool=directory,
        )
        now = utcnow()
        upload = Upload(
            dataset_id=dataset.id,
            created_by_id=caller.user_id,
            length=length,
            upload_offset=0,
            upload_metadata=metadata_header,
            original_name=name,
            relative_path=fields.relative_path or None,
            group_key=fields.group or None,
            declared_sha256=fields.sha256,
            status=UploadStatus.RECEIVING,
            created_at=now,
            updated_at=now,
            expires_at=_expiry(services, now),
        )
        session.add(upload)
        session.flush()
        path = spool_path(services, upload.id)
        _private_directory(path.parent)
        # Readable by the server's user only; the original this file becomes keeps the mode.
        path.touch(mode=0o600, exist_ok=False)
    _confirm_reservation(services, caller, upload)
    log.info(
        "upload %s created by user %s: %d bytes of %r into dataset %s",
        upload.id,
        caller.user_id,
        length,
        name,
        upload.dataset_id,
    )
    return upload


def _confirm_reservation(services: Services, caller: Caller, upload: Upload) -> None:
    """Check the limits again now that the upload is recorded: a server process sharing the
    spool may have accepted another upload at the same moment. Of two such uploads that do
    not fit together, neither is kept (each sees the other), never both."""
    refusal: DomainError | None = None
    with services.session() as session:
        project = session.scalars(
            select(Project).join(Dataset).where(Dataset.id == upload.dataset_id)
        ).one()
        try:
            check_upload(
                session,
                services.settings,
                user_id=caller.user_id,
                project=project,
                length=upload.length,
                spool=spool_dir(services),
                excluding=upload.id,
            )
        except DomainError as exc:
            refusal = exc
            session.execute(delete(Upload).where(Upload.id == upload.id))
    if refusal is not None:
        _discard(services, upload.id)
        raise refusal


def _private_directory(directory: Path) -> None:
    """The spool directory (and the uploads directory above it) for the server's user only:
    received bytes are confidential until they are stored, and often after."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (directory, directory.parent):
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                path.chmod(mode & 0o700)
        except OSError as exc:  # not ours (a shared mount): its owner decides
            log.info("cannot make %s private: %s", path, exc)


def load_upload(services: Services, caller: Caller, upload_id: str) -> Upload:
    """The caller's upload; NotFound for anyone else's, UploadGone once it is no longer usable."""
    with services.session() as session:
        # Any of its creator's credentials may follow an upload (access.scoped: nobody else).
        upload = get_visible(session, caller, Upload, upload_id, Use.SEE)
        if upload.status is UploadStatus.FAILED:
            raise UploadGone(upload.error or "the upload failed; start a new one")
        expired = upload.status is UploadStatus.RECEIVING and upload.expires_at <= utcnow()
        if expired:
            session.delete(upload)
    if expired:
        _discard(services, upload_id)
        raise UploadGone("the upload expired; start a new one")
    return upload


def declare_sha256(services: Services, upload: Upload, sha256: str) -> Upload:
    """Record the whole-file sha256 a client declares with a PATCH (it hashes while sending, so
    it knows the digest only by its last request); completion refuses bytes that differ."""
    if upload.declared_sha256 == sha256:
        return upload
    if upload.declared_sha256 is not None:
        raise ChecksumMismatch(
            f"the upload was declared with sha256 {upload.declared_sha256}, not {sha256}"
        )
    with services.session() as session:
        session.execute(
            update(Upload)
            .where(Upload.id == upload.id, Upload.declared_sha256.is_(None))
            .values(declared_sha256=sha256)
        )
        stored = session.get(Upload, upload.id)
        if stored is None:
            raise NotFound(f"upload {upload.id} not found")
    if stored.declared_sha256 != sha256:
        raise ChecksumMismatch(
            f"the upload was declared with sha256 {stored.declared_sha256}, not {sha256}"
        )
    return stored


def check_contributor(services: Services, caller: Caller, upload: Upload) -> None:
    """Writing needs the contributor role still (it may have been withdrawn mid-upload)."""
    with services.session() as session:
        require_upload_target(session, caller, upload.dataset_id)


class Receiver:
    """Writes the body of one PATCH into the spool file, hashing as it goes.

    Two threads of its own do the work, each in order: the writing thread copies the blocks
    into the spool writer's staging buffers, writes them out and records checkpoints; the
    hashing thread computes the whole file's sha256 (and the chunk checksum if one was sent)
    over each staged buffer as the spool writer hands it over. The event loop only queues
    blocks, and the hash, the longest piece of work, runs from the first byte to the last.

    Without a chunk checksum the offset is recorded at checkpoints and whatever arrived is kept
    if the client goes away; with one, nothing of the request counts until the checksum matches.
    """

    def __init__(
        self,
        services: Services,
        upload: Upload,
        path: Path,
        handle: IO[bytes],
        whole: Any,
        chunk: Any | None,
    ) -> None:
        self.services = services
        self.upload_id = upload.id
        self.length = upload.length
        self.acknowledged = upload.upload_offset
        # Bytes handed to submit(); the spool writer knows how many of them are in the file.
        self.offset = upload.upload_offset
        self._whole = whole
        self._whole_at_ack = whole.copy()
        self._chunk = chunk
        self._file = handle
        self._next_checkpoint = self.offset + CHECKPOINT_BYTES
        # The first error of the writing thread; every block after it is refused.
        self._broken: BaseException | None = None
        # Ingest work, like the job processes: niced, so tiles are answered first.
        nice = (services.settings.job_nice,)
        self._hasher = ThreadPoolExecutor(
            1, f"upload-hash-{upload.id[:8]}", lower_thread_priority, nice
        )
        self._writer = ThreadPoolExecutor(
            1, f"upload-write-{upload.id[:8]}", lower_thread_priority, nice
        )
        try:
            self._spool = SpoolWriter(path, handle.fileno(), self.offset, self._digest)
        except BaseException:
            self._hasher.shutdown()
            self._writer.shutdown()
            raise

    def submit(self, blocks: Sequence[bytes]) -> Future[None]:
        """Queue blocks to be written (and so hashed) after those queued before; the future is
        done once they are staged, or holds the error that stopped the writing."""
        size = sum(len(block) for block in blocks)
        if self.offset + size > self.length:
            raise UploadTooLarge(
                f"the request goes past the upload's length of {self.length} bytes"
            )
        written = self._writer.submit(self._in_writer, self._spool.append, blocks)
        self.offset += size
        if self._chunk is None and self.offset >= self._next_checkpoint:
            self._writer.submit(self._in_writer, self._checkpoint, self.offset)
            self._next_checkpoint = self.offset + CHECKPOINT_BYTES
        return written

    def _digest(self, view: memoryview) -> Future[None]:
        return self._hasher.submit(self._hash, view)

    def _hash(self, view: memoryview) -> None:
        try:
            self._whole.update(view)
            if self._chunk is not None:
                self._chunk.update(view)
        finally:
            view.release()

    def _in_writer(self, work: Callable[..., None], *args: Any) -> None:
        """Run work in the writing thread, unless an earlier error stopped it."""
        if self._broken is not None:
            raise self._broken
        try:
            work(*args)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._broken = InsufficientStorage("the server ran out of room for this upload")
            else:
                self._broken = exc
            raise self._broken from exc
        except BaseException as exc:
            self._broken = exc
            raise

    def _checkpoint(self, offset: int) -> None:
        """Put the bytes before offset in the file, then have the hashing thread, once it is
        there, note its state and send it back to be recorded with the offset: neither
        thread waits for the other."""
        self._spool.sync()
        self._hasher.submit(self._snapshot, offset)

    def _snapshot(self, offset: int) -> None:
        digest = self._whole.copy()
        self._writer.submit(self._in_writer, self._acknowledge, offset, digest)

    def _drain(self) -> None:
        """Wait until every block queued so far is in the spool file and hashed, and every
        checkpoint recorded (errors are kept in _broken)."""
        self._writer.submit(self._sync_quietly).result()
        self._hasher.submit(lambda: None).result()
        self._writer.submit(lambda: None).result()

    def _sync_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._in_writer(self._spool.sync)

    def finish(self, expected_chunk_digest: bytes | None) -> int:
        """End of the request body: verify the chunk checksum, record the new offset."""
        self._drain()
        if self._broken is not None:
            # The state kept (acknowledged, its hash) is sound; what the failed request wrote
            # past it goes now: a full disk needs that room back at once, not when (if ever)
            # the upload is opened again.
            self._cut_back()
            raise self._broken
        if (
            expected_chunk_digest is not None
            and self._chunk is not None
            and self._chunk.digest() != expected_chunk_digest
        ):
            self.abandon()
            raise ChecksumMismatch("the request body does not match its Upload-Checksum")
        self._acknowledge(self.offset, self._whole.copy())
        return self.offset

    def keep_received(self) -> int:
        """The client went away mid-request: keep what arrived, unless it must be verified."""
        self._drain()
        if self._broken is not None:
            self._cut_back()
            return self.acknowledged
        if self._chunk is not None:
            self.abandon()
        else:
            self._acknowledge(self.offset, self._whole.copy())
        return self.acknowledged

    def _cut_back(self) -> None:
        """Drop the bytes after the acknowledged offset from the spool file (after an error)."""
        try:
            self._file.truncate(self.acknowledged)
        except OSError as exc:
            # Opening the upload again cuts it back too.
            log.warning("upload %s: cannot cut the spool back: %s", self.upload_id, exc)

    def abandon(self) -> None:
        """Forget everything after the last acknowledged offset."""
        self._drain()
        self._file.truncate(self.acknowledged)
        self.offset = self.acknowledged
        self._spool.reset(self.acknowledged)
        self._whole = self._whole_at_ack.copy()
        self._next_checkpoint = self.offset + CHECKPOINT_BYTES
        self._broken = None

    @property
    def sha256(self) -> str:
        return str(self._whole.hexdigest())

    def close(self) -> None:
        self._drain()
        self._hasher.shutdown()
        self._writer.shutdown()
        self._spool.close()
        self._file.close()
        hash_states.keep(self.upload_id, self.acknowledged, self._whole_at_ack)

    def _acknowledge(self, offset: int, digest: Any) -> None:
        if offset == self.acknowledged:
            return
        now = utcnow()
        with self.services.session() as session:
            # The WHERE is a fence: of two writers on one upload (two server processes), the
            # one whose starting offset is stale records nothing.
            result = session.execute(
                update(Upload)
                .where(Upload.id == self.upload_id, Upload.upload_offset == self.acknowledged)
                .values(
                    upload_offset=offset,
                    updated_at=now,
                    expires_at=_expiry(self.services, now),
                )
            )
            if _changed(result) != 1:
                raise Conflict("another request is writing to this upload")
        self.acknowledged = offset
        self._whole_at_ack = digest


def open_receiver(
    services: Services,
    upload: Upload,
    offset: int,
    chunk_factory: HashFactory | None,
    lock_wait: float = 10.0,
) -> Receiver:
    """Get ready to append at offset: the spool file locked against writers in other server
    processes, cut back to the acknowledged offset, and the whole-file hash at that offset
    (kept in memory, or rebuilt from the spool after a restart or in another process)."""
    path = spool_path(services, upload.id)
    try:
        handle = path.open("r+b", buffering=0)
    except FileNotFoundError:
        # Another request may have just completed the upload (its spool file goes then).
        _raise_if_moved(services, upload.id, offset)
        raise UploadGone("the upload's received bytes are lost; start a new one") from None
    try:
        _lock_spool(handle, lock_wait)
        # Read again under the lock: a writer in another process may just have moved it.
        with services.session() as session:
            current = session.get(Upload, upload.id)
            if current is None:
                raise UploadGone("the upload is gone; start a new one")
            upload = current
        if upload.status is not UploadStatus.RECEIVING or offset != upload.upload_offset:
            raise OffsetMismatch(
                f"the upload's offset is {upload.upload_offset}, not {offset}",
                upload.upload_offset,
            )
        size = os.fstat(handle.fileno()).st_size
        if size < upload.upload_offset:
            # The machine lost bytes it had acknowledged (power cut before they reached disk).
            _fence_offset(services, upload, size)
            raise OffsetMismatch(f"the upload's offset is {size}, not {offset}", size)
        if size > upload.upload_offset:
            # Bytes a crashed request wrote after its last checkpoint: never acknowledged.
            handle.truncate(upload.upload_offset)
        whole = hash_states.take(upload.id, upload.upload_offset)
        if whole is None:
            whole = _hash_prefix(handle, upload.upload_offset)
        chunk = chunk_factory() if chunk_factory is not None else None
        return Receiver(services, upload, path, handle, whole, chunk)
    except BaseException:
        handle.close()
        raise


def _raise_if_moved(services: Services, upload_id: str, offset: int) -> None:
    """OffsetMismatch if the upload is no longer at offset (or no longer receiving)."""
    with services.session() as session:
        current = session.get(Upload, upload_id)
    if current is not None and (
        current.status is not UploadStatus.RECEIVING or current.upload_offset != offset
    ):
        raise OffsetMismatch(
            f"the upload's offset is {current.upload_offset}, not {offset}",
            current.upload_offset,
        )


def _lock_spool(handle: IO[bytes], wait: float) -> None:
    """An exclusive lock on the spool file for as long as it is open (flock: released when the
    process dies, and understood by the shared filesystems API processes use, NFS included)."""
    try:
        import fcntl
    except ImportError:  # Windows: one server process, covered by the in-process lock
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise UploadBusy("another request is writing to this upload; try again") from None
            time.sleep(0.05)


def _fence_offset(services: Services, upload: Upload, size: int) -> None:
    with services.session() as session:
        session.execute(
            update(Upload)
            .where(Upload.id == upload.id, Upload.upload_offset == upload.upload_offset)
            .values(upload_offset=size)
        )
    hash_states.forget(upload.id)


def _hash_prefix(handle: IO[bytes], length: int) -> Any:
    digest = hashlib.sha256()
    remaining = length
    handle.seek(0)
    while remaining > 0:
        block = handle.read(min(READ_BLOCK, remaining))
        if not block:
            raise UploadGone("the upload's received bytes are lost; start a new one")
        digest.update(block)
        remaining -= len(block)
    return digest


def complete_upload(services: Services, upload_id: str, sha256: str | None = None) -> Upload:
    """Turn an upload whose last byte has arrived into an original with its ingest job.

    Idempotent and restartable: the computed sha256 is recorded before the spool file moves
    into the store, so a server that dies at any point completes the upload on the next try.
    """
    with services.session() as session:
        upload = session.get(Upload, upload_id)
        if upload is None:
            raise NotFound(f"upload {upload_id} not found")
        if upload.status is UploadStatus.COMPLETE:
            return upload
        if upload.status is UploadStatus.FAILED:
            raise UploadGone(upload.error or "the upload failed; start a new one")
        if upload.upload_offset != upload.length:
            raise Conflict("the upload has not received all its bytes")
        path = spool_path(services, upload.id)
        if upload.sha256 is None:
            computed = sha256
            if computed is None:
                with path.open("rb") as handle:
                    computed = _hash_prefix(handle, upload.length).hexdigest()
            if upload.declared_sha256 and computed != upload.declared_sha256:
                message = (
                    f"the file received has sha256 {computed}, not the declared "
                    f"{upload.declared_sha256}; the upload is discarded, send the file again"
                )
                upload.status = UploadStatus.FAILED
                upload.error = message
                session.commit()
                _discard(services, upload.id)
                log.warning("upload %s: whole-file checksum mismatch", upload.id)
                raise ChecksumMismatch(message)
            upload.sha256 = computed
            upload.status = UploadStatus.RECEIVED
    assert upload.sha256 is not None
    if path.exists():
        place_original(services.store, path, upload.sha256, upload.original_name)
    with services.session() as session:
        upload = session.get(Upload, upload_id)
        assert upload is not None and upload.sha256 is not None
        if upload.status is UploadStatus.COMPLETE:
            return upload
        dataset = session.get(Dataset, upload.dataset_id)
        user = session.get(User, upload.created_by_id)
        if dataset is None or user is None:
            raise NotFound(f"upload {upload_id} not found")
        result = store_original(
            session,
            services.store,
            dataset=dataset,
            path=path,
            sha256=upload.sha256,
            size=upload.length,
            original_name=upload.original_name,
            uploaded_by_id=user.id,
            relative_path=upload.relative_path,
            group_key=upload.group_key,
            max_attempts=services.settings.job_max_attempts,
        )
        now = utcnow()
        upload.status = UploadStatus.COMPLETE
        upload.file_id = result.file.id
        upload.job_id = result.job.id if result.job else None
        upload.completed_at = now
        upload.updated_at = now
        # Kept a while so that a client that lost the last response learns the outcome.
        upload.expires_at = _expiry(services, now)
        record(
            session,
            "file.upload",
            actor=user.email,
            actor_user_id=user.id,
            object_type="file",
            object_id=result.file.id,
            project_id=dataset.project_id,
            size=upload.length,
            detail={"already_present": result.already_present, "upload_id": upload.id},
        )
    if result.ingests_new_bytes:
        keep_for_ingest(services.settings, services.store, path, upload.sha256)
    _discard(services, upload_id)
    services.wake_jobs()
    log.info(
        "upload %s complete: file %s, job %s%s",
        upload_id,
        upload.file_id,
        upload.job_id,
        " (bytes already stored)" if result.already_present else "",
    )
    return upload


def found_already_present(services: Services, upload: Upload) -> bool:
    """Whether a completed upload's bytes were in its dataset before it began: its file is that
    earlier one, and nothing new is processed (the dataset holds each sha256 once)."""
    if upload.status is not UploadStatus.COMPLETE or upload.file_id is None:
        return False
    with services.session() as session:
        uploaded_at = session.scalar(select(File.uploaded_at).where(File.id == upload.file_id))
    return uploaded_at is not None and uploaded_at < upload.created_at


def terminate_upload(services: Services, caller: Caller, upload_id: str) -> None:
    """Forget an upload (tus termination); an original it already made stays."""
    with services.session() as session:
        session.delete(get_visible(session, caller, Upload, upload_id, Use.UPLOAD))
    _discard(services, upload_id)
    log.info("upload %s terminated by user %s", upload_id, caller.user_id)


def _discard(services: Services, upload_id: str) -> None:
    hash_states.forget(upload_id)
    spool_path(services, upload_id).unlink(missing_ok=True)


def sweep_uploads(services: Services, now: datetime | None = None) -> int:
    """Delete expired uploads and stray spool files; complete uploads a crash left unfinished."""
    now = now or utcnow()
    swept = 0
    with services.session() as session:
        expired = session.scalars(select(Upload).where(Upload.expires_at <= now)).all()
        stuck = session.scalars(
            select(Upload.id).where(
                Upload.status == UploadStatus.RECEIVED, Upload.updated_at <= now - STUCK_AFTER
            )
        ).all()
        known = set(session.scalars(select(Upload.id)).all())
        for upload in expired:
            if upload.status is UploadStatus.RECEIVED:
                continue
            session.delete(upload)
            _discard(services, upload.id)
            swept += 1
    for upload_id in stuck:
        try:
            complete_upload(services, upload_id)
        except Exception:
            log.exception("upload %s: could not complete it", upload_id)
    directory = spool_dir(services)
    if directory.is_dir():
        cutoff = (now - timedelta(seconds=services.settings.upload_expiry_seconds)).timestamp()
        for stray in directory.iterdir():
            if stray.stem not in known and stray.stat().st_mtime < cutoff:
                stray.unlink(missing_ok=True)
                swept += 1
    swept += sweep_local_copies(services.settings, now.timestamp())
    if swept:
        log.info(
            "upload sweep: %d expired uploads, stray spool files and old local copies removed",
            swept,
        )
    return swept


class UploadSweeper:
    """The server's upload housekeeping: sweep_uploads at start, then every quarter of the
    upload expiry (at most every SWEEP_INTERVAL_SECONDS)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        expiry = services.settings.upload_expiry_seconds
        self.interval = min(SWEEP_INTERVAL_SECONDS, max(1.0, expiry / 4))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="upload-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            try:
                sweep_uploads(self.services)
            except Exception:
                log.exception("upload sweep failed")
            if self._stop.wait(self.interval):
                return


def validate_sha256(value: str) -> str:
    value = value.strip().lower()
    if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
        raise Invalid("sha256 must be 64 hexadecimal digits")
    return value
