"""S3Store against a real SeaweedFS server: the ObjectStore contract, multipart, errors, presigning."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator

import httpx
import minio.api
import numpy as np
import pytest
import zarr

from allmicro_data.storage import (
    InvalidKey,
    ObjectNotFound,
    S3Store,
    StorageError,
    StoredObject,
    open_store,
)
from allmicro_data.storage.s3 import PART_SIZE, S3Location
from allmicro_data.storage.zarr_adapter import ZarrObjectStore
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, SeaweedServer


@pytest.fixture
def store(seaweed: SeaweedServer, prefix: str) -> S3Store:
    return S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)


def test_put_reports_size_and_sha256_and_reads_back(store: S3Store) -> None:
    stored = store.put_bytes("a/b.bin", b"hello world")
    assert (stored.size, stored.sha256) == (11, hashlib.sha256(b"hello world").hexdigest())
    assert store.get_bytes("a/b.bin") == b"hello world"
    assert b"".join(store.open("a/b.bin")) == b"hello world"
    assert store.size("a/b.bin") == 11
    assert store.exists("a/b.bin") and not store.exists("a/c.bin")


def test_ranged_reads_match_a_file(store: S3Store) -> None:
    store.put_bytes("r", b"0123456789")
    assert store.get_bytes("r", 2, 5) == b"234"
    assert store.get_bytes("r", 7) == b"789"
    assert b"".join(store.open("r", 3, 4)) == b"3"
    # Past the end and empty ranges read as empty, as they do from a file.
    assert store.get_bytes("r", 20) == b""
    assert store.get_bytes("r", 4, 4) == b""
    with pytest.raises(ObjectNotFound):
        store.get_bytes("missing", 4, 4)


def test_large_stream_goes_up_in_parts_and_is_hashed_on_the_way(store: S3Store) -> None:
    data = os.urandom(PART_SIZE * 2 + 12345)

    def blocks() -> Iterator[bytes]:
        view = memoryview(data)
        for i in range(0, len(data), 1 << 20):
            yield bytes(view[i : i + (1 << 20)])

    stored = store.put("raw/big", blocks())
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(b"".join(store.open("raw/big"))).hexdigest() == stored.sha256
    assert (
        store.get_bytes("raw/big", PART_SIZE - 3, PART_SIZE + 3)
        == data[PART_SIZE - 3 : PART_SIZE + 3]
    )


def test_objects_in_memory_are_hashed_once_and_signed_with_that_hash(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # minio hashes every body it signs over plain HTTP; ours is computed for fixity anyway.
    hashed_by_minio: list[int] = []
    real = minio.api.sha256_hash

    def counting(data: bytes | None) -> str:
        hashed_by_minio.append(len(data or b""))
        return str(real(data))

    monkeypatch.setattr(minio.api, "sha256_hash", counting)
    data = os.urandom(300_000)
    chunk = store.put_bytes("pyramid/0/0.0", data)
    shard = store.put("pyramid/0/c/0/0", [data[:1000], data[1000:2000], data[2000:]])
    empty = store.put_bytes("pyramid/empty", b"")

    assert chunk.sha256 == shard.sha256 == hashlib.sha256(data).hexdigest()
    assert empty == StoredObject("pyramid/empty", 0, hashlib.sha256(b"").hexdigest())
    assert store.get_bytes("pyramid/0/c/0/0") == data and store.get_bytes("pyramid/empty") == b""
    assert hashed_by_minio and not any(hashed_by_minio)


def test_a_failing_source_propagates_and_leaves_nothing(store: S3Store) -> None:
    class SourceBroke(Exception):
        pass

    def blocks() -> Iterator[bytes]:
        yield os.urandom(PART_SIZE)  # the first part is already up when the source fails
        yield os.urandom(PART_SIZE)
        raise SourceBroke

    with pytest.raises(SourceBroke):
        store.put("raw/partial", blocks())
    assert not store.exists("raw/partial")
    with pytest.raises(SourceBroke):
        store.put("raw/partial", _Failing(SourceBroke))
    assert not store.exists("raw/partial")


class _Failing(io.RawIOBase):
    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def read(self, n: int = -1) -> bytes:
        raise self.error


def test_listing_is_sorted_prefixed_and_delete_is_idempotent(store: S3Store) -> None:
    for key in ("b/2", "a.x", "a/1", "b/1"):
        store.put_bytes(key, key.encode())
    assert list(store.list()) == ["a.x", "a/1", "b/1", "b/2"]
    assert list(store.list("b/")) == ["b/1", "b/2"]
    store.delete("b/1")
    store.delete("b/1")
    assert list(store.list("b/")) == ["b/2"]
    with pytest.raises(ObjectNotFound):
        store.get_bytes("b/1")
    with pytest.raises(ObjectNotFound):
        store.open("b/1")
    with pytest.raises(ObjectNotFound):
        store.size("b/1")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/", "sp ace"])
def test_unsafe_keys_are_refused(store: S3Store, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")


def test_wrong_credentials_and_endpoint_fail_at_start_with_a_clear_message(
    seaweed: SeaweedServer,
) -> None:
    with pytest.raises(StorageError) as refused:
        S3Store(seaweed.url(), ACCESS_KEY, "not-the-secret")
    assert "refused the credentials" in str(refused.value)
    assert "not-the-secret" not in str(refused.value)
    with pytest.raises(StorageError, match="cannot reach S3"):
        S3Store(f"s3://{'x' * 5}?endpoint=http://127.0.0.1:9", ACCESS_KEY, SECRET_KEY)


def test_missing_bucket_is_created_at_start(seaweed: SeaweedServer, prefix: str) -> None:
    bucket = f"created-{prefix}"
    store = S3Store(f"s3://{bucket}?endpoint={seaweed.endpoint}", ACCESS_KEY, SECRET_KEY)
    store.put_bytes("k", b"v")
    assert store.get_bytes("k") == b"v"


def test_urls_never_carry_secrets(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLMICRO_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("ALLMICRO_S3_SECRET_KEY", SECRET_KEY)
    store = open_store(seaweed.url("some/prefix") + "&region=us-east-1")
    assert isinstance(store, S3Store)
    assert SECRET_KEY not in store.url and ACCESS_KEY not in store.url
    assert S3Location.parse(store.url) == store.location
    with pytest.raises(StorageError) as leaked:
        open_store(f"s3://key:{SECRET_KEY}@bucket?endpoint={seaweed.endpoint}")
    assert SECRET_KEY not in str(leaked.value)


def test_named_credential_sets_come_from_the_environment(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLMICRO_S3_SITE2_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("ALLMICRO_S3_SITE2_SECRET_KEY", SECRET_KEY)
    store = open_store(seaweed.url() + "&credentials=site2", access_key="x", secret_key="y")
    store.put_bytes("named", b"ok")
    with pytest.raises(StorageError, match="ALLMICRO_S3_OTHER_ACCESS_KEY"):
        open_store(seaweed.url() + "&credentials=other")


def test_presigned_url_downloads_the_object_without_credentials(store: S3Store) -> None:
    store.put_bytes("raw/doc", b"presigned bytes")
    disposition = "attachment; filename=\"scan e.tif\"; filename*=UTF-8''scan%20%C3%A9.tif"
    url = store.presigned_get_url("raw/doc", 60, content_disposition=disposition)
    assert url is not None and SECRET_KEY not in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"presigned bytes"
    assert response.headers.get("content-disposition") == disposition
    # The same path without the signature is refused.
    assert httpx.get(url.split("?")[0]).status_code == 403


def test_zarr_reads_and_writes_through_the_store_from_threads(store: S3Store) -> None:
    zstore = ZarrObjectStore(store, "images/x/image.zarr")
    array = zarr.create_array(zstore, shape=(256, 256), chunks=(32, 32), dtype="uint16")
    data = np.arange(256 * 256, dtype="uint16").reshape(256, 256)
    array[:] = data  # zarr writes the 64 chunks concurrently
    again = zarr.open_array(ZarrObjectStore(store, "images/x/image.zarr"), mode="r")
    assert np.array_equal(again[:], data)
    assert len(list(store.list("images/x/image.zarr/"))) == 65
