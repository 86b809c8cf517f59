"""The object-store protocol every store implements, the optional capabilities a store may add, and the errors and records they use."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

# Keys are relative, slash-separated, without empty, "." or ".." parts: a key can never escape
# the store's root, whatever a caller passes in.
_KEY_PART = re.compile(r"^[A-Za-z0-9._\-]+$")

CHUNK_SIZE = 1024 * 1024


class StorageError(Exception):
    """A store could not do what was asked (I/O, network, permissions)."""


class StorageFull(StorageError):
    """The store has no room left (a full disk or quota, or an S3 server out of space).

    Unlike other storage errors it says nothing about the object or the request: the same write
    succeeds once space is freed, so jobs wait for it instead of giving up.
    """


def is_storage_full(exc: BaseException) -> bool:
    """Whether exc, or an error that caused it, is a store or filesystem out of space."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFull):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


class ObjectNotFound(StorageError, KeyError):
    """No object exists under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object under key {self.key!r}"


class InvalidKey(StorageError, ValueError):
    """The key is not a well-formed relative object key."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a store holds under a key after a write: its size and its sha256."""

    key: str
    size: int
    sha256: str


def validate_key(key: str) -> str:
    """Return the key if it is a safe relative key, else raise InvalidKey."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise InvalidKey(f"invalid object key {key!r}")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _KEY_PART.match(part):
            raise InvalidKey(f"invalid object key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key-like path that may end with '/'."""
    if prefix == "":
        return prefix
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    validate_key(stripped)
    return prefix


def regular_file_left(stream: object) -> int | None:
    """The bytes left in a regular file from where it stands, or None for any other stream
    (stores that can read a file their own way, or give each replica a handle, ask this)."""
    if not isinstance(stream, io.BufferedReader | io.FileIO):
        return None
    try:
        status = os.fstat(stream.fileno())
        if not stat.S_ISREG(status.st_mode):
            return None
        return max(status.st_size - stream.tell(), 0)
    except (OSError, ValueError):
        return None


def iter_stream(
    stream: BinaryIO | Iterable[bytes], chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield the bytes of a file-like object or an iterable of byte strings."""
    if isinstance(stream, bytes | bytearray | memoryview):
        # One block: iterating bytes would give integers, each written as that many zero bytes.
        if stream:
            yield bytes(stream)
        return
    if hasattr(stream, "read"):
        reader: BinaryIO = stream  # type: ignore[assignment]
        while True:
            block = reader.read(chunk_size)
            if not block:
                return
            yield block
    else:
        for block in stream:  # type: ignore[union-attr]
            if block:
                yield bytes(block)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@runtime_checkable
class ObjectStore(Protocol):
    """Immutable-object storage addressed by relative keys.

    Writes are atomic: a reader sees either the whole new object or none (or the old one).
    Every write reports the sha256 and size of what was stored, so callers can record fixity.
    """

    @property
    def url(self) -> str:
        """A URL that names this store (file:///… or s3://…), never containing secrets."""
        ...

    def put(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
        """Store the bytes from a stream under key, computing sha256 as they are written."""
        ...

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        """Store a small object held in memory."""
        ...

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end) of an object (end exclusive; None means to the end)."""
        ...

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Read bytes [start, end) of an object into memory."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys that start with prefix, in lexicographic order."""
        ...


# ---- optional capabilities ---------------------------------------------------------------------
#
# As zarr's `supports_*`: callers ask a store what it can do (`isinstance(store, SupportsX)`) and
# fall back to the ObjectStore methods when it cannot; no caller outside storage/ names a store's
# class. Each is implemented where it is honest: a ReplicatedStore, for one, offers no local
# paths even over a local primary, since a read through it may have to come from a replica.


@runtime_checkable
class SupportsSuffixRead(Protocol):
    """A store that reads an object's last bytes in one request, without knowing its size (a
    shard's index is at its end)."""

    def get_suffix(self, key: str, length: int) -> bytes:
        """The last length bytes of an object (all of it when it is shorter)."""
        ...


def read_suffix(store: ObjectStore, key: str, length: int) -> bytes:
    """The last length bytes of an object: in one request where the store can, else its size
    and a range."""
    if isinstance(store, SupportsSuffixRead):
        return store.get_suffix(key, length)
    size = store.size(key)
    return store.get_bytes(key, max(0, size - length), size)


@runtime_checkable
class SupportsPresignedGet(Protocol):
    """A store that can hand out short-lived URLs a browser fetches the bytes from directly."""

    def presigned_get_url(
        self, key: str, expires_seconds: int, *, content_disposition: str | None = None
    ) -> str | None:
        """A GET URL valid for expires_seconds, or None when this store cannot make one; the
        store answers it with the given Content-Disposition header (the API builds it)."""
        ...


@runtime_checkable
class SupportsLocalPaths(Protocol):
    """A store whose objects are files on this machine, which readers may open in place."""

    def local_path(self, key: str) -> Path:
        """The file that holds key (it may not exist); never outside the store."""
        ...


@runtime_checkable
class SupportsFileAdoption(Protocol):
    """A store that can take a finished local file over as an object by renaming it, so a
    large upload is written once and never copied again."""

    def adopt_file(self, key: str, path: Path) -> bool:
        """Make the file at path the object under key, as durably as a write; False (and the
        file left where it is) when it cannot be renamed in, e.g. from another filesystem. The
        caller has checked the bytes: the store does not hash them again."""
        ...


@runtime_checkable
class SupportsDeferredSync(Protocol):
    """A store that can write many objects without waiting for the disk after each one, then
    make them all durable at once: per-object fsync costs more than compressing a chunk."""

    def unsynced(self) -> ObjectStore:
        """The same store, writing each object atomically but without waiting for the disk."""
        ...

    def sync(self, keys: Iterable[str]) -> None:
        """Make the objects under keys (written through unsynced()) durable: one barrier."""
        ...


@runtime_checkable
class SupportsReplicas(Protocol):
    """A store that keeps copies on several stores: what scrub checks, what admins see, and
    how missed copies are caught up."""

    @property
    def stores(self) -> list[ObjectStore]:
        """Every store that holds copies, the primary first."""
        ...

    @property
    def replicas(self) -> list[ObjectStore]: ...

    @property
    def quorum(self) -> int:
        """How many replicas must hold an object beside the primary for a write to succeed."""
        ...

    def available(self, store: ObjectStore) -> bool:
        """Whether store answered the last time it was asked (a failed store is set aside)."""
        ...

    def catch_up(
        self, replica_url: str, key: str, *, sha256: str | None, size: int | None, deleted: bool
    ) -> str:
        """Bring one key on one replica in line with the primary; what was done, as a word."""
        ...
