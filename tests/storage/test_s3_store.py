"""S3Store on a real SeaweedFS server: the ObjectStore contract, plus multipart, signing, credentials and buckets."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import minio.api
import pytest

from allmicro_data.storage import (
    S3Store,
    StorageError,
    StoredObject,
    SupportsPresignedGet,
    SupportsSuffixRead,
    open_store,
    s3,
)
from allmicro_data.storage.s3 import PART_SIZE, S3Location
from tests.storage.conftest import ACCESS_KEY, SECRET_KEY, SeaweedServer
from tests.storage.store_contract import ObjectStoreContract


@pytest.fixture
def store(seaweed: SeaweedServer, prefix: str) -> S3Store:
    return S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)


class TestS3StoreContract(ObjectStoreContract):
    url_scheme = "s3"
    presigns = True
    capabilities = frozenset({SupportsPresignedGet, SupportsSuffixRead})

    @pytest.fixture
    def store(self, seaweed: SeaweedServer, prefix: str) -> S3Store:
        return S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)


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


def _put_counting_minio_hashes(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, list[int]]:
    """One body put whole (a chunk) and in pieces (a shard), and an empty object, each checked
    for its sha256; (the body, the lengths of the bodies minio hashed meanwhile)."""
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
    return data, hashed_by_minio


def test_objects_in_memory_are_hashed_once_and_signed_with_that_hash(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # minio hashes every body it signs over plain HTTP; ours is computed for fixity anyway.
    data, hashed_by_minio = _put_counting_minio_hashes(store, monkeypatch)
    assert store.get_bytes("pyramid/0/c/0/0") == data and store.get_bytes("pyramid/empty") == b""
    assert hashed_by_minio and not any(hashed_by_minio)


def test_minio_still_has_the_private_calls_that_sign_with_our_hash() -> None:
    """The canary of the minio pin in pyproject.toml."""
    missing = s3.minio_private_api_missing()
    assert not missing, (
        f"minio {minio.__version__} lacks or changed {missing} (storage/s3.py MINIO_PRIVATE_API): "
        "S3Store now falls back to minio's public put_object, which hashes every body again "
        "(about 8 % more converter CPU, bench/storage_s3.py) and copies and hashes large "
        "originals again (1.5 to 3.7 s/GB, --originals). Adapt storage/s3.py's _Client to "
        "the new minio, or drop it, and move the minio pin in pyproject.toml."
    )


def test_a_minio_without_those_private_calls_gets_objects_up_through_put_object(
    seaweed: SeaweedServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if minio had changed its request builder's parameters.
    monkeypatch.setitem(s3.MINIO_PRIVATE_API, "_build_headers", ("self", "request"))
    store = S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)
    data, hashed_by_minio = _put_counting_minio_hashes(store, monkeypatch)
    assert store.get_bytes("pyramid/0/0.0") == store.get_bytes("pyramid/0/c/0/0") == data
    assert store.get_bytes("pyramid/empty") == b""
    # minio's public path hashed the bodies itself.
    assert hashed_by_minio.count(len(data)) == 2


def test_a_source_that_fails_after_a_part_is_up_leaves_nothing(store: S3Store) -> None:
    class SourceBroke(Exception):
        pass

    def blocks() -> Iterator[bytes]:
        yield os.urandom(PART_SIZE)  # the first part is already up when the source fails
        yield os.urandom(PART_SIZE)
        raise SourceBroke

    with pytest.raises(SourceBroke):
        store.put("raw/partial", blocks())
    assert not store.exists("raw/partial")


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
