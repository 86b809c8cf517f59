"""The ObjectStore contract: one suite every store's tests subclass (as zarr's StoreTests).

A subclass overrides the `store` fixture (a fresh, empty store per test) and says whether the
store hands out presigned URLs. Every promise of `storage.base.ObjectStore` is pinned here once;
what only one store does (S3 multipart, local temporary files, replication) stays in its own
test module.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import zarr

from allmicro_data.storage import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StoredObject,
    read_suffix,
)
from allmicro_data.storage.base import (
    CHUNK_SIZE,
    SupportsDeferredSync,
    SupportsFileAdoption,
    SupportsLocalPaths,
    SupportsPresignedGet,
    SupportsReplicas,
    SupportsSuffixRead,
)
from allmicro_data.storage.zarr_adapter import ZarrObjectStore
from tests.conftest import TLS
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY

# Larger than the block size stores stream in, with an odd tail: ranges cross block boundaries.
LARGE = 3 * CHUNK_SIZE + 17
INVALID_KEYS = ["", "/abs", "a/../b", "../escape", "a//b", "a/", "a/./b", "sp ace", "é"]
INVALID_PREFIXES = ["/abs", "../x", "a//", "a/../b"]
# The optional capabilities of storage.base, which callers ask a store for instead of its class.
CAPABILITIES: tuple[type, ...] = (
    SupportsDeferredSync,
    SupportsFileAdoption,
    SupportsLocalPaths,
    SupportsPresignedGet,
    SupportsReplicas,
    SupportsSuffixRead,
)


class SourceBroke(Exception):
    """The caller's stream failing mid-write."""


def _blocks(data: bytes, sizes: tuple[int, ...] = (1000, CHUNK_SIZE + 5)) -> Iterator[bytes]:
    """data as blocks of uneven sizes (cycling through sizes), as a network source gives them."""
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        yield data[position : position + size]
        position, turn = position + size, turn + 1


def _stored(key: str, data: bytes) -> StoredObject:
    return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())


