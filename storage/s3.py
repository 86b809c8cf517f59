"""S3Store: objects in an S3 bucket (MinIO in production, SeaweedFS in tests) through the minio client."""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import MinioException, S3Error
from urllib3.util import Retry, Timeout

from allmicro_data.storage.base import (
    CHUNK_SIZE,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StoredObject,
    iter_stream,
    regular_file_left,
    validate_key,
    validate_prefix,
)

# Objects up to this size go up in one PUT; larger ones as multipart uploads of this part size
# (S3 allows at most 10 000 parts: 16 MiB parts reach 156 GiB, beyond any single original).
PART_SIZE = 16 * 1024 * 1024
# Parts of one multipart upload sent at once; each holds a part in memory, and one more part is
# read and hashed meanwhile.
PARALLEL_PARTS = 3
# A part is hashed this much at a time by both its own digest and the object's, so the second
# pass finds the bytes in the CPU's cache (L2 is 1.25 MiB a core on the machines we measure).
HASH_SLICE = 256 * 1024
# A file up to this size goes up in one PUT signed with its whole sha256, read twice but hashed
# once (S3 takes at most 5 GiB in one PUT); a multipart upload hashes every byte twice, once for
# its part's signature and once for the object.
SINGLE_PUT_LIMIT = 5 * 1024**3
# Bytes read from a file per system call, to hash it and to send it.
FILE_BLOCK = 1024 * 1024
# Connections kept per endpoint: the pyramid writer and the tile server use many threads.
POOL_SIZE = 32
# The signed hash of a request's body (AWS signature V4).
PAYLOAD_HASH = "x-amz-content-sha256"
_CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
# What MinIO (and servers that copy its codes) answer when their disks are full.
_STORAGE_FULL_ERRORS = {"XMinioStorageFull", "StorageFull", "InsufficientStorage"}
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class S3Location:
    """Where a bucket is: what an s3:// URL says, without any secret."""

    bucket: str
    prefix: str = ""
    endpoint: str = "https://s3.amazonaws.com"
    region: str | None = None
    # The endpoint browsers reach, when it differs (presigned URLs are signed for one host).
    public_endpoint: str | None = None
    # Names a credential set in the environment: ALLMICRO_S3_<NAME>_ACCESS_KEY / _SECRET_KEY.
    credentials: str | None = None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Read s3://bucket/prefix?endpoint=http://host:port&region=…&secure=…&credentials=NAME."""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise StorageError("an S3 storage URL starts with s3://")
        if "@" in parts.netloc:
            # The URL is not repeated: it holds a secret that must not reach a log.
            raise StorageError(
                "S3 storage URLs must not carry credentials; set ALLMICRO_S3_ACCESS_KEY and "
                "ALLMICRO_S3_SECRET_KEY (or credentials=NAME and ALLMICRO_S3_NAME_ACCESS_KEY …)"
            )
        bucket = parts.netloc
        if not bucket:
            raise StorageError(f"S3 storage URL {url!r} names no bucket")
        prefix = parts.path.strip("/")
        if prefix:
            validate_prefix(prefix)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region", "secure", "public_endpoint", "credentials"}
        if unknown:
            raise StorageError(f"unknown S3 URL parameters: {', '.join(sorted(unknown))}")
        endpoint = query.get("endpoint", cls.endpoint)
        if "://" not in endpoint:
            secure = query.get("secure", "true").lower() in _TRUE
            endpoint = f"{'https' if secure else 'http'}://{endpoint}"
        for name in ("endpoint", "public_endpoint"):
            value = endpoint if name == "endpoint" else query.get(name)
            if value is not None:
                checked = urlsplit(value if "://" in value else f"https://{value}")
                if checked.scheme not in ("http", "https") or not checked.hostname:
                    raise StorageError(f"S3 {name} must be http(s)://host[:port]")
                if checked.username or checked.password:
                    raise StorageError(f"S3 {name} must not carry credentials")
        public = query.get("public_endpoint")
        if public and "://" not in public:
            public = f"https://{public}"
        return cls(
            bucket=bucket,
            prefix=prefix,
            endpoint=endpoint.rstrip("/"),
            region=query.get("region") or None,
            public_endpoint=public.rstrip("/") if public else None,
            credentials=query.get("credentials") or None,
        )

    @property
    def url(self) -> str:
        query = {"endpoint": self.endpoint}
        if self.region:
            query["region"] = self.region
        if self.public_endpoint:
            query["public_endpoint"] = self.public_endpoint
        if self.credentials:
            query["credentials"] = self.credentials
        path = f"/{quote(self.prefix)}" if self.prefix else ""
        return f"s3://{self.bucket}{path}?{urlencode(query, safe=':/')}"


