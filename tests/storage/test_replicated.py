"""ReplicatedStore: the ObjectStore contract over local and S3 stores; quorum, the to-do list, reads that survive bad copies, catch-up."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from allmicro_data.fixity import ManifestChecksums, write_image_manifest
from allmicro_data.object_keys import original_key, pyramid_key
from allmicro_data.storage import (
    ChecksumMismatch,
    InvalidKey,
    LocalStore,
    ObjectStore,
    PendingCopy,
    QuorumNotReached,
    ReplicatedStore,
    S3Store,
    StorageError,
    StoredObject,
    SupportsPresignedGet,
    SupportsReplicas,
)
from allmicro_data.storage.checksums import CopyState, scrub_object
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, SeaweedServer
from tests.storage.store_contract import ObjectStoreContract


class ToDoList:
    """The to-do list as a plain list (the catalogue one is tested with the server)."""

    def __init__(self) -> None:
        self.entries: list[PendingCopy] = []

    def record(self, missed: PendingCopy) -> None:
        self.entries.append(missed)


class Switchable(LocalStore):
    """A local store that can be switched off, failing like an unreachable server."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StorageError(f"{self.url} is down")

    def put(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
        self._check()
        return super().put(key, stream)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        self._check()
        return super().put_bytes(key, data)

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        self._check()
        return super().open(key, start, end)

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._check()
        return super().get_bytes(key, start, end)

    def size(self, key: str) -> int:
        self._check()
        return super().size(key)

    def exists(self, key: str) -> bool:
        self._check()
        return super().exists(key)

    def delete(self, key: str) -> None:
        self._check()
        super().delete(key)


def _replicated_pair(primary: ObjectStore, replica: ObjectStore) -> Iterator[ReplicatedStore]:
    """A primary and one replica as the server opens them; after the test, the replica holds
    exactly what the primary holds and nothing went on the to-do list."""
    todo = ToDoList()
    store = ReplicatedStore(
        primary, [replica], quorum=1, pending=todo, checksums=ManifestChecksums()
    )
    yield store
    store.close()
    assert todo.entries == []
    keys = list(primary.list())
    assert list(replica.list()) == keys
    assert all(replica.get_bytes(key) == primary.get_bytes(key) for key in keys)


class TestReplicatedLocalStoresContract(ObjectStoreContract):
    url_scheme = "file"
    # Never local paths, even over local stores: a read may have to come from a replica.
    capabilities = frozenset({SupportsReplicas, SupportsPresignedGet})

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ReplicatedStore]:
        yield from _replicated_pair(LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b"))


class TestReplicatedLocalPrimaryS3ReplicaContract(ObjectStoreContract):
    url_scheme = "file"
    capabilities = frozenset({SupportsReplicas, SupportsPresignedGet})

    @pytest.fixture
    def store(
        self, tmp_path: Path, seaweed: SeaweedServer, prefix: str
    ) -> Iterator[ReplicatedStore]:
        replica = S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY, check=False)
        yield from _replicated_pair(LocalStore(tmp_path / "a"), replica)


class TestReplicatedS3PrimaryLocalReplicaContract(ObjectStoreContract):
    url_scheme = "s3"
    presigns = True  # the primary's URLs
    capabilities = frozenset({SupportsReplicas, SupportsPresignedGet})

    @pytest.fixture
    def store(
        self, tmp_path: Path, seaweed: SeaweedServer, prefix: str
    ) -> Iterator[ReplicatedStore]:
        primary = S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)
        yield from _replicated_pair(primary, LocalStore(tmp_path / "b"))


@pytest.fixture
def stores(tmp_path: Path) -> list[Switchable]:
    return [Switchable(tmp_path / name) for name in ("primary", "site-b", "site-c")]


def replicated(stores: list[Switchable], quorum: int = 1, **kw: Any) -> ReplicatedStore:
    return ReplicatedStore(stores[0], stores[1:], quorum=quorum, **kw)


