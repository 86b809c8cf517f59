"""LocalStore keeps the ObjectStore promises: atomic writes, sha256 on write, ranges, listing, safe keys."""

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
    ObjectNotFound,
    ObjectStore,
    StorageError,
    open_store,
)
from allmicro_data.storage.zarr_adapter import ZarrObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


def test_put_reports_size_and_sha256_and_reads_back(store: LocalStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    stored = store.put("raw/abc", iter([data[:1000], data[1000:]]))
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("raw/abc") == data
    assert b"".join(store.open("raw/abc")) == data
    assert store.size("raw/abc") == len(data)
    assert store.exists("raw/abc")
    assert isinstance(store, ObjectStore)


def test_put_bytes_records_sha256_unless_checksums_are_off(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    recorded = LocalStore(tmp_path / "server").put_bytes("images/a/0/0", data)
    assert recorded.sha256 == hashlib.sha256(data).hexdigest()
    scratch = LocalStore(tmp_path / "convert", durable=False, checksums=False)
    unrecorded = scratch.put_bytes("0/0", data)
    assert (unrecorded.size, unrecorded.sha256) == (len(data), "")
    assert scratch.get_bytes("0/0") == data


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


def test_ranges(store: LocalStore) -> None:
    data = bytes(range(256)) * 10
    store.put_bytes("a/b", data)
    assert store.get_bytes("a/b", 10, 20) == data[10:20]
    assert b"".join(store.open("a/b", 2000)) == data[2000:]
    assert b"".join(store.open("a/b", 5, 5)) == b""
    assert store.get_bytes("a/b", 2500, 3000) == data[2500:]


def test_failed_write_leaves_nothing_under_the_key(store: LocalStore) -> None:
    store.put_bytes("raw/k", b"old")

    def broken() -> Iterator[bytes]:
        yield b"new bytes that never complete"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put("raw/k", broken())
    with pytest.raises(ConnectionError):
        store.put("raw/other", broken())
    assert store.get_bytes("raw/k") == b"old"
    assert not store.exists("raw/other")
    # No temporary files remain, and none are listed.
    assert list(store.list()) == ["raw/k"]
    leftovers = [p for p in store.root.rglob("*") if p.is_file()]
    assert leftovers == [store.root / "raw" / "k"]


def test_listing_is_sorted_and_filtered_by_prefix(store: LocalStore) -> None:
    for key in ("images/2/a", "images/1/b", "images/1/a", "raw/x", "imagesX"):
        store.put_bytes(key, b"1")
    assert list(store.list("images/1/")) == ["images/1/a", "images/1/b"]
    assert list(store.list("images")) == ["images/1/a", "images/1/b", "images/2/a", "imagesX"]
    assert len(list(store.list())) == 5


def test_delete_is_idempotent_and_missing_reads_raise(store: LocalStore) -> None:
    store.put_bytes("x/y/z", b"1")
    store.delete("x/y/z")
    store.delete("x/y/z")
    assert not store.exists("x/y/z")
    assert not (store.root / "x").exists()
    with pytest.raises(ObjectNotFound):
        store.get_bytes("x/y/z")
    with pytest.raises(ObjectNotFound):
        store.open("nothing")
    with pytest.raises(ObjectNotFound):
        store.size("nothing")
    store.put_bytes("prefix/object", b"1")
    with pytest.raises(ObjectNotFound):
        store.size("prefix")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("prefix")


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "../escape", "a//b", "a/", "a/./b", "sp ace", ".allmicro-tmp-x"]
)
def test_unsafe_keys_are_refused(store: LocalStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"1")


def test_open_store_by_url(tmp_path: Path) -> None:
    store = open_store((tmp_path / "s").as_uri())
    assert isinstance(store, LocalStore)
    assert store.url == (tmp_path / "s").as_uri()


def test_zarr_reads_and_writes_through_the_store(store: LocalStore) -> None:
    """Zarr keys land as objects below the prefix, readable with zarr directly from the root."""
    data = np.arange(100 * 70, dtype=np.uint16).reshape(100, 70)
    adapter = ZarrObjectStore(store, "images/1/image.ome.zarr")
    array = zarr.create_array(
        adapter, shape=data.shape, dtype=data.dtype, chunks=(32, 32), zarr_format=2
    )
    array[:] = data
    keys = list(store.list("images/1/image.ome.zarr/"))
    assert "images/1/image.ome.zarr/.zarray" in keys
    assert len([k for k in keys if not k.rsplit("/", 1)[1].startswith(".")]) == 4 * 3
    on_disk = zarr.open_array(str(store.root / "images/1/image.ome.zarr"), mode="r")
    np.testing.assert_array_equal(on_disk[:], data)
    read_only = ZarrObjectStore(store, "images/1/image.ome.zarr", read_only=True)
    np.testing.assert_array_equal(
        zarr.open_array(read_only, mode="r")[10:20, 5:9], data[10:20, 5:9]
    )


def test_threads_writing_at_once_each_get_their_own_complete_object(store: LocalStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    payloads = {f"level/{i % 7}/{i}": os.urandom(1000 + i) for i in range(200)}
    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(lambda item: store.put_bytes(*item), payloads.items()))
    for obj, (key, data) in zip(stored, payloads.items(), strict=True):
        assert obj.key == key and obj.size == len(data)
        assert obj.sha256 == hashlib.sha256(data).hexdigest()
        assert store.get_bytes(key) == data
    assert sorted(store.list()) == sorted(payloads)
    assert sorted(p for p in store.root.rglob("*") if p.is_file()) == sorted(
        store.root / key for key in payloads
    )


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