def credentials_from_environment(location: S3Location) -> tuple[str | None, str | None]:
    """The access and secret key for a location: its named set, or the default one."""
    name = "ALLMICRO_S3"
    if location.credentials:
        name = f"ALLMICRO_S3_{location.credentials.upper()}"
        if not os.environ.get(f"{name}_ACCESS_KEY"):
            raise StorageError(f"{location.url} names credentials that {name}_ACCESS_KEY lacks")
    return os.environ.get(f"{name}_ACCESS_KEY") or None, os.environ.get(f"{name}_SECRET_KEY")


# The private parts of minio that signing with our own hash needs, with their parameters in the
# minio release pinned in pyproject.toml (7.2.x). minio has no public way to pass a body's hash,
# nor to send a multipart upload's parts from buffers it has not copied and hashed itself.
MINIO_PRIVATE_API = {
    "_build_headers": ("self", "host", "headers", "body", "creds"),
    "_put_object": ("self", "bucket_name", "object_name", "data", "headers", "query_params"),
    "_create_multipart_upload": ("self", "bucket_name", "object_name", "headers"),
    "_complete_multipart_upload": (
        "self",
        "bucket_name",
        "object_name",
        "upload_id",
        "parts",
        "ssec",
    ),
    "_abort_multipart_upload": ("self", "bucket_name", "object_name", "upload_id"),
}


def minio_private_api_missing() -> list[str]:
    """The parts of MINIO_PRIVATE_API the installed minio lacks or has changed; with any, the
    store falls back to minio's public put_object (tests/storage/test_s3_store.py fails first)."""
    missing = []
    for name, parameters in MINIO_PRIVATE_API.items():
        function = getattr(Minio, name, None)
        if not callable(function) or tuple(inspect.signature(function).parameters) != parameters:
            missing.append(name)
    return missing


class _Client(Minio):
    """minio's client, except that a request whose body the caller has already hashed is signed
    with that hash instead of one computed again.

    minio hashes every body it signs over plain HTTP (sha256) and sends an MD5 over HTTPS; we
    compute each object's sha256 anyway for its fixity record, so hashing it twice only burns
    the CPU the pyramid writer needs: converting the 16k² SEM image to S3 took 4.04 s of the
    converter's CPU with minio hashing and 3.71 s without, 8 % less (bench/storage_s3.py, A/B
    runs; deploy/README.md). The hash stays a real payload hash, not UNSIGNED-PAYLOAD: servers
    that check it (MinIO does) still refuse a body damaged on the way.

    Large objects are worse off: minio's put_object copies each part four times and hashes it
    again, 3.7 s of our CPU per GB of an original stored to SeaweedFS where S3Store's own parts
    and single PUTs of files take 1.5 s (bench/storage_s3.py --originals 1024).

    This overrides minio's private request builder and calls its private single PUT and
    multipart calls (MINIO_PRIVATE_API); a minio without them gets a plain `Minio` and public
    put_object.
    """

    def _build_headers(
        self,
        host: str,
        headers: dict[str, Any] | None = None,
        body: bytes | memoryview | list[bytes] | None = None,
        creds: Any = None,
    ) -> tuple[dict[str, Any], Any]:
        declared = (headers or {}).get(PAYLOAD_HASH)
        if declared is None or creds is None:
            # minio's own requests: their bodies are bytes, and minio hashes them.
            return super()._build_headers(host, headers, cast(bytes | None, body), creds)
        # Without a body minio hashes nothing; the length and our hash are put back after.
        built, date = super()._build_headers(host, headers, None, creds)
        if isinstance(body, list):
            built["Content-Length"] = str(sum(len(block) for block in body))
        elif body is not None and not hasattr(body, "read"):
            built["Content-Length"] = str(memoryview(body).nbytes)
        # A file body keeps the Content-Length its caller set: urllib3 cannot know it.
        built[PAYLOAD_HASH] = declared
        return built, date


