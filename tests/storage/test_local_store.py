"""LocalStore: the ObjectStore contract, plus what only files do (temporary files, directories, modes)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from allmicro_data.storage import (
    InvalidKey,
    LocalStore,
    StorageError,
    SupportsDeferredSync,
    SupportsFileAdoption,
    SupportsLocalPaths,
    open_store,
)
from allmicro_data.storage.zarr_adapter import ZarrObjectStore
from tests.storage.store_contract import ObjectStoreContract


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


class TestLocalStoreContract(ObjectStoreContract):
    url_scheme = "file"
    capabilities = frozenset({SupportsLocalPaths, SupportsFileAdoption, SupportsDeferredSync})

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "objects")


def test_put_bytes_records_sha256_unless_checksums_are_off(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    recorded = LocalStore(tmp_path / "server").put_bytes("images/a/0/0", data)
    assert recorded.sha256 == hashlib.sha256(data).hexdigest()
    scratch = LocalStore(tmp_path / "convert", durable=False, checksums=False)
    unrecorded = scratch.put_bytes("0/0", data)
    assert (unrecorded.size, unrecorded.sha256) == (len(data), "")
    assert scratch.get_bytes("0/0") == data
    # A shard goes out as its parts, through put: not hashed either.
    parts = [data[:1000], data[1000:]]
    assert LocalStore(tmp_path / "server").put("s/0", iter(parts)).sha256 == recorded.sha256
    streamed = scratch.put("0/1", iter(parts))
    assert (streamed.size, streamed.sha256) == (len(data), "")
    assert scratch.get_bytes("0/1") == data


def test_unsynced_writes_wait_for_the_disk_only_at_the_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "objects")
    synced: list[int] = []
    fsync = os.fsync

    def counted(fd: int) -> None:
        synced.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)
    keys = [f"images/x/0/{i}" for i in range(5)] + ["images/x/1/0"]
    fast = store.unsynced()
    for key in keys:
        fast.put_bytes(key, b"chunk")
    assert synced == []
    store.sync(keys)
    assert len(synced) == len(keys) + 2  # every file, then each of its two directories once
    # The store itself still waits for every write; a scratch store never does.
    store.put_bytes("raw/doc", b"durable")
    assert len(synced) == len(keys) + 2 + 2  # the file and its directory
    scratch = LocalStore(tmp_path / "scratch", durable=False)
    assert scratch.unsynced() is scratch
    scratch.put_bytes("a/b", b"x")
    scratch.sync(["a/b"])
    assert len(synced) == len(keys) + 4


def test_staging_store_writes_in_place_and_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    staging = LocalStore(tmp_path / "staging", durable=False, checksums=False, atomic=False)
    staging.put_bytes("0/0/0", b"chunk")
    staging.put("0/0/1", iter([b"two ", b"blocks"]))
    staging.put_bytes("0/0/0", b"again")  # rewritten whole, not appended
    assert staging.get_bytes("0/0/0") == b"again"
    assert staging.get_bytes("0/0/1") == b"two blocks"
    # No temporary files on the way: every file in the directory is an object.
    assert sorted(p.name for p in (tmp_path / "staging" / "0" / "0").iterdir()) == ["0", "1"]

    def broken() -> Iterator[bytes]:
        yield b"half"
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        staging.put("0/0/2", broken())
    assert not staging.exists("0/0/2")


def test_a_failed_write_leaves_no_temporary_file_behind(store: LocalStore) -> None:
    store.put_bytes("raw/k", b"old")

    def broken() -> Iterator[bytes]:
        yield b"new bytes that never complete"
        raise ConnectionError("client went away")

    for key in ("raw/k", "raw/other"):
        with pytest.raises(ConnectionError):
            store.put(key, broken())
    leftovers = [p for p in store.root.rglob("*") if p.is_file()]
    assert leftovers == [store.root / "raw" / "k"]


def test_delete_prunes_the_directories_it_empties(store: LocalStore) -> None:
    store.put_bytes("x/y/z", b"1")
    store.put_bytes("x/other", b"1")
    store.delete("x/y/z")
    assert not (store.root / "x" / "y").exists() and (store.root / "x").is_dir()
    store.delete("x/other")
    assert not (store.root / "x").exists() and store.root.is_dir()


@pytest.mark.parametrize("key", [".allmicro-tmp-x", "raw/.allmicro-tmp-1-2"])
def test_temporary_file_names_are_never_keys(store: LocalStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"1")
    with pytest.raises(InvalidKey):
        store.get_bytes(key)


def test_open_store_by_url(tmp_path: Path) -> None:
    store = open_store((tmp_path / "s").as_uri())
    assert isinstance(store, LocalStore)
    assert store.url == (tmp_path / "s").as_uri()


def test_zarr_objects_are_files_zarr_opens_directly(store: LocalStore) -> None:
    """Zarr keys land as files below the root: zarr reads them without the store."""
    data = np.arange(100 * 70, dtype=np.uint16).reshape(100, 70)
    adapter = ZarrObjectStore(store, "images/1/image.ome.zarr")
    array = zarr.create_array(
        adapter, shape=data.shape, dtype=data.dtype, chunks=(32, 32), zarr_format=2
    )
    array[:] = data
    on_disk = zarr.open_array(str(store.root / "images/1/image.ome.zarr"), mode="r")
    np.testing.assert_array_equal(on_disk[:], data)


def test_a_temporary_file_left_by_a_killed_writer_is_never_reused(store: LocalStore) -> None:
    from allmicro_data.storage import local

    store.put_bytes("raw/first", b"1")
    # A process with this pid died mid-write at the next temporary names.
    upcoming = next(local._TMP_COUNTER) + 1
    for n in range(upcoming, upcoming + 3):
        (store.root / "raw" / f"{local.TMP_PREFIX}{os.getpid()}-{n}").write_bytes(b"stale")
    stored = store.put_bytes("raw/second", b"fresh")
    assert store.get_bytes("raw/second") == b"fresh"
    assert stored.sha256 == hashlib.sha256(b"fresh").hexdigest()
    stale = [p for p in (store.root / "raw").iterdir() if p.name.startswith(local.TMP_PREFIX)]
    assert len(stale) == 3 and all(p.read_bytes() == b"stale" for p in stale)
    assert list(store.list()) == ["raw/first", "raw/second"]


def test_a_write_that_cannot_create_its_directory_is_a_storage_error(store: LocalStore) -> None:
    store.put_bytes("blocker", b"a file where a directory is needed")
    with pytest.raises(StorageError):
        store.put_bytes("blocker/child", b"1")
    with pytest.raises(StorageError):
        store.put("blocker/child", [b"1"])
