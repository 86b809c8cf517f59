"""ReplicatedStore: a primary and replicas written together, read with fallback, caught up from a to-do list."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO, NoReturn, Protocol, TypeVar

from allmicro_data.storage.base import (
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StoredObject,
    SupportsPresignedGet,
    iter_stream,
    regular_file_left,
    validate_key,
    validate_prefix,
)
from allmicro_data.storage.checksums import (
    ChecksumMismatch,
    ExpectedChecksums,
    copy_verified,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# A block of a streamed write waits at most this long for a slow replica before the replica
# is given up for this write (and gets the object later from the to-do list).
_STALL_SECONDS = 60.0
_QUEUE_BLOCKS = 8
_MAX_BAD_COPIES = 10_000


@dataclass(frozen=True)
class PendingCopy:
    """A change a replica missed: it must get key, with this sha256 and size, or lose it when
    deleted; reason says why it missed it."""

    replica_url: str
    key: str
    sha256: str | None
    size: int | None
    deleted: bool
    reason: str


class PendingCopies(Protocol):
    """The durable to-do list of changes a replica missed; the catalogue implements it."""

    def record(self, missed: PendingCopy) -> None:
        """Remember the change the replica missed — durably, before the write that missed it
        reports success."""
        ...


class QuorumNotReached(StorageError):
    """The primary holds the object but fewer replicas than the quorum do."""


class ReplicatedStore:
    """Writes go to the primary and every replica at once; a write succeeds when the primary and
    at least `quorum` replicas hold it, and every replica that missed it is put on the to-do
    list. Reads come from the primary and fall back to the replicas when it fails, lacks the
    object, or returns bytes whose sha256 differs from the one recorded for them.

    A store that fails is left alone for `retry_seconds` (writes to it go straight to the to-do
    list), so a dead replica costs one timeout, not one per chunk.
    """

    def __init__(
        self,
        primary: ObjectStore,
        replicas: Sequence[ObjectStore],
        *,
        quorum: int = 0,
        pending: PendingCopies | None = None,
        checksums: ExpectedChecksums | None = None,
        retry_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas:
            raise ValueError("a replicated store needs at least one replica")
        if not 0 <= quorum <= len(replicas):
            raise StorageError(
                f"replica quorum {quorum} is impossible with {len(replicas)} replica(s)"
            )
        urls = [primary.url, *(r.url for r in replicas)]
        if len(set(urls)) != len(urls):
            raise StorageError("the primary and the replicas must be different stores")
        self.primary = primary
        self.replicas = list(replicas)
        self.quorum = quorum
        self.pending = pending
        self.checksums = checksums
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._down_until: dict[str, float] = {}
        # Copies found wrong by a read: later reads of the key try them last, so a retried
        # download succeeds from a good copy until scrub mends the bad one.
        self._bad: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        # Replica writes of objects in memory run beside the primary's; sized for the pyramid
        # writer's threads.
        self._pool = ThreadPoolExecutor(
            max_workers=8 * (len(self.replicas) + 1), thread_name_prefix="replica"
        )

    @property
    def url(self) -> str:
        return self.primary.url

    @property
    def stores(self) -> list[ObjectStore]:
        return [self.primary, *self.replicas]

    def __repr__(self) -> str:
        return f"ReplicatedStore({self.primary!r}, {self.replicas!r}, quorum={self.quorum})"

    def replica(self, url: str) -> ObjectStore:
        for store in self.replicas:
            if store.url == url:
                return store
        raise StorageError(f"no replica {url} is configured")

    # ---- health --------------------------------------------------------------------------

    def available(self, store: ObjectStore) -> bool:
        with self._lock:
            return self._down_until.get(store.url, 0.0) <= self._clock()

    def _failed(self, store: ObjectStore, exc: BaseException) -> None:
        with self._lock:
            was_up = self._down_until.get(store.url, 0.0) <= self._clock()
            self._down_until[store.url] = self._clock() + self.retry_seconds
        if was_up:
            log.warning(
                "store %s failed, set aside for %.0fs: %s", store.url, self.retry_seconds, exc
            )

    def _worked(self, store: ObjectStore) -> None:
        with self._lock:
            if self._down_until.pop(store.url, None) is not None:
                log.info("store %s answers again", store.url)

    # ---- writing -------------------------------------------------------------------------

    # Keys are checked here, before any store sees them: a store refusing a caller's bad key
    # (InvalidKey is a StorageError) would otherwise count as that store failing, be set
    # aside, and have the key put on its to-do list.

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        validate_key(key)
        return self._write(key, lambda store: store.put_bytes(key, data))

    def put(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
        validate_key(key)
        if isinstance(stream, bytes | bytearray | memoryview):
            return self.put_bytes(key, bytes(stream))
        if isinstance(stream, list | tuple):
            # A list of blocks can be read by every store at once.
            blocks = list(stream)
            return self._write(key, lambda store: store.put(key, blocks))
        handles = _handles_of_their_own(stream, len(self.replicas))
        if handles is not None:
            # A file (a spooled upload) is read by every store through a handle of its own:
            # each sends it its own way (S3: one PUT signed with one hash pass) instead of
            # every store taking blocks from one reader, which costs each a second hash.
            own = {
                id(replica): handle for replica, handle in zip(self.replicas, handles, strict=True)
            }
            try:
                return self._write(
                    key,
                    lambda store: store.put(
                        key, stream if store is self.primary else own[id(store)]
                    ),
                )
            finally:
                for handle in handles:
                    handle.close()
        return self._write_stream(key, iter_stream(stream))

    def _write(self, key: str, write: Callable[[ObjectStore], StoredObject]) -> StoredObject:
        live = [r for r in self.replicas if self.available(r)]
        futures = {r.url: self._pool.submit(write, r) for r in live}
        try:
            stored = write(self.primary)
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        return self._settle(key, stored, futures)

    def _settle(
        self, key: str, stored: StoredObject, futures: dict[str, Future[StoredObject]]
    ) -> StoredObject:
        """Count the replicas that hold what the primary holds; put the others on the list."""
        holding = 0
        for replica in self.replicas:
            future = futures.get(replica.url)
            if future is None:
                self._missed(replica, stored, "replica was unavailable")
                continue
            try:
                copy = future.result()
            except StorageError as exc:
                self._failed(replica, exc)
                self._missed(replica, stored, str(exc))
                continue
            if copy.sha256 != stored.sha256 or copy.size != stored.size:
                self._missed(replica, stored, "replica stored different bytes")
                continue
            self._worked(replica)
            holding += 1
        if holding < self.quorum:
            raise QuorumNotReached(
                f"{key!r} is on the primary but only {holding} of {len(self.replicas)} "
                f"replica(s) hold it (quorum {self.quorum})"
            )
        return stored

    def _missed(self, replica: ObjectStore, stored: StoredObject, reason: str) -> None:
        if self.pending is None:
            log.warning(
                "replica %s misses %s (%s); scrub will find it", replica.url, stored.key, reason
            )
            return
        self.pending.record(
            PendingCopy(
                replica.url, stored.key, stored.sha256, stored.size, deleted=False, reason=reason
            )
        )

    def _write_stream(self, key: str, blocks: Iterator[bytes]) -> StoredObject:
        """Stream once from the caller into every store at once, each fed through a queue.

        Each store's write gets a thread of its own: a streamed write lasts as long as the
        caller's stream, and must not wait for a place in a pool that other writes hold.
        """
        live = [r for r in self.replicas if self.available(r)]
        feeds = [_Feed() for _ in range(len(live) + 1)]
        writers = ThreadPoolExecutor(len(feeds), thread_name_prefix="replica-stream")
        try:
            primary_future = writers.submit(self.primary.put, key, feeds[0])
            futures = {
                r.url: writers.submit(r.put, key, feed)
                for r, feed in zip(live, feeds[1:], strict=True)
            }
            everyone = [primary_future, *futures.values()]
            for feed, future in zip(feeds, everyone, strict=True):
                future.add_done_callback(feed.consumer_done)
            try:
                for block in blocks:
                    if primary_future.done():
                        # The primary gave up (its error is raised below): nobody gets a torso.
                        break
                    for feed in feeds:
                        feed.send(block)
            except BaseException as exc:
                # The caller's stream failed: every store abandons its write, the error goes back.
                for feed in feeds:
                    feed.fail(exc)
                wait(everyone)
                raise
            if primary_future.done() and primary_future.exception() is not None:
                for feed in feeds:
                    feed.fail(StorageError("the primary write failed"))
            else:
                for feed in feeds:
                    feed.finish()
            stored = primary_future.result()
            return self._settle(key, stored, futures)
        finally:
            writers.shutdown(wait=False)

    def delete(self, key: str) -> None:
        validate_key(key)
        live = [r for r in self.replicas if self.available(r)]
        futures = {r.url: self._pool.submit(r.delete, key) for r in live}
        self.primary.delete(key)
        for replica in self.replicas:
            future = futures.get(replica.url)
            try:
                if future is None:
                    raise StorageError("replica was unavailable")
                future.result()
            except StorageError as exc:
                if future is not None:
                    self._failed(replica, exc)
                if self.pending is not None:
                    self.pending.record(
                        PendingCopy(replica.url, key, None, None, deleted=True, reason=str(exc))
                    )

    # ---- reading -------------------------------------------------------------------------

    def _read_order(self, key: str | None = None) -> list[ObjectStore]:
        """Stores to read key from: healthy ones with no known-bad copy first, primary first."""
        with self._lock:
            bad = {url for url, k in self._bad if k == key} if key is not None else set()
        stores = self.stores
        first = [s for s in stores if self.available(s) and s.url not in bad]
        return first + [s for s in stores if s not in first]

    def _found_bad(self, store: ObjectStore, key: str) -> None:
        log.error("copy of %s on %s fails its sha256 check", key, store.url)
        with self._lock:
            self._bad[(store.url, key)] = None
            while len(self._bad) > _MAX_BAD_COPIES:
                self._bad.popitem(last=False)

    def _expected(self, key: str) -> str | None:
        if self.checksums is None:
            return None
        return self.checksums.expected(key, self)

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        validate_key(key)
        # Reads from the start may be the whole object (callers often pass its size as end).
        expected = self._expected(key) if start == 0 else None
        data, wrong, missing, errors = self._first_good(key, start, end, expected)
        if data is None and wrong and self.checksums is not None:
            # Every copy disagrees with the record: the record may be older than the object
            # (an image written again), so read it afresh before calling the copies wrong.
            self.checksums.forget(key)
            fresh = self._expected(key)
            if fresh != expected:
                data, wrong, missing, errors = self._first_good(key, start, end, fresh)
        for store in wrong:
            self._found_bad(store, key)
        if data is not None:
            return data
        self._no_copy(key, missing, len(wrong), errors)

    def _first_good(
        self, key: str, start: int, end: int | None, expected: str | None
    ) -> tuple[bytes | None, list[ObjectStore], int, list[str]]:
        """The first copy with the expected bytes; the copies that had others, how many lacked
        the key, and the errors of the stores that failed."""
        wrong: list[ObjectStore] = []
        missing = 0
        errors: list[str] = []
        for store in self._read_order(key):
            try:
                data = store.get_bytes(key, start, end)
            except ObjectNotFound:
                missing += 1
                continue
            except StorageError as exc:
                self._failed(store, exc)
                errors.append(str(exc))
                continue
            self._worked(store)
            if expected is not None and hashlib.sha256(data).hexdigest() != expected:
                if _partial(store, key, len(data), end):
                    return data, wrong, missing, errors
                wrong.append(store)
                continue
            return data, wrong, missing, errors
        return None, wrong, missing, errors

    def _no_copy(self, key: str, missing: int, corrupt: int, errors: list[str]) -> NoReturn:
        if corrupt:
            raise ChecksumMismatch(f"no copy of {key!r} matches its recorded sha256")
        if errors:
            raise StorageError(f"no store could read {key!r}: {errors[0]}")
        raise ObjectNotFound(key)

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        validate_key(key)
        expected = self._expected(key) if start == 0 else None
        stores = self._read_order(key)
        missing = 0
        errors: list[str] = []
        for index, store in enumerate(stores):
            try:
                blocks = store.open(key, start, end)
            except ObjectNotFound:
                missing += 1
                continue
            except StorageError as exc:
                self._failed(store, exc)
                errors.append(str(exc))
                continue
            return self._stream(key, start, end, expected, stores[index:], blocks)
        self._no_copy(key, missing, 0, errors)

    def _stream(
        self,
        key: str,
        start: int,
        end: int | None,
        expected: str | None,
        stores: list[ObjectStore],
        blocks: Iterator[bytes],
    ) -> Iterator[bytes]:
        """Yield the bytes, going on from the next store at the same offset if one fails
        mid-way. With an expected sha256 the last block is held back until the whole object
        is checked: a wrong copy ends in an error, never in a complete-looking wrong file, and
        an object that fits in one block is read again from the next store."""
        digest = hashlib.sha256()
        position = start
        held: bytes | None = None
        sent_any = False
        current = 0
        while True:
            try:
                for block in blocks:
                    position += len(block)
                    if expected is None:
                        yield block
                        continue
                    digest.update(block)
                    if held is not None:
                        sent_any = True
                        yield held
                    held = block
            except StorageError as exc:
                self._failed(stores[current], exc)
                current, blocks = self._reopen(key, stores, current + 1, position, end, exc)
                continue
            if (
                expected is None
                or digest.hexdigest() == expected
                or _partial(stores[current], key, position, end)
            ):
                if held is not None:
                    yield held
                return
            self._found_bad(stores[current], key)
            mismatch = ChecksumMismatch(f"copy of {key!r} does not match its recorded sha256")
            if sent_any:
                raise mismatch
            digest, position, held = hashlib.sha256(), start, None
            current, blocks = self._reopen(key, stores, current + 1, start, end, mismatch)

    def _reopen(
        self,
        key: str,
        stores: list[ObjectStore],
        first: int,
        offset: int,
        end: int | None,
        cause: StorageError,
    ) -> tuple[int, Iterator[bytes]]:
        for index in range(first, len(stores)):
            try:
                return index, stores[index].open(key, offset, end)
            except ObjectNotFound:
                continue
            except StorageError as exc:
                self._failed(stores[index], exc)
        raise cause

    def exists(self, key: str) -> bool:
        validate_key(key)
        return self._ask(lambda store: store.exists(key))

    def size(self, key: str) -> int:
        validate_key(key)
        return self._ask(lambda store: store.size(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return iter(self._ask(lambda store: list(store.list(prefix))))

    def _ask(self, question: Callable[[ObjectStore], T]) -> T:
        """The primary's answer; a replica's only when the primary cannot answer at all."""
        last: StorageError | None = None
        for store in self._read_order():
            try:
                answer = question(store)
            except ObjectNotFound:
                raise
            except StorageError as exc:
                self._failed(store, exc)
                last = exc
                continue
            self._worked(store)
            return answer
        assert last is not None
        raise last

    # ---- catching up ---------------------------------------------------------------------

    def catch_up(
        self, replica_url: str, key: str, *, sha256: str | None, size: int | None, deleted: bool
    ) -> str:
        """Bring one key on one replica in line with the primary; what was done, as a word.

        Raises StorageError when it cannot be done now (the replica or every source is down, or
        no copy has the recorded bytes): the entry then stays on the to-do list.
        """
        replica = self.replica(replica_url)
        if deleted:
            if self.primary.exists(key):
                return "kept"  # written again since it was deleted
            self._probe(replica, lambda: replica.delete(key))
            return "deleted"
        if sha256 is None or size is None:
            raise StorageError(f"no checksum recorded for {key!r}")
        target = StoredObject(key, size, sha256)
        if self._probe(replica, lambda: _holds(replica, target)):
            return "present"
        errors: list[str] = []
        seen = False
        for source in (s for s in self._read_order() if s is not replica):
            try:
                copy_verified(source, replica, target)
            except ObjectNotFound:
                continue
            except StorageError as exc:
                seen = seen or isinstance(exc, ChecksumMismatch)
                errors.append(str(exc))
                continue
            return "copied"
        if not errors:
            return "gone"  # no store holds the key any more: it was deleted since
        if seen:
            raise ChecksumMismatch(f"no copy of {key!r} matches its recorded sha256")
        raise StorageError(errors[0])

    def _probe(self, store: ObjectStore, action: Callable[[], T]) -> T:
        """Do something on a store, noting whether it answers."""
        try:
            result = action()
        except ObjectNotFound:
            raise
        except StorageError as exc:
            self._failed(store, exc)
            raise
        self._worked(store)
        return result

    # ---- presigned downloads -------------------------------------------------------------

    def presigned_get_url(
        self, key: str, expires_seconds: int, *, content_disposition: str | None = None
    ) -> str | None:
        if isinstance(self.primary, SupportsPresignedGet) and self.available(self.primary):
            return self.primary.presigned_get_url(
                key, expires_seconds, content_disposition=content_disposition
            )
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _partial(store: ObjectStore, key: str, read: int, end: int | None) -> bool:
    """Whether bytes [0, read) that missed the object's checksum were only part of it: a range
    that stopped short of the end, not a wrong copy."""
    if end is None or read < end:
        return False
    try:
        return store.size(key) > read
    except StorageError:
        return False


def _holds(store: ObjectStore, obj: StoredObject) -> bool:
    """Whether store has exactly obj's bytes (size first: reading a large object is costly)."""
    try:
        if store.size(obj.key) != obj.size:
            return False
        digest = hashlib.sha256()
        for block in store.open(obj.key):
            digest.update(block)
    except ObjectNotFound:
        return False
    return digest.hexdigest() == obj.sha256


