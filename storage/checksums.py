"""Checksum mechanism: verified copies and the per-object checks scrub is built from; what to expect is the caller's (ExpectedChecksums)."""

from __future__ import annotations

import enum
import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from allmicro_data.storage.base import ObjectNotFound, ObjectStore, StorageError, StoredObject

# Objects up to this size are read once into memory when copied, so the bytes checked are the
# bytes written; larger ones are streamed and checked as they go.
IN_MEMORY_COPY = 64 * 1024 * 1024


class ChecksumMismatch(StorageError):
    """Bytes read or written do not have the sha256 recorded for them."""


# ---------------------------------------------------------------- expected checksums


class ExpectedChecksums(Protocol):
    """Knows the sha256 an object should have, where it is recorded; None where it is not.

    The caller supplies it (the core knows its key layout and where it records checksums); a
    store that reads with verification asks it and never interprets a key itself.
    """

    def expected(self, key: str, store: ObjectStore) -> str | None: ...

    def forget(self, key: str) -> None:
        """Drop what is cached for key (the record may have changed)."""
        ...


# ---------------------------------------------------------------- reading with a budget


class Bandwidth:
    """Caps the bytes per second a scrub reads, shared by its threads (None: no cap)."""

    def __init__(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second if bytes_per_second and bytes_per_second > 0 else None
        self._lock = threading.Lock()
        self._next = time.monotonic()
        self.bytes = 0

    def spend(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            if self.rate is None:
                return
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
            delay = start - now
        if delay > 0:
            time.sleep(delay)


def _metered(blocks: Iterator[bytes], bandwidth: Bandwidth | None) -> Iterator[bytes]:
    for block in blocks:
        if bandwidth is not None:
            bandwidth.spend(len(block))
        yield block


# ---------------------------------------------------------------- checking and copying


class CopyState(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"
    UNREACHABLE = "unreachable"


def check_copy(
    store: ObjectStore, obj: StoredObject, bandwidth: Bandwidth | None = None
) -> CopyState:
    """Read a whole copy and compare its size and sha256 with the record."""
    try:
        blocks = store.open(obj.key)
        digest = hashlib.sha256()
        size = 0
        for block in _metered(blocks, bandwidth):
            digest.update(block)
            size += len(block)
    except ObjectNotFound:
        return CopyState.MISSING
    except StorageError:
        return CopyState.UNREACHABLE
    if size != obj.size or digest.hexdigest() != obj.sha256:
        return CopyState.CORRUPT
    return CopyState.OK


def copy_verified(
    source: ObjectStore,
    target: ObjectStore,
    obj: StoredObject,
    bandwidth: Bandwidth | None = None,
) -> StoredObject:
    """Copy key from source to target, succeeding only if the bytes written have the recorded
    sha256 and size; otherwise the target copy is removed (it was wrong before, and a wrong copy
    must not look repaired) and ChecksumMismatch is raised."""
    if obj.size <= IN_MEMORY_COPY:
        data = source.get_bytes(obj.key)
        if bandwidth is not None:
            bandwidth.spend(len(data))
        if len(data) != obj.size or hashlib.sha256(data).hexdigest() != obj.sha256:
            raise ChecksumMismatch(f"source copy of {obj.key!r} does not match its checksum")
        stored = target.put_bytes(obj.key, data)
    else:
        stored = target.put(obj.key, _metered(source.open(obj.key), bandwidth))
    if stored.sha256 != obj.sha256 or stored.size != obj.size:
        target.delete(obj.key)
        raise ChecksumMismatch(f"copy of {obj.key!r} does not match its checksum")
    return stored


@dataclass
class ObjectReport:
    """What a scrub found for one object: the state of each copy and what it did about them."""

    obj: StoredObject
    states: dict[str, CopyState] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)
    failed_repairs: dict[str, str] = field(default_factory=dict)

    @property
    def unrecoverable(self) -> bool:
        """No copy anywhere has the recorded bytes (and none is merely out of reach)."""
        values = self.states.values()
        return bool(values) and all(s in (CopyState.MISSING, CopyState.CORRUPT) for s in values)

    def problems(self) -> Iterator[dict[str, Any]]:
        for url, state in self.states.items():
            if state is not CopyState.OK:
                yield {
                    "key": self.obj.key,
                    "store": url,
                    "state": state.value,
                    "repaired": url in self.repaired,
                    "error": self.failed_repairs.get(url),
                }


def scrub_object(
    obj: StoredObject,
    stores: Sequence[ObjectStore],
    *,
    repair: bool,
    bandwidth: Bandwidth | None = None,
) -> ObjectReport:
    """Check every copy of obj; with repair, rewrite missing and corrupt copies from a copy that
    has just passed its own check (and is checked again while it is copied)."""
    report = ObjectReport(obj)
    for store in stores:
        report.states[store.url] = check_copy(store, obj, bandwidth)
    good = [s for s in stores if report.states[s.url] is CopyState.OK]
    if not repair or not good:
        return report
    for store in stores:
        if report.states[store.url] not in (CopyState.MISSING, CopyState.CORRUPT):
            continue
        for source in good:
            try:
                copy_verified(source, store, obj, bandwidth)
            except StorageError as exc:
                report.failed_repairs[store.url] = str(exc)
                continue
            report.repaired.append(store.url)
            report.failed_repairs.pop(store.url, None)
            break
    return report