def _client(endpoint: str, access: str | None, secret: str | None, region: str | None) -> Minio:
    parts = urlsplit(endpoint)
    http = urllib3.PoolManager(
        num_pools=4,
        maxsize=POOL_SIZE,
        # File bodies are sent in blocks this large (urllib3's default is 16 KiB).
        blocksize=FILE_BLOCK,
        # Connection refused answers at once; a silent host must not hang a request for minutes.
        timeout=Timeout(connect=5.0, read=120.0),
        retries=Retry(
            total=3, connect=1, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504]
        ),
    )
    # Overriding a private method whose parameters changed would break every request.
    client = Minio if minio_private_api_missing() else _Client
    return client(
        parts.netloc,
        access_key=access or None,
        secret_key=secret if access else None,
        secure=parts.scheme == "https",
        region=region,
        http_client=http,
    )


class S3Store:
    """An ObjectStore in one bucket (below an optional prefix) of an S3-compatible server.

    Every PUT is atomic on S3: readers see the old object or the whole new one. A file of up to
    5 GiB (a spooled upload) goes up in one PUT, hashed once before it is sent; other large
    streams as multipart uploads from reused part buffers, their sha256 computed on the way.
    Every request is signed with the sha256 of its body. The client and its connection pool
    are shared by all threads.
    """

    def __init__(
        self,
        location: S3Location | str,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        check: bool = True,
        create_bucket: bool = True,
    ) -> None:
        self.location = S3Location.parse(location) if isinstance(location, str) else location
        if access_key is None or self.location.credentials:
            # A URL that names its credential set means it, whatever the default set is.
            access_key, secret_key = credentials_from_environment(self.location)
        if access_key and not secret_key:
            raise StorageError(f"S3 access key for {self.url} given without a secret key")
        self.bucket = self.location.bucket
        self.prefix = self.location.prefix
        self._client = _client(self.location.endpoint, access_key, secret_key, self.location.region)
        self._anonymous = not access_key
        self._presigner = self._client
        if self.location.public_endpoint:
            # Presigning is local arithmetic when the region is known: no request is made.
            self._presigner = _client(
                self.location.public_endpoint,
                access_key,
                secret_key,
                self.location.region or "us-east-1",
            )
        self._create_bucket = create_bucket
        self._ready = False
        self._ready_lock = threading.Lock()
        if check:
            self.check()

    @property
    def url(self) -> str:
        return self.location.url

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # ---- start-up ------------------------------------------------------------------------

    def check(self) -> None:
        """Reach the endpoint, prove the credentials, and create the bucket if it is missing."""
        with self._ready_lock:
            if self._ready:
                return
            with self._errors("open bucket", None):
                if not self._client.bucket_exists(self.bucket):
                    if not self._create_bucket:
                        raise StorageError(
                            f"bucket {self.bucket!r} does not exist at {self.location.endpoint}"
                        )
                    try:
                        self._client.make_bucket(self.bucket, self.location.region)
                    except S3Error as exc:
                        # Another process may have created it a moment ago.
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
            self._ready = True

    def _ensure_ready(self) -> None:
        # Replicas are opened without a check so that a server starts while one is down; the
        # first operation that reaches them does it.
        if not self._ready:
            self.check()

    @contextmanager
    def _errors(self, operation: str, key: str | None) -> Iterator[None]:
        where = self.location.endpoint
        try:
            yield
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject") and key is not None:
                raise ObjectNotFound(key) from None
            if exc.code in _CREDENTIAL_ERRORS:
                raise StorageError(
                    f"S3 at {where} refused the credentials for bucket {self.bucket!r} "
                    f"({exc.code}); check ALLMICRO_S3_ACCESS_KEY and ALLMICRO_S3_SECRET_KEY"
                ) from None
            if exc.code in _STORAGE_FULL_ERRORS:
                raise StorageFull(f"S3 at {where} has no space left ({exc.code})") from None
            if exc.code == "NoSuchBucket":
                self._ready = False
                raise StorageError(f"bucket {self.bucket!r} does not exist at {where}") from None
            what = f" {key!r}" if key else ""
            raise StorageError(
                f"S3 {operation}{what} failed at {where}: {exc.code}: {exc.message}"
            ) from None
        except ValueError as exc:
            # The client refuses names S3 would refuse (bucket names are checked at start-up).
            raise StorageError(f"S3 {operation} at {where}: {exc}") from None
        except (urllib3.exceptions.HTTPError, MinioException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StorageError(
                f"cannot reach S3 at {where} ({operation}): {type(reason).__name__}"
            ) from exc

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # ---- writing -------------------------------------------------------------------------

    def put(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
        if isinstance(stream, list | tuple):
            blocks = [bytes(block) for block in stream if block]
            if sum(len(block) for block in blocks) <= PART_SIZE:
                return self._put_whole(key, blocks)
        if not isinstance(self._client, _Client):
            return self._put_through_minio(key, stream)
        self._name(key)
        self._ensure_ready()
        source = _PartSource(stream)
        try:
            size = regular_file_left(stream)
            # Unsigned requests get minio's MD5 of the body instead, which needs it in memory.
            if size is not None and PART_SIZE < size <= SINGLE_PUT_LIMIT and not self._anonymous:
                return self._put_file(key, cast(io.BufferedIOBase, stream), size, source)
            return self._put_parts(key, source)
        except BaseException:
            if source.error is not None:
                # The caller's stream failed: its error, not the store's, is the news.
                raise source.error from None
            raise

    def _put_parts(self, key: str, source: _PartSource) -> StoredObject:
        """A stream read into part buffers and sent from them: one PUT when it fits one part,
        else a multipart upload whose parts are sent PARALLEL_PARTS at a time.

        Each byte is copied once (from the file, or from the caller's block) and hashed twice in
        one pass over a slice: for its part's signature and for the object's sha256. minio's
        put_object would copy a part four times and hash it again (bench/storage_s3.py
        --originals). Any failure aborts the upload: S3 keeps no object and no orphan parts.
        """
        buffer = bytearray(PART_SIZE)
        filled = source.fill(buffer)
        if filled < PART_SIZE:
            return self._put_whole(key, [memoryview(buffer)[:filled]] if filled else [])
        # One part may be the whole object: reading ahead decides between PUT and multipart.
        ahead = bytearray(PART_SIZE)
        filled_ahead = source.fill(ahead)
        if not filled_ahead:
            return self._put_whole(key, [memoryview(buffer)])
        name = self._name(key)
        client = cast(_Client, self._client)
        with self._errors("write", key):
            upload_id = client._create_multipart_upload(
                self.bucket, name, {"Content-Type": "application/octet-stream"}
            )
        spare: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        buffers = 2
        read_ahead: tuple[bytearray, int] | None = (ahead, filled_ahead)
        digest = hashlib.sha256()
        size = 0
        sent: list[Future[str]] = []
        try:
            with ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="s3-part") as pool:
                while filled:
                    part = memoryview(buffer)[:filled]
                    part_digest = hashlib.sha256()
                    for start in range(0, filled, HASH_SLICE):
                        piece = part[start : start + HASH_SLICE]
                        part_digest.update(piece)
                        digest.update(piece)
                    size += filled
                    sent.append(
                        pool.submit(
                            self._send_part,
                            key,
                            name,
                            upload_id,
                            len(sent) + 1,
                            buffer,
                            filled,
                            part_digest.hexdigest(),
                            spare,
                        )
                    )
                    if read_ahead is not None:
                        (buffer, filled), read_ahead = read_ahead, None
                        continue
                    if buffers <= PARALLEL_PARTS and spare.empty():
                        buffer, buffers = bytearray(PART_SIZE), buffers + 1
                    else:
                        # A part is on its way in every other buffer: wait for one to come back.
                        buffer = spare.get()
                    for done in sent:
                        if done.done() and done.exception() is not None:
                            done.result()  # a part failed: stop reading, abort the upload
                    filled = source.fill(buffer)
                etags = [future.result() for future in sent]
            parts = [Part(number, etag) for number, etag in enumerate(etags, 1)]
            with self._errors("write", key):
                client._complete_multipart_upload(self.bucket, name, upload_id, parts, None)
        except BaseException:
            with suppress(Exception):
                # Best effort: a server that lost the upload has nothing to keep.
                client._abort_multipart_upload(self.bucket, name, upload_id)
            raise
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    def _put_file(
        self, key: str, handle: io.BufferedIOBase, size: int, source: _PartSource
    ) -> StoredObject:
        """The rest of a regular file in one PUT, signed with its sha256: one pass hashes it,
        a second sends it, so every byte is hashed once. A spooled upload is in the page cache:
        reading it again costs 0.13 s/GB of CPU here, hashing it again as a multipart upload
        must (its parts' signatures and the object's sha256) 1 s/GB.

        The file must not change in between: a file whose size, times or position differ after
        the PUT is taken out of the store again and refused. A server that checks the payload
        hash (MinIO, AWS) refuses bytes that differ from the signed hash by itself.
        """
        name = self._name(key)
        start = handle.tell()
        before = _file_identity(handle)
        digest = hashlib.sha256()
        block = bytearray(FILE_BLOCK)
        view = memoryview(block)
        left = size
        while left:
            got = source.read_into(view[: min(left, FILE_BLOCK)])
            if not got:
                raise StorageError(f"{key!r}: the file shrank while it was read")
            digest.update(view[:got])
            left -= got
        handle.seek(start)
        headers: dict[str, str | list[str] | tuple[str]] = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            PAYLOAD_HASH: digest.hexdigest(),
        }
        with self._errors("write", key):
            cast(_Client, self._client)._put_object(
                self.bucket, name, cast(bytes, _FileBody(handle, source, start, size)), headers
            )
        if handle.tell() != start + size or _file_identity(handle) != before:
            self.delete(key)
            raise StorageError(f"{key!r}: the file changed while it was stored; nothing stored")
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    def _send_part(
        self,
        key: str,
        name: str,
        upload_id: str,
        number: int,
        buffer: bytearray,
        filled: int,
        sha256: str,
        spare: queue.SimpleQueue[bytearray],
    ) -> str:
        """Send one part, signed with its sha256, and give its buffer back; its ETag."""
        try:
            with self._errors("write", key):
                result = cast(_Client, self._client)._put_object(
                    self.bucket,
                    name,
                    cast(bytes, memoryview(buffer)[:filled]),
                    {PAYLOAD_HASH: sha256},
                    {"partNumber": str(number), "uploadId": upload_id},
                )
            return cast(str, result.etag)
        finally:
            spare.put(buffer)

    def _put_through_minio(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
        """minio's public put_object, which copies and hashes the parts again: only for a
        minio whose private calls changed (MINIO_PRIVATE_API)."""
        name = self._name(key)
        self._ensure_ready()
        length = -1
        if isinstance(stream, list | tuple):
            length = sum(len(block) for block in stream)
        reader = _HashingReader(iter_stream(stream))
        try:
            with self._errors("write", key):
                self._client.put_object(
                    self.bucket,
                    name,
                    cast(BinaryIO, reader),
                    length,
                    part_size=PART_SIZE,
                    num_parallel_uploads=PARALLEL_PARTS,
                )
        except BaseException:
            if reader.source_error is not None:
                # The caller's stream failed: its error, not the store's, is the news.
                raise reader.source_error from None
            raise
        return StoredObject(key=key, size=reader.size, sha256=reader.hexdigest())

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        if len(data) > PART_SIZE:
            return self.put(key, [data])
        return self._put_whole(key, [bytes(data)] if data else [])

    def _put_whole(self, key: str, blocks: list[bytes] | list[memoryview]) -> StoredObject:
        """One PUT of blocks held in memory (pyramid chunks, shards, metadata documents).

        The sha256 we record is the one the request is signed with (one pass over the bytes),
        and the blocks go to the socket one by one: a shard's chunks are never joined.
        """
        name = self._name(key)
        self._ensure_ready()
        digest = hashlib.sha256()
        for block in blocks:
            digest.update(block)
        body: bytes | memoryview | list[bytes] | list[memoryview]
        body = blocks[0] if len(blocks) == 1 else blocks
        if not blocks:
            body = b""
        elif len(blocks) > 1 and self._anonymous:
            # Unsigned requests get minio's own MD5 of the body, which needs it in one piece.
            body = b"".join(blocks)
        headers: dict[str, str | list[str] | tuple[str]] = {
            "Content-Type": "application/octet-stream",
            PAYLOAD_HASH: digest.hexdigest(),
        }
        with self._errors("write", key):
            if isinstance(self._client, _Client):
                # urllib3 sends a list body block by block, and again from the start on a retry.
                self._client._put_object(self.bucket, name, cast(bytes, body), headers)
            else:
                joined = b"".join(body) if isinstance(body, list) else bytes(body)
                self._client.put_object(self.bucket, name, io.BytesIO(joined), len(joined))
        return StoredObject(
            key=key, size=sum(len(block) for block in blocks), sha256=digest.hexdigest()
        )

    # ---- reading -------------------------------------------------------------------------

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        response = self._get(key, start, end)
        if response is None:
            return iter(())
        return _ResponseStream(response, self, key)

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        response = self._get(key, start, end)
        return b"" if response is None else self._body(response, key)

    def get_suffix(self, key: str, length: int) -> bytes:
        if length <= 0:
            raise ValueError("a suffix must hold at least one byte")
        name = self._name(key)
        self._ensure_ready()
        try:
            with self._errors("read", key):
                response = self._client.get_object(
                    self.bucket, name, request_headers={"Range": f"bytes=-{length}"}
                )
        except StorageError as exc:
            if "InvalidRange" in str(exc):
                # An empty object has no last bytes; a missing one must still say so.
                self.size(key)
                return b""
            raise
        return self._body(response, key)

    def _body(self, response: urllib3.BaseHTTPResponse, key: str) -> bytes:
        """The whole body of a GET's response, the connection then back in the pool."""
        try:
            with self._errors("read", key):
                return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def _get(self, key: str, start: int, end: int | None) -> urllib3.BaseHTTPResponse | None:
        """The response for bytes [start, end), or None when that range holds no bytes."""
        name = self._name(key)
        self._ensure_ready()
        if start < 0 or (end is not None and end < 0):
            raise ValueError("byte offsets must not be negative")
        if end is not None and end <= start:
            # Nothing to read; a missing object must still say so, as a full read would.
            self.size(key)
            return None
        try:
            with self._errors("read", key):
                return self._client.get_object(
                    self.bucket, name, offset=start, length=0 if end is None else end - start
                )
        except StorageError as exc:
            if "InvalidRange" in str(exc):
                # A start past the end reads as empty, as it does from a file.
                self.size(key)
                return None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        name = self._name(key)
        self._ensure_ready()
        with self._errors("stat", key):
            size = self._client.stat_object(self.bucket, name).size
        return int(size or 0)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._ensure_ready()
        with self._errors("delete", key):
            self._client.remove_object(self.bucket, name)

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        self._ensure_ready()
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors("list", prefix or None):
            keys = [
                obj.object_name[strip:]
                for obj in self._client.list_objects(self.bucket, prefix=full, recursive=True)
                if obj.object_name and not obj.is_dir
            ]
        # Servers walk directories in their own order; the protocol promises byte order.
        keys.sort()
        return iter(keys)

    # ---- presigned downloads -------------------------------------------------------------

    def presigned_get_url(
        self, key: str, expires_seconds: int, *, content_disposition: str | None = None
    ) -> str | None:
        name = self._name(key)
        headers: dict[str, str | list[str] | tuple[str]] = {}
        if content_disposition:
            headers["response-content-disposition"] = content_disposition
        with self._errors("presign", key):
            return self._presigner.presigned_get_object(
                self.bucket,
                name,
                expires=timedelta(seconds=expires_seconds),
                response_headers=headers or None,
            )


class _PartSource:
    """Fills part buffers from a file (readinto, no copy of ours) or from the blocks of an
    iterable (one copy), and keeps the error the stream itself raised."""

    def __init__(self, stream: BinaryIO | Iterable[bytes]) -> None:
        self._file: io.BufferedIOBase | io.FileIO | None = None
        # Other raw streams may implement read() alone; io's buffered readers all read into.
        if isinstance(stream, io.BufferedIOBase | io.FileIO):
            self._file = stream
        self._blocks = None if self._file else iter_stream(stream)
        self._pending = memoryview(b"")
        self.error: BaseException | None = None

    def read_into(self, view: memoryview) -> int:
        """One read of a file into view (fewer bytes than asked is not the end); 0 at the end."""
        assert self._file is not None
        try:
            got = self._file.readinto(view)
        except BaseException as exc:
            self.error = exc
            raise
        if got is None:
            raise OSError("the stream has no bytes ready (non-blocking)")
        return got

    def read(self, n: int) -> bytes:
        """What urllib3 sends a file body from, keeping the file's error as fill does."""
        assert self._file is not None
        try:
            return self._file.read(n)
        except BaseException as exc:
            self.error = exc
            raise

    def fill(self, buffer: bytearray) -> int:
        """Bytes put at the start of buffer: all of it, or fewer only at the end of the stream."""
        view = memoryview(buffer)
        filled = 0
        try:
            while filled < len(view):
                if self._file is not None:
                    got = self._file.readinto(view[filled:])
                    if got is None:
                        raise OSError("the stream has no bytes ready (non-blocking)")
                    if not got:
                        break
                    filled += got
                    continue
                if not self._pending:
                    block = next(self._blocks, None)  # type: ignore[arg-type]
                    if block is None:
                        break
                    self._pending = memoryview(block)
                take = min(len(self._pending), len(view) - filled)
                view[filled : filled + take] = self._pending[:take]
                self._pending = self._pending[take:]
                filled += take
        except BaseException as exc:
            self.error = exc
            raise
        return filled


def _file_identity(handle: io.BufferedIOBase) -> tuple[int, int, int, int]:
    status = os.fstat(handle.fileno())
    return status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


class _FileBody:
    """size bytes of a file from start as a request body: urllib3 reads it in blocks and rewinds
    it for a retry; an error of the file is kept as the caller's (see _PartSource).

    urllib3 reads a file body to its end: a file that grew would send more than Content-Length,
    and the surplus would be read as the next request on the connection."""

    def __init__(self, handle: io.BufferedIOBase, source: _PartSource, start: int, size: int):
        self._handle = handle
        self._source = source
        self._end = start + size

    def read(self, n: int = -1) -> bytes:
        left = self._end - self._handle.tell()
        if left <= 0:
            return b""
        return self._source.read(left if n < 0 else min(n, left))

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)