def _handles_of_their_own(stream: BinaryIO | Iterable[bytes], count: int) -> list[BinaryIO] | None:
    """count new handles on the regular file stream reads (the same file, whatever its name
    now), each at stream's position with an offset of its own; None for any other stream."""
    if regular_file_left(stream) is None:
        return None
    assert isinstance(stream, io.BufferedReader | io.FileIO)
    fd, position = stream.fileno(), stream.tell()
    inode = os.fstat(fd).st_ino
    handles: list[BinaryIO] = []
    try:
        for _ in range(count):
            # /proc/self/fd opens the inode behind fd anew: its own offset (dup shares one).
            handle = open(f"/proc/self/fd/{fd}", "rb")  # noqa: SIM115 (closed by the caller)
            handles.append(handle)
            if os.fstat(handle.fileno()).st_ino != inode:
                raise OSError("not the same file")
            handle.seek(position)
    except OSError:
        for opened in handles:
            opened.close()
        return None
    return handles


class _Feed:
    """One store's side of a streamed write: blocks pass through a small queue."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_BLOCKS)
        self._closed = threading.Event()

    def send(self, block: bytes) -> None:
        deadline = time.monotonic() + _STALL_SECONDS
        while not self._closed.is_set():
            try:
                self._queue.put(block, timeout=0.1)
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    self.fail(StorageError("store stalled for a minute during a write"))
                    return

    def finish(self) -> None:
        self._put_final(self._END)

    def fail(self, exc: BaseException) -> None:
        self._put_final(exc)

    def _put_final(self, item: object) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def consumer_done(self, _future: Future[StoredObject]) -> None:
        """The consumer finished or failed: stop feeding it."""
        self._closed.set()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
