"""LocalStore: objects as files under one directory, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from allmicro_data.storage.base import (
    CHUNK_SIZE,
    InvalidKey,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StoredObject,
    iter_stream,
    validate_key,
    validate_prefix,
)

log = logging.getLogger(__name__)

# Temporary files sit beside their target, so the final rename never crosses a filesystem;
# their names start with this prefix, which no key may use.
TMP_PREFIX = ".allmicro-tmp-"
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_IN_PLACE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
# next() on a count is atomic under the GIL, so threads writing at once get distinct names.
_TMP_COUNTER = itertools.count()
# On Linux, POSIX_FADV_DONTNEED on freshly written (dirty) pages queues them for writeback at
# once, without waiting for it, and lets the page cache drop them once they are clean.
_START_WRITEBACK: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Have the kernel start writing these bytes of a file (length 0: to its end) to disk now,
    in the background, so that a later fsync finds little left to write. A no-op where there
    is no such advice; a refusal is only logged, since the fsync will write them anyway."""
    if _START_WRITEBACK is None:
        return
    try:
        os.posix_fadvise(fd, offset, length, _START_WRITEBACK)
    except OSError as exc:
        log.debug("could not start the writeback of a file: %s", exc)


class LocalStore:
    """An ObjectStore on a local (or mounted) filesystem.

    A crash at any point leaves either the complete object under its key or nothing: bytes go to a
    temporary file in the same filesystem, are flushed with fsync, and only then renamed into
    place. `durable=False` skips the fsync, for scratch stores whose contents can be rebuilt.
    `checksums=False` skips the sha256 of every write (`put` and `put_bytes` then report an empty
    sha256), for output nobody records a manifest of: `allmicro convert`'s directory.
    `atomic=False` writes objects straight under their keys, without a temporary file and a
    rename each, for a store in a staging directory that becomes visible whole, by one rename,
    or not at all (`allmicro convert` again).

    Capabilities (storage.base): local paths, adopting a file by rename, deferred sync.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durable: bool = True,
        checksums: bool = True,
        atomic: bool = True,
        start_writeback: bool = False,
    ) -> None:
        self.root = Path(root).resolve()
        self.durable = durable
        self.checksums = checksums
        self.atomic = atomic
        # Set on the unsynced view of a durable store (unsynced()): the sync() that follows a
        # pyramid then finds little left to write, instead of the whole pyramid (a 2 GiB
        # tomogram's is 2.2 GB, 4-5 s on a disk of 500 MB/s, after its last chunk).
        self.start_writeback = start_writeback
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create store directory {self.root}: {exc}") from exc

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def local_path(self, key: str) -> Path:
        """The file that holds key; zarr and other readers may open it directly."""
        validate_key(key)
        if any(part.startswith(TMP_PREFIX) for part in key.split("/")):
            raise InvalidKey(f"invalid object key {key!r}")
        return self.root / key

    def put(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
        if not self.checksums:
            # A pyramid shard (tens of MB) would otherwise be hashed for nobody.
            return StoredObject(
                key=key, size=self._write_object(key, iter_stream(stream)), sha256=""
            )
        digest = hashlib.sha256()
        size = self._write_object(key, iter_stream(stream), digest.update)
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        # The hot path of pyramid writing (one call per chunk, from several threads at once):
        # no buffered file object, one write; hashlib releases the GIL while hashing.
        self._write_object(key, (data,))
        sha256 = hashlib.sha256(data).hexdigest() if self.checksums else ""
        return StoredObject(key=key, size=len(data), sha256=sha256)

    def _write_object(
        self, key: str, blocks: Iterable[bytes], seen: Callable[[bytes], object] | None = None
    ) -> int:
        """Write blocks as the object under key; returns its size. Errors of the blocks'
        source propagate as they are, only our own I/O failures become StorageError, and a
        failed write leaves nothing under the key."""
        target = self.local_path(key)
        fd, tmp_path = self._create_temp(key, target)
        size = 0
        try:
            for block in blocks:
                self._write_all(key, fd, block)
                if seen is not None:
                    seen(block)
                size += len(block)
            self._sync(key, fd)
            if self.start_writeback:
                start_writeback(fd)
        except BaseException:
            os.close(fd)
            Path(tmp_path).unlink(missing_ok=True)
            raise
        self._close_and_rename(key, fd, tmp_path, target)
        return size

    def _create_temp(self, key: str, target: Path) -> tuple[int, str]:
        """An exclusively created new file beside target, whose directory is made if missing.

        Names are unique within the process (pid and a counter); O_EXCL makes sure that a name
        left behind by a killed process with the same pid is never shared: the next is taken.
        Not atomic: target itself, opened for writing from the start.
        """
        directory = target.parent
        if not self.atomic:
            return self._open_in_place(key, target), str(target)
        for _attempt in range(100):
            tmp_path = f"{directory}/{TMP_PREFIX}{os.getpid()}-{next(_TMP_COUNTER)}"
            try:
                return os.open(tmp_path, _TMP_FLAGS, 0o600), tmp_path
            except FileExistsError:
                continue
            except FileNotFoundError:
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise self._error(key, exc) from exc
            except OSError as exc:
                raise self._error(key, exc) from exc
        raise StorageError(f"cannot write {key!r} to {self.root}: no free temporary file name")

    def _write_all(self, key: str, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise self._error(key, exc) from exc

    def _sync(self, key: str, fd: int) -> None:
        if not self.durable:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            raise self._error(key, exc) from exc

    def _open_in_place(self, key: str, target: Path) -> int:
        try:
            try:
                return os.open(target, _IN_PLACE_FLAGS, 0o644)
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
                return os.open(target, _IN_PLACE_FLAGS, 0o644)
        except OSError as exc:
            raise self._error(key, exc) from exc

    def _close_and_rename(self, key: str, fd: int, tmp_path: str, target: Path) -> None:
        try:
            os.close(fd)
            if tmp_path != str(target):
                os.replace(tmp_path, target)
        except OSError as exc:
            Path(tmp_path).unlink(missing_ok=True)
            raise self._error(key, exc) from exc
        if self.durable:
            fsync_directory(target.parent)

    def _error(self, key: str, exc: OSError) -> StorageError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull(f"cannot write {key!r} to {self.root}: no space left")
        return StorageError(f"cannot write {key!r} to {self.root}: {exc}")

    # ---- capabilities ----------------------------------------------------------------------

    def adopt_file(self, key: str, path: Path) -> bool:
        """Rename a finished file into the store as the object under key; False when it cannot
        be (another filesystem), the file then left where it is."""
        target = self.local_path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.durable:
                # The bytes must be on disk before the object is named, as in put.
                with path.open("r+b") as handle:
                    os.fsync(handle.fileno())
            # Private like every object the store writes (the file may have been made otherwise).
            os.chmod(path, 0o600)
            os.replace(path, target)
        except OSError as exc:
            log.info("cannot move %s into %s (%s)", path, self.root, exc)
            return False
        if self.durable:
            fsync_directory(target.parent)
        return True

    def unsynced(self) -> LocalStore:
        """This store without the fsync of each object (still atomic), for sync() to follow."""
        if not self.durable:
            return self
        return LocalStore(
            self.root,
            durable=False,
            checksums=self.checksums,
            atomic=self.atomic,
            start_writeback=True,
        )

    def sync(self, keys: Iterable[str]) -> None:
        """fsync the files of keys, then each of their directories once (their renames)."""
        if not self.durable:
            return
        directories: set[Path] = set()
        for key in keys:
            path = self.local_path(key)
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise self._error(key, exc) from exc
            directories.add(path.parent)
        for directory in sorted(directories):
            fsync_directory(directory)

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        # Open eagerly so that a missing key fails at the call, not at the first iteration.
        handle = self._open_file(key, start, end)
        return _read_range(handle, start, end)

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with self._open_file(key, start, end) as handle:
            if start:
                handle.seek(start)
            return handle.read() if end is None else handle.read(max(0, end - start))

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def size(self, key: str) -> int:
        try:
            info = self.local_path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(info.st_mode):
            # A "directory" is a key prefix, not an object.
            raise ObjectNotFound(key)
        return info.st_size

    def delete(self, key: str) -> None:
        path = self.local_path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            # A directory is a prefix of other keys, and a path through a file names nothing:
            # neither is an object, so there is nothing to delete.
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} from {self.root}: {exc}") from exc
        # Prune empty directories up to the root so listings stay clean.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        # Walk only the directory the prefix points into, not the whole store.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return iter(())
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            if rel_dir == ".":
                rel_dir = ""
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return iter(keys)

    def _open_file(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if start < 0 or (end is not None and end < 0):
            # As S3Store: a seek before the start is an OSError that says nothing of the cause.
            raise ValueError("byte offsets must not be negative")
        try:
            return self.local_path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} from {self.root}: {exc}") from exc


def _read_range(handle: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    with handle:
        if start:
            handle.seek(start)
        remaining = None if end is None else max(0, end - start)
        while remaining is None or remaining > 0:
            want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
            block = handle.read(want)
            if not block:
                return
            if remaining is not None:
                remaining -= len(block)
            yield block


def fsync_directory(directory: Path) -> None:
    """Make a rename into directory durable; a no-op where a directory cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
