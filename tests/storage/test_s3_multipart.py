"""S3Store's own multipart uploads on a real SeaweedFS server: what is signed, what is stored, what a failure leaves."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import minio.api
import pytest

from allmicro_data.storage import S3Store
from allmicro_data.storage import s3 as s3_module
from allmicro_data.storage.s3 import PART_SIZE, PAYLOAD_HASH
from tests.storage.conftest import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedServer


@pytest.fixture
def store(seaweed: SeaweedServer, prefix: str) -> S3Store:
    return S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)


class SourceBroke(Exception):
    pass


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Every request S3Store signs with a hash of its own: (declared hash, sha256 of the body
    sent, or None for a body streamed from a file). minio's own hashing of a body larger than
    the small XML documents of a multipart upload is recorded as ("minio", None)."""
    requests: list[tuple[str, str | None]] = []
    build = s3_module._Client._build_headers

    def recording(self: Any, host: str, headers: Any = None, body: Any = None, creds: Any = None):
        declared = (headers or {}).get(PAYLOAD_HASH)
        if declared is not None and body is not None:
            sent = (
                None
                if hasattr(body, "read")
                else hashlib.sha256(
                    b"".join(body if isinstance(body, list) else [bytes(body)])
                ).hexdigest()
            )
            requests.append((declared, sent))
        return build(self, host, headers, body, creds)

    real_hash = minio.api.sha256_hash

    def minio_hash(data: bytes | None) -> str:
        if data and len(data) > 64 * 1024:
            requests.append(("minio", None))
        return str(real_hash(data))

    monkeypatch.setattr(s3_module._Client, "_build_headers", recording)
    monkeypatch.setattr(minio.api, "sha256_hash", minio_hash)
    return requests


def _blocks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def _open_uploads(store: S3Store) -> list[str]:
    """Multipart uploads the server still holds under the store's prefix."""
    result = store._client._list_multipart_uploads(BUCKET, prefix=store.prefix)
    return [upload.object_name for upload in result.uploads]


@pytest.mark.parametrize(
    "size, parts",
    [(PART_SIZE, 1), (PART_SIZE + 1, 2), (2 * PART_SIZE, 2), (3 * PART_SIZE + 777, 4)],
)
def test_each_part_is_signed_with_its_own_sha256_and_the_object_gets_the_whole_one(
    store: S3Store, signed: list[tuple[str, str | None]], size: int, parts: int
) -> None:
    data = os.urandom(size)
    stored = store.put("raw/big", _blocks(data, 3_000_001))
    assert stored.size == size
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("raw/big") == data
    # One signed request per part, each with the hash of what it carried; minio hashed nothing.
    assert len(signed) == parts
    assert all(declared == sent for declared, sent in signed)
    assert not _open_uploads(store)


def test_a_file_goes_up_in_one_put_signed_with_its_sha256(
    store: S3Store, signed: list[tuple[str, str | None]], tmp_path: Path
) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)
    path = tmp_path / "original"
    path.write_bytes(data)
    with path.open("rb") as handle:
        handle.read(5)  # a file is stored from where it stands
        stored = store.put("raw/file", handle)
    assert stored.size == len(data) - 5
    assert stored.sha256 == hashlib.sha256(data[5:]).hexdigest()
    assert store.get_bytes("raw/file") == data[5:]
    # Hashed once: the one request is signed with the object's sha256 (streamed from the file).
    assert signed == [(stored.sha256, None)]


def test_a_file_beyond_the_single_put_limit_goes_up_in_parts_read_from_the_file(
    store: S3Store,
    signed: list[tuple[str, str | None]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(s3_module, "SINGLE_PUT_LIMIT", 2 * PART_SIZE)
    data = os.urandom(2 * PART_SIZE + 1)
    path = tmp_path / "original"
    path.write_bytes(data)
    with path.open("rb") as handle:
        stored = store.put("raw/file", handle)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("raw/file") == data
    assert len(signed) == 3 and all(declared == sent for declared, sent in signed)
    assert not _open_uploads(store)


@pytest.mark.parametrize("change", ["overwritten", "grown"])
def test_a_file_that_changes_while_it_is_stored_is_refused_and_not_kept(
    store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    from allmicro_data.storage import StorageError

    path = tmp_path / "original"
    path.write_bytes(os.urandom(PART_SIZE + 100))
    build = s3_module._Client._build_headers

    def writing_meanwhile(self: Any, host: str, headers: Any = None, *rest: Any) -> Any:
        # Between the pass that hashes the file and the one that sends it.
        if PAYLOAD_HASH in (headers or {}):
            with path.open("r+b" if change == "overwritten" else "ab") as other:
                other.write(b"changed")
        return build(self, host, headers, *rest)

    monkeypatch.setattr(s3_module._Client, "_build_headers", writing_meanwhile)
    with path.open("rb") as handle, pytest.raises(StorageError, match="changed while"):
        store.put("raw/changing", handle)
    assert not store.exists("raw/changing")
    # No surplus byte was sent past Content-Length to be read as the next request.
    monkeypatch.undo()
    for n in range(8):
        assert store.put_bytes(f"raw/after-{n}", b"after").size == 5
    assert store.get_bytes("raw/after-7") == b"after"


def test_a_minio_without_the_private_calls_still_stores_a_large_file(
    seaweed: SeaweedServer, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(s3_module.MINIO_PRIVATE_API, "_create_multipart_upload", ("self",))
    store = S3Store(seaweed.url(prefix), ACCESS_KEY, SECRET_KEY)
    data = os.urandom(PART_SIZE + 1)
    path = tmp_path / "original"
    path.write_bytes(data)
    with path.open("rb") as handle:
        assert store.put("raw/file", handle).sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("raw/file") == data


def test_bytes_larger_than_a_part_go_up_in_parts(store: S3Store) -> None:
    data = os.urandom(PART_SIZE + 5)
    assert store.put_bytes("raw/bytes", data).sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("raw/bytes") == data


class _FailingRaw(io.RawIOBase):
    """A file that reads `good` bytes, then fails as a disk would."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.left:
            raise OSError(5, "Input/output error")
        n = min(len(buffer), self.left, 1 << 20)
        buffer[:n] = os.urandom(n)
        self.left -= n
        return n


def test_a_file_that_fails_after_two_parts_raises_its_own_error_and_leaves_nothing(
    store: S3Store,
) -> None:
    store.put_bytes("raw/k", b"old")
    with pytest.raises(OSError, match="Input/output error") as raised:
        store.put("raw/k", io.BufferedReader(_FailingRaw(2 * PART_SIZE + 1)))
    # The disk's error, not a storage error naming S3: the spool, not the store, failed.
    assert type(raised.value) is OSError
    assert store.get_bytes("raw/k") == b"old"
    assert not _open_uploads(store)


def test_a_part_the_server_refuses_aborts_the_upload_with_a_storage_error(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allmicro_data.storage import StorageError

    send = S3Store._send_part

    def third_part_unknown(
        self: S3Store, key: str, name: str, upload_id: str, number: int, *rest: Any
    ) -> str:
        # The server no longer knows the upload (e.g. aborted by a lifecycle rule) at part 3.
        return send(self, key, name, "no-such-upload" if number == 3 else upload_id, number, *rest)

    monkeypatch.setattr(S3Store, "_send_part", third_part_unknown)
    with pytest.raises(StorageError, match="S3 write 'raw/refused'"):
        store.put("raw/refused", _blocks(os.urandom(4 * PART_SIZE)))
    assert not store.exists("raw/refused")
    assert not _open_uploads(store)