class _HashingReader:
    """A file-like view of a byte iterator for the minio client, hashing what it hands out."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._pending = b""
        self._digest = hashlib.sha256()
        self.size = 0
        self.source_error: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        have = 0
        if self._pending:
            parts.append(self._pending)
            have = len(self._pending)
            self._pending = b""
        while n < 0 or have < n:
            try:
                block = next(self._blocks, None)
            except BaseException as exc:
                self.source_error = exc
                raise
            if block is None:
                break
            parts.append(block)
            have += len(block)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        if 0 <= n < len(data):
            data, self._pending = data[:n], data[n:]
        self._digest.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _ResponseStream:
    """Iterates the body of a GET, and always hands its connection back to the pool."""

    def __init__(self, response: urllib3.BaseHTTPResponse, store: S3Store, key: str) -> None:
        self._response: urllib3.BaseHTTPResponse | None = response
        self._blocks = response.stream(CHUNK_SIZE)
        self._store = store
        self._key = key

    def __iter__(self) -> _ResponseStream:
        return self

    def __next__(self) -> bytes:
        if self._response is None:
            raise StopIteration
        try:
            with self._store._errors("read", self._key):
                block = next(self._blocks)
        except StopIteration:
            self.close()
            raise
        except BaseException:
            self.close()
            raise
        return bytes(block)

    def close(self) -> None:
        if self._response is not None:
            response, self._response = self._response, None
            response.close()
            response.release_conn()

    def __del__(self) -> None:
        self.close()