def test_a_down_replica_goes_on_the_to_do_list_and_the_quorum_decides(
    stores: list[Switchable],
) -> None:
    todo = ToDoList()
    store = replicated(stores, quorum=1, pending=todo)
    stores[1].down = True
    stored = store.put_bytes("images/a/0/0", b"chunk")
    assert [(e.replica_url, e.key, e.sha256) for e in todo.entries] == [
        (stores[1].url, "images/a/0/0", stored.sha256)
    ]
    # Set aside: the next write does not wait for it again, but is still remembered.
    store.put_bytes("images/a/0/1", b"chunk")
    assert len(todo.entries) == 2 and not store.available(stores[1])
    stores[2].down = True
    with pytest.raises(QuorumNotReached):
        store.put_bytes("images/a/0/2", b"chunk")
    # The primary holds it and both replicas will get it from the list.
    assert stores[0].get_bytes("images/a/0/2") == b"chunk"
    assert {e.replica_url for e in todo.entries[2:]} == {stores[1].url, stores[2].url}


def test_the_primary_must_hold_every_write(stores: list[Switchable]) -> None:
    store = replicated(stores, quorum=0, pending=ToDoList())
    stores[0].down = True
    with pytest.raises(StorageError):
        store.put_bytes("k", b"v")
    with pytest.raises(StorageError):
        store.put("k", iter([b"v" * 100]))


def test_an_unsafe_key_is_the_callers_error_and_sets_no_store_aside(
    stores: list[Switchable],
) -> None:
    todo = ToDoList()
    store = replicated(stores, pending=todo)
    for operation in (store.get_bytes, store.exists, store.delete, store.size):
        with pytest.raises(InvalidKey):
            operation("../escape")
    assert all(store.available(s) for s in stores) and todo.entries == []


def test_a_failing_source_stream_propagates_and_no_store_keeps_a_torso(
    stores: list[Switchable],
) -> None:
    class SourceBroke(Exception):
        pass

    def blocks() -> Iterator[bytes]:
        yield b"x" * (1 << 20)
        raise SourceBroke

    store = replicated(stores, pending=ToDoList())
    with pytest.raises(SourceBroke):
        store.put("raw/x", blocks())
    assert not any(s.exists("raw/x") for s in stores)


def test_reads_fall_back_when_the_primary_fails_lacks_or_corrupts_a_copy(
    stores: list[Switchable],
) -> None:
    store = replicated(stores, checksums=ManifestChecksums())
    data = b"original bytes"
    key = original_key(hashlib.sha256(data).hexdigest())
    store.put_bytes(key, data)
    stores[0].put_bytes(key, b"rotten bytes!!")
    assert store.get_bytes(key) == data
    assert b"".join(store.open(key)) == data
    # Callers that pass the size as the end read the whole object too, and are checked.
    assert b"".join(store.open(key, 0, len(data))) == data
    assert store.get_bytes(key, 0, 8) == data[:8]
    stores[0].delete(key)
    assert store.get_bytes(key) == data
    stores[0].down = True
    assert b"".join(store.open(key)) == data
    assert store.exists(key)


def test_pyramid_objects_are_checked_against_their_manifest(stores: list[Switchable]) -> None:
    store = replicated(stores, checksums=ManifestChecksums())
    chunk = store.put_bytes(f"{pyramid_key('i1')}/0/0/0", b"good chunk")
    write_image_manifest(store, "i1", [chunk])
    stores[0].put_bytes(chunk.key, b"evil chunk")
    assert store.get_bytes(chunk.key) == b"good chunk"
    stores[1].put_bytes(chunk.key, b"evil chunk")
    stores[2].put_bytes(chunk.key, b"evil chunk")
    with pytest.raises(ChecksumMismatch):
        store.get_bytes(chunk.key)


def test_a_large_wrong_copy_ends_in_an_error_never_a_complete_wrong_file(
    stores: list[Switchable],
) -> None:
    store = replicated(stores, checksums=ManifestChecksums())
    data = os.urandom(3 << 20)
    key = original_key(hashlib.sha256(data).hexdigest())
    store.put_bytes(key, data)
    stores[0].put_bytes(key, data[:-1] + b"\0")
    received = bytearray()
    with pytest.raises(ChecksumMismatch):
        for block in store.open(key):
            received += block
    assert len(received) < len(data)
    # The bad copy is remembered: the retry streams from a good one.
    assert b"".join(store.open(key)) == data