class ObjectStoreContract:
    """The behaviour every ObjectStore shares; subclass it and override `store`."""

    url_scheme: ClassVar[str]
    # Whether the store answers presigned_get_url with a URL (S3 as the primary) or not at all.
    presigns: ClassVar[bool] = False
    # The optional capabilities the store offers; each is tested below where it is offered.
    capabilities: ClassVar[frozenset[type]] = frozenset()

    @pytest.fixture
    def store(self) -> ObjectStore:
        raise NotImplementedError("a store's contract tests override the store fixture")

    def assert_holds(self, store: ObjectStore, key: str, data: bytes) -> None:
        """store has exactly data under key, by every way of reading it."""
        assert store.exists(key)
        assert store.size(key) == len(data)
        assert store.get_bytes(key) == data
        assert b"".join(store.open(key)) == data

    # ---- identity --------------------------------------------------------------------------

    def test_is_an_object_store_named_by_a_url_without_secrets(self, store: ObjectStore) -> None:
        assert isinstance(store, ObjectStore)
        assert urlsplit(store.url).scheme == self.url_scheme
        assert SECRET_KEY not in store.url and ACCESS_KEY not in store.url

    # ---- writing ---------------------------------------------------------------------------

    def test_put_streams_blocks_and_reports_their_size_and_sha256(self, store: ObjectStore) -> None:
        data = os.urandom(LARGE)
        assert store.put("raw/large", _blocks(data)) == _stored("raw/large", data)
        self.assert_holds(store, "raw/large", data)

    def test_put_takes_a_file_a_list_of_blocks_or_bytes_and_put_bytes_too(
        self, store: ObjectStore
    ) -> None:
        data = b"0123456789" * 100
        assert store.put("from/file", io.BytesIO(data)) == _stored("from/file", data)
        assert store.put("from/list", [data[:7], b"", data[7:]]) == _stored("from/list", data)
        # bytes are one block, not an iterable of integers.
        assert store.put("from/bytes", data) == _stored("from/bytes", data)  # type: ignore[arg-type]
        assert store.put_bytes("a-b_c/.zarray", data) == _stored("a-b_c/.zarray", data)
        for key in ("from/file", "from/list", "from/bytes", "a-b_c/.zarray"):
            self.assert_holds(store, key, data)

    def test_empty_objects_exist_and_read_as_empty(self, store: ObjectStore) -> None:
        empty = _stored("e", b"")
        assert store.put_bytes("e/bytes", b"") == StoredObject("e/bytes", 0, empty.sha256)
        assert store.put("e/blocks", iter([])) == StoredObject("e/blocks", 0, empty.sha256)
        assert store.put("e/file", io.BytesIO()) == StoredObject("e/file", 0, empty.sha256)
        for key in ("e/blocks", "e/bytes", "e/file"):
            self.assert_holds(store, key, b"")
            assert store.get_bytes(key, 0, 10) == b""
            assert list(store.open(key)) == []
        assert list(store.list("e/")) == ["e/blocks", "e/bytes", "e/file"]

    def test_a_write_replaces_the_whole_object(self, store: ObjectStore) -> None:
        store.put("k", _blocks(os.urandom(LARGE)))
        store.put_bytes("k", b"shorter")
        self.assert_holds(store, "k", b"shorter")
        assert store.put("k", [b"by ", b"put"]) == _stored("k", b"by put")
        self.assert_holds(store, "k", b"by put")
        assert list(store.list()) == ["k"]

    def test_a_failing_source_leaves_the_old_object_or_nothing(self, store: ObjectStore) -> None:
        store.put_bytes("raw/k", b"old")

        def broken() -> Iterator[bytes]:
            yield b"new bytes that never complete"
            raise SourceBroke

        class BrokenFile(io.RawIOBase):
            def read(self, n: int = -1) -> bytes:
                raise SourceBroke

        # The caller's own error comes back, not a storage error that hides it.
        for key in ("raw/k", "raw/other"):
            with pytest.raises(SourceBroke):
                store.put(key, broken())
            with pytest.raises(SourceBroke):
                store.put(key, BrokenFile())
        assert store.get_bytes("raw/k") == b"old"
        assert not store.exists("raw/other")
        assert list(store.list()) == ["raw/k"]

    def test_threads_writing_at_once_each_get_their_own_complete_object(
        self, store: ObjectStore
    ) -> None:
        payloads = {f"level/{i % 5}/{i}": os.urandom(1000 + i) for i in range(40)}
        with ThreadPoolExecutor(8) as pool:
            stored = list(pool.map(lambda item: store.put_bytes(*item), payloads.items()))
        assert stored == [_stored(key, data) for key, data in payloads.items()]
        assert all(store.get_bytes(key) == data for key, data in payloads.items())
        assert list(store.list()) == sorted(payloads)

    # ---- reading ---------------------------------------------------------------------------

    def test_ranges_read_like_a_file(self, store: ObjectStore) -> None:
        data = os.urandom(LARGE)
        store.put("r", _blocks(data))
        n = len(data)
        for start, end in [
            (0, 10),
            (10, 20),
            (CHUNK_SIZE - 3, CHUNK_SIZE + 3),  # across a block boundary
            (5, None),
            (2 * CHUNK_SIZE, None),
            (n - 3, n + 100),  # an end past the object stops at its end
            (n, None),  # from the end, and past it: empty, as from a file
            (n + 10, None),
            (5, 5),  # empty and reversed ranges
            (7, 3),
        ]:
            expected = data[start:end]
            assert store.get_bytes("r", start, end) == expected, (start, end)
            assert b"".join(store.open("r", start, end)) == expected, (start, end)
        for start, end in [(-1, None), (0, -1), (-5, -1)]:
            with pytest.raises(ValueError):
                store.get_bytes("r", start, end)
            with pytest.raises(ValueError):
                b"".join(store.open("r", start, end))

    def test_the_last_bytes_read_in_one_call(self, store: ObjectStore) -> None:
        data = os.urandom(LARGE)
        store.put("r", _blocks(data))
        store.put_bytes("empty", b"")
        for length in (1, 516, CHUNK_SIZE + 3, len(data), len(data) + 100):
            assert read_suffix(store, "r", length) == data[-length:], length
        assert read_suffix(store, "empty", 16) == b""
        with pytest.raises(ObjectNotFound):
            read_suffix(store, "no/such", 16)
        if isinstance(store, SupportsSuffixRead):
            with pytest.raises(ValueError):
                store.get_suffix("r", 0)

    def test_missing_objects_raise_object_not_found(self, store: ObjectStore) -> None:
        assert not store.exists("no/such")
        with pytest.raises(ObjectNotFound) as missing:
            store.get_bytes("no/such")
        assert isinstance(missing.value, KeyError) and "no/such" in str(missing.value)
        # Also when the range asked for holds no bytes.
        with pytest.raises(ObjectNotFound):
            store.get_bytes("no/such", 4, 4)
        # open fails at the call, not at the first block.
        with pytest.raises(ObjectNotFound):
            store.open("no/such")
        with pytest.raises(ObjectNotFound):
            store.size("no/such")

    def test_a_prefix_of_other_keys_is_not_an_object(self, store: ObjectStore) -> None:
        store.put_bytes("dir/child", b"1")
        # Nor is a key below an object: a file holds no other files.
        for key in ("dir", "dir/child/below"):
            assert not store.exists(key)
            for read in (store.size, store.get_bytes, store.open):
                with pytest.raises(ObjectNotFound):
                    read(key)
            store.delete(key)  # no object there: nothing happens, the others stay
        assert store.get_bytes("dir/child") == b"1"

    # ---- deleting and listing --------------------------------------------------------------

    def test_delete_removes_one_object_and_is_idempotent(self, store: ObjectStore) -> None:
        store.put_bytes("x/y/z", b"1")
        store.put_bytes("x/y/sibling", b"2")
        store.delete("x/y/z")
        store.delete("x/y/z")
        store.delete("never/written")
        assert not store.exists("x/y/z")
        with pytest.raises(ObjectNotFound):
            store.get_bytes("x/y/z")
        assert list(store.list()) == ["x/y/sibling"]
        store.put_bytes("x/y/z", b"again")
        assert store.get_bytes("x/y/z") == b"again"

    def test_listing_is_in_byte_order_and_filtered_by_prefix(self, store: ObjectStore) -> None:
        keys = ["images/2/a", "images/1/b", "images/10/c", "images/1/a", "imagesX", "raw/x"]
        keys += ["a/1", "a.x", "a-b", "B"]
        for key in keys:
            store.put_bytes(key, key.encode())
        assert list(store.list()) == sorted(keys)
        assert list(store.list("images/1/")) == ["images/1/a", "images/1/b"]
        # A prefix is a string prefix, not a directory: it matches partial names too.
        assert list(store.list("images/1")) == ["images/1/a", "images/1/b", "images/10/c"]
        assert list(store.list("images")) == sorted(keys[:5])
        assert list(store.list("raw/x")) == ["raw/x"]
        assert list(store.list("raw/x/")) == []
        assert list(store.list("nothing/")) == []

    # ---- keys ------------------------------------------------------------------------------

    def test_every_operation_refuses_an_unsafe_key(self, store: ObjectStore) -> None:
        for key in INVALID_KEYS:
            calls: list[tuple[Callable[..., object], tuple[object, ...]]] = [
                (store.put_bytes, (b"1",)),
                (store.put, ([b"1"],)),
                (store.put, (iter([b"1"]),)),
                (store.get_bytes, ()),
                (store.open, ()),
                (store.size, ()),
                (store.exists, ()),
                (store.delete, ()),
            ]
            for operation, args in calls:
                with pytest.raises(InvalidKey):
                    operation(key, *args)
        for prefix in INVALID_PREFIXES:
            with pytest.raises(InvalidKey):
                list(store.list(prefix))
        assert list(store.list()) == []

    # ---- through zarr and to browsers ------------------------------------------------------

    def test_zarr_reads_and_writes_through_the_store(self, store: ObjectStore) -> None:
        data = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
        adapter = ZarrObjectStore(store, "images/1/image.ome.zarr")
        array = zarr.create_array(
            adapter, shape=data.shape, dtype=data.dtype, chunks=(16, 16), zarr_format=2
        )
        array[:] = data  # zarr writes the chunks concurrently
        keys = list(store.list("images/1/image.ome.zarr/"))
        assert "images/1/image.ome.zarr/.zarray" in keys
        assert len([k for k in keys if not k.rsplit("/", 1)[1].startswith(".")]) == 4 * 3
        again = zarr.open_array(ZarrObjectStore(store, "images/1/image.ome.zarr"), mode="r")
        np.testing.assert_array_equal(again[:], data)
        read_only = ZarrObjectStore(store, "images/1/image.ome.zarr", read_only=True)
        region = zarr.open_array(read_only, mode="r")[10:20, 5:9]
        np.testing.assert_array_equal(region, data[10:20, 5:9])

    def test_presigned_urls_serve_the_object_where_the_store_makes_them(
        self, store: ObjectStore
    ) -> None:
        store.put_bytes("raw/doc", b"presigned bytes")
        if not self.presigns:
            # Callers ask the store, never its class: no URL means "serve the bytes yourself".
            assert not isinstance(store, SupportsPresignedGet) or (
                store.presigned_get_url("raw/doc", 60) is None
            )
            return
        assert isinstance(store, SupportsPresignedGet)
        disposition = "attachment; filename=\"scan e.tif\"; filename*=UTF-8''scan%20%C3%A9.tif"
        url = store.presigned_get_url("raw/doc", 60, content_disposition=disposition)
        assert url is not None and SECRET_KEY not in url
        response = httpx.get(url, verify=TLS)
        assert response.status_code == 200 and response.content == b"presigned bytes"
        assert response.headers.get("content-disposition") == disposition
        # The same path without the signature is refused.
        assert httpx.get(url.split("?")[0], verify=TLS).status_code == 403

    # ---- optional capabilities -------------------------------------------------------------

    def test_offers_exactly_its_capabilities(self, store: ObjectStore) -> None:
        assert {c for c in CAPABILITIES if isinstance(store, c)} == set(self.capabilities)

    def test_a_local_path_is_the_file_readers_open_in_place(self, store: ObjectStore) -> None:
        if not isinstance(store, SupportsLocalPaths):
            return
        store.put_bytes("raw/doc", b"local bytes")
        assert store.local_path("raw/doc").read_bytes() == b"local bytes"
        with pytest.raises(InvalidKey):
            store.local_path("a/../../escape")

    def test_an_adopted_file_becomes_the_object_by_rename(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        if not isinstance(store, SupportsFileAdoption):
            return
        spooled = tmp_path / "spooled-upload"
        spooled.write_bytes(b"adopted bytes")
        inode = spooled.stat().st_ino
        assert store.adopt_file("raw/adopted", spooled)
        self.assert_holds(store, "raw/adopted", b"adopted bytes")
        assert not spooled.exists()
        if isinstance(store, SupportsLocalPaths):
            assert store.local_path("raw/adopted").stat().st_ino == inode  # renamed, not copied
        # What cannot be renamed in is refused, and the caller copies it instead.
        assert not store.adopt_file("raw/other", tmp_path / "gone")
        assert not store.exists("raw/other")

    def test_unsynced_writes_are_visible_at_once_and_made_durable_by_one_sync(
        self, store: ObjectStore
    ) -> None:
        if not isinstance(store, SupportsDeferredSync):
            return
        fast = store.unsynced()
        keys = [f"images/x/0/{i}" for i in range(3)]
        for key in keys:
            assert fast.put_bytes(key, key.encode()) == _stored(key, key.encode())
        for key in keys:
            self.assert_holds(store, key, key.encode())
        store.sync(keys)
        with pytest.raises(StorageError):
            store.sync(["never/written"])

    def test_replicas_are_named_primary_first_and_caught_up_one_key_at_a_time(
        self, store: ObjectStore
    ) -> None:
        if not isinstance(store, SupportsReplicas):
            return
        assert store.stores[0].url == store.url
        assert store.stores[1:] == store.replicas
        assert all(store.available(s) for s in store.stores)
        assert 0 <= store.quorum <= len(store.replicas)
        stored = store.put_bytes("raw/doc", b"replicated bytes")
        replica = store.replicas[0]
        replica.delete("raw/doc")
        done = store.catch_up(
            replica.url, "raw/doc", sha256=stored.sha256, size=stored.size, deleted=False
        )
        assert done == "copied" and replica.get_bytes("raw/doc") == b"replicated bytes"