def test_catch_up_copies_verified_bytes_and_applies_deletes(stores: list[Switchable]) -> None:
    todo = ToDoList()
    store = replicated(stores, quorum=0, pending=todo)
    stores[1].down = True
    stored = store.put_bytes("images/a/0/0", b"chunk")
    store.delete("images/a/old")
    with pytest.raises(StorageError):
        store.catch_up(stores[1].url, stored.key, sha256=stored.sha256, size=5, deleted=False)
    stores[1].down = False
    stores[1].put_bytes("images/a/old", b"stale")
    outcomes = [
        store.catch_up(e.replica_url, e.key, sha256=e.sha256, size=e.size, deleted=e.deleted)
        for e in todo.entries
        if e.replica_url == stores[1].url
    ]
    assert outcomes == ["copied", "deleted"]
    assert stores[1].get_bytes("images/a/0/0") == b"chunk"
    assert not stores[1].exists("images/a/old")
    assert (
        store.catch_up(stores[1].url, stored.key, sha256=stored.sha256, size=5, deleted=False)
        == "present"
    )
    # A primary copy that rotted meanwhile is not spread: the good replica serves as source.
    stores[1].delete(stored.key)
    stores[0].put_bytes(stored.key, b"rotten")
    assert (
        store.catch_up(stores[1].url, stored.key, sha256=stored.sha256, size=5, deleted=False)
        == "copied"
    )
    assert stores[1].get_bytes(stored.key) == b"chunk"


def test_scrub_object_repairs_from_a_checked_copy_and_never_from_a_bad_one(
    stores: list[Switchable],
) -> None:
    obj = StoredObject("k", 5, hashlib.sha256(b"right").hexdigest())
    stores[0].put_bytes("k", b"right")
    stores[1].put_bytes("k", b"wrong")
    report = scrub_object(obj, stores, repair=True)
    assert report.states == {
        stores[0].url: CopyState.OK,
        stores[1].url: CopyState.CORRUPT,
        stores[2].url: CopyState.MISSING,
    }
    assert sorted(report.repaired) == sorted([stores[1].url, stores[2].url])
    assert all(s.get_bytes("k") == b"right" for s in stores)
    for s in stores:
        s.put_bytes("k", b"wrong")
    report = scrub_object(obj, stores, repair=True)
    assert report.unrecoverable and not report.repaired
    assert all(s.get_bytes("k") == b"wrong" for s in stores)
    stores[2].down = True
    report = scrub_object(obj, stores, repair=False)
    assert report.states[stores[2].url] is CopyState.UNREACHABLE and not report.unrecoverable


def test_many_streamed_writes_at_once_do_not_wait_for_each_other(
    stores: list[Switchable],
) -> None:
    store = replicated(stores, pending=ToDoList())
    payloads = {f"raw/{i}": os.urandom((2 << 20) + i) for i in range(16)}
    with ThreadPoolExecutor(16) as pool:
        stored = list(pool.map(lambda kv: store.put(kv[0], io.BytesIO(kv[1])), payloads.items()))
    assert [o.sha256 for o in stored] == [hashlib.sha256(v).hexdigest() for v in payloads.values()]
    for s in stores:
        assert all(s.get_bytes(k) == v for k, v in payloads.items())


def test_a_file_is_read_by_every_store_through_a_handle_of_its_own(tmp_path: Path) -> None:
    """A spooled upload goes to each store as a file it reads itself (S3 then sends it in one
    signed PUT), from the caller's position, not as blocks every store takes from one reader."""
    given: dict[str, object] = {}

    class Recording(Switchable):
        def put(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
            given[self.url] = stream
            return super().put(key, stream)

    stores = [Recording(tmp_path / name) for name in ("primary", "site-b", "site-c")]
    source = tmp_path / "spooled"
    data = os.urandom(3 << 20)
    source.write_bytes(b"header" + data)
    store = ReplicatedStore(stores[0], stores[1:], quorum=2, pending=ToDoList())
    with source.open("rb") as handle:
        handle.seek(len(b"header"))
        stored = store.put("raw/file", handle)
        assert given[stores[0].url] is handle
    handles = [given[s.url] for s in stores]
    assert len({id(h) for h in handles}) == 3
    assert all(isinstance(h, io.BufferedReader) and h.closed for h in handles[1:])
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert all(s.get_bytes("raw/file") == data for s in stores)
