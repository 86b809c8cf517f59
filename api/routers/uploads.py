"""tus 1.0 resumable uploads at /api/uploads/: core, creation (with upload), termination, expiration, checksum.

No maintained tus server for FastAPI records its state where ours must live (the catalogue), checks
our roles, verifies sha256 or hands the finished file to the object store without copying it, so
the protocol is implemented here to the letter; the domain work is in allmicro_data.uploads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from allmicro_data.access import Caller
from allmicro_data.api.deps import CSRF_HEADER, ServicesDep, get_services, presented_token
from allmicro_data.api.problems import problem
from allmicro_data.auth import caller_for_token, csrf_token
from allmicro_data.catalogue.models import Upload, UploadStatus
from allmicro_data.errors import DomainError, Invalid, Unauthorised
from allmicro_data.ingest.grouping import acquisition_key
from allmicro_data.names import unfit_character
from allmicro_data.services import Services
from allmicro_data.settings import secret_key
from allmicro_data.storage import StorageError, StorageFull
from allmicro_data.uploads import (
    ChecksumMismatch,
    HashFactory,
    OffsetMismatch,
    Receiver,
    UploadFields,
    UploadTooLarge,
    check_contributor,
    complete_upload,
    create_upload,
    declare_sha256,
    found_already_present,
    load_upload,
    open_receiver,
    terminate_upload,
    validate_sha256,
)

log = logging.getLogger(__name__)

PREFIX = "/api/uploads"
TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
OFFSET_STREAM = "application/offset+octet-stream"
# Our extension to tus: the whole file's sha256 (hex), sent with a PATCH by a client that hashes
# while it sends and so knows the digest only by its last request. Declaring it at creation in
# Upload-Metadata (`sha256`) works as before; either way completion refuses bytes that differ.
WHOLE_FILE_SHA256 = "x-allmicro-sha256"
# On a completed upload's answers: its bytes were in the dataset already (same sha256), so the
# file is the one stored before and no new image is made.
ALREADY_PRESENT = "X-Allmicro-Already-Present"
CHECKSUMS: dict[str, HashFactory] = {
    "sha1": lambda: hashlib.sha1(usedforsecurity=False),
    "sha256": hashlib.sha256,
    "md5": lambda: hashlib.md5(usedforsecurity=False),
}
# Body chunks are gathered into blocks this large before the receiver's threads write and hash
# them, while the event loop goes on reading; at most IN_FLIGHT blocks wait for them.
WRITE_BLOCK = 4 * 1024 * 1024
IN_FLIGHT = 2
# A client that reconnects after a cut may find its previous request still finishing.
LOCK_WAIT_SECONDS = 10.0

T = TypeVar("T")

# The tus status codes, so the OpenAPI document says what a tus client must handle
# (errors are problem+json like everywhere else; problems.document_problems adds the body).
_TUS_VERSION: dict[int | str, dict[str, Any]] = {
    412: {"description": "Tus-Resumable is missing or not 1.0.0"}
}
_TUS_SIZE: dict[int | str, dict[str, Any]] = {
    413: {"description": "Upload-Length above the limit, or the quota is used up"}
}
_TUS_CHECKSUM: dict[int | str, dict[str, Any]] = {
    460: {"description": "Upload-Checksum does not match the bytes sent"}
}
_TUS_OFFSET: dict[int | str, dict[str, Any]] = {
    409: {"description": "Upload-Offset is not where the upload stands"}
}
_TUS_LOCKED: dict[int | str, dict[str, Any]] = {
    423: {"description": "another request is writing to this upload"}
}
_TUS_GONE: dict[int | str, dict[str, Any]] = {
    410: {"description": "the upload expired or was terminated"}
}
TUS_CREATE: dict[int | str, dict[str, Any]] = {
    201: {"description": "created; Location is the upload URL"},
    **_TUS_VERSION,
    **_TUS_OFFSET,
    **_TUS_SIZE,
    415: {"description": f"a body was sent that is not {OFFSET_STREAM}"},
    **_TUS_CHECKSUM,
}
TUS_STATUS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Upload-Offset and Upload-Length in the headers; no body"},
    **_TUS_VERSION,
    **_TUS_GONE,
}
TUS_APPEND: dict[int | str, dict[str, Any]] = {
    204: {"description": "bytes stored; Upload-Offset is the new offset"},
    **_TUS_OFFSET,
    **_TUS_GONE,
    **_TUS_VERSION,
    **_TUS_SIZE,
    415: {"description": f"Content-Type is not {OFFSET_STREAM}"},
    **_TUS_LOCKED,
    **_TUS_CHECKSUM,
}
TUS_TERMINATE: dict[int | str, dict[str, Any]] = {
    204: {"description": "upload terminated"},
    **_TUS_VERSION,
    **_TUS_LOCKED,
}


class BadTusRequest(DomainError):
    status = 400
    title = "Bad request"


class UnsupportedVersion(DomainError):
    status = 412
    title = "Precondition failed"


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported media type"


class UploadLocked(DomainError):
    status = 423
    title = "Locked"


class TusRoute(APIRoute):
    """Every tus response carries Tus-Resumable, errors included (as problem+json)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except DomainError as exc:
                headers: dict[str, str] = {}
                if exc.status == 401:
                    headers["WWW-Authenticate"] = "Bearer"
                if isinstance(exc, UnsupportedVersion):
                    headers["Tus-Version"] = TUS_VERSION
                if isinstance(exc, OffsetMismatch):
                    headers["Upload-Offset"] = str(exc.upload_offset)
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    headers["Retry-After"] = str(retry_after)
                response = problem(exc.status, exc.title, str(exc) or None, headers=headers)
            except StorageFull as exc:
                # Storing the finished file found the store full: every byte stays in the spool,
                # and the client's next request (HEAD or PATCH) completes it once there is room.
                log.error("store full on %s %s: %s", request.method, request.url.path, exc)
                response = problem(
                    507, "Insufficient storage", "the object store is full; try again later"
                )
            except StorageError as exc:
                log.error("storage error on %s %s: %s", request.method, request.url.path, exc)
                response = problem(
                    503, "Storage unavailable", "the object store could not be reached; try again"
                )
            if request.method != "OPTIONS":
                response.headers["Tus-Resumable"] = TUS_VERSION
            return response

        return tus_handler


router = APIRouter(prefix=PREFIX, tags=["uploads"], route_class=TusRoute)


class _WriterLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


# One writer per upload in this process; the catalogue's offset fence covers other processes.
_locks: dict[str, _WriterLock] = {}


async def _run(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: func(*args, **kwargs))


def tus_caller(request: Request, services: Annotated[Services, Depends(get_services)]) -> Caller:
    """The caller from a bearer or personal access token, or from the browser's session cookie
    sent with its CSRF token in X-CSRF-Token (the dataset page's uploader), looked up in a short
    transaction of its own: a PATCH may stream for minutes and must hold no catalogue connection."""
    _require_tus(request)
    presented = presented_token(request, services.settings)
    # A cookie alone proves nothing (another site's page can make the browser send it): every
    # tus request of a session, HEAD included, names the session's CSRF token.
    if presented is not None and (
        not presented.from_cookie or _session_csrf_ok(request, services, presented.plaintext)
    ):
        with services.session() as session:
            caller = caller_for_token(session, presented.plaintext, presented.kinds)
        if caller is not None:
            return caller
    raise Unauthorised("send a valid bearer or personal access token, or a session's CSRF token")


def _session_csrf_ok(request: Request, services: Services, session_token: str) -> bool:
    presented = request.headers.get(CSRF_HEADER)
    expected = csrf_token(session_token, secret_key(services.settings))
    return presented is not None and hmac.compare_digest(presented, expected)


TusCallerDep = Annotated[Caller, Depends(tus_caller)]


def _require_tus(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise UnsupportedVersion(f"this server speaks tus {TUS_VERSION}; send Tus-Resumable")


def _integer_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 20:
        raise BadTusRequest(f"{name} must be a non-negative integer")
    return int(value)


def parse_metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs; a value may be absent."""
    pairs: dict[str, str] = {}
    if not header.strip():
        return pairs
    for item in header.split(","):
        parts = item.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or key in pairs or not key.isascii():
            raise BadTusRequest("Upload-Metadata is malformed")
        value = ""
        if len(parts) == 2:
            try:
                raw = base64.b64decode(parts[1], validate=True)
            except binascii.Error:
                raise BadTusRequest(f"Upload-Metadata value of {key!r} is not base64") from None
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                # tus allows any bytes; every value we read is text, so say which rule failed.
                raise BadTusRequest(
                    f"Upload-Metadata value of {key!r} is base64 but not UTF-8 text"
                ) from None
        pairs[key] = value
    return pairs


def _fields(metadata: dict[str, str]) -> UploadFields:
    filename = metadata.get("filename") or metadata.get("name")
    dataset_id = metadata.get("dataset_id")
    if not filename:
        raise BadTusRequest("Upload-Metadata must name the file (filename)")
    if not dataset_id:
        raise BadTusRequest("Upload-Metadata must name the dataset (dataset_id)")
    relative_path = (metadata.get("relative_path") or "").replace("\\", "/").strip() or None
    group = (metadata.get("group") or "").strip() or None
    if relative_path is not None and len(relative_path) > 4096:
        raise BadTusRequest("relative_path is longer than 4096 characters")
    if group is not None and len(group) > 300:
        raise BadTusRequest("group is longer than 300 characters")
    for key, value in (("filename", filename), ("relative_path", relative_path), ("group", group)):
        if value is not None and (ch := unfit_character(value)) is not None:
            raise Invalid(f"{key} holds the control character U+{ord(ch):04X}")
    declared = metadata.get("sha256")
    return UploadFields(
        filename=filename,
        dataset_id=dataset_id,
        relative_path=relative_path,
        # Ungrouped files join their acquisition by the vendors' naming rules (X.emi + X_1.ser).
        group=group or acquisition_key(filename),
        sha256=validate_sha256(declared) if declared else None,
    )


def _checksum(request: Request) -> tuple[HashFactory | None, bytes | None]:
    header = request.headers.get("upload-checksum")
    if header is None:
        return None, None
    algorithm, _, encoded = header.strip().partition(" ")
    factory = CHECKSUMS.get(algorithm.lower())
    if factory is None:
        raise BadTusRequest(
            f"checksum algorithm {algorithm!r} is not supported; use one of {', '.join(CHECKSUMS)}"
        )
    try:
        expected = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise BadTusRequest("Upload-Checksum is not base64") from None
    return factory, expected


def _declared_sha256(request: Request) -> str | None:
    value = request.headers.get(WHOLE_FILE_SHA256)
    if value is None:
        return None
    try:
        return validate_sha256(value)
    except DomainError:
        raise BadTusRequest(f"{WHOLE_FILE_SHA256} must be 64 hexadecimal digits") from None


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _upload_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.upload_offset)}
    if upload.status is UploadStatus.COMPLETE:
        if upload.file_id:
            headers["X-Allmicro-File-Id"] = upload.file_id
        if upload.job_id:
            headers["X-Allmicro-Job-Id"] = upload.job_id
        if upload.sha256:
            headers["X-Allmicro-Sha256"] = upload.sha256
    else:
        headers["Upload-Expires"] = _http_date(upload.expires_at)
    return headers


async def _outcome_headers(services: Services, upload: Upload) -> dict[str, str]:
    """_upload_headers, and for a completed upload whose bytes the dataset already held,
    X-Allmicro-Already-Present: the client says so instead of "processing starts"."""
    headers = _upload_headers(upload)
    if await _run(found_already_present, services, upload):
        headers[ALREADY_PRESENT] = "true"
    return headers


def _location(request: Request, upload_id: str) -> str:
    return f"{request.scope.get('root_path', '')}{PREFIX}/{upload_id}"


@asynccontextmanager
async def _writer_lock(upload_id: str) -> AsyncIterator[None]:
    entry = _locks.setdefault(upload_id, _WriterLock())
    entry.users += 1
    try:
        try:
            await asyncio.wait_for(entry.lock.acquire(), LOCK_WAIT_SECONDS)
        except TimeoutError:
            raise UploadLocked("another request is writing to this upload; try again") from None
        try:
            yield
        finally:
            entry.lock.release()
    finally:
        entry.users -= 1
        if entry.users == 0:
            _locks.pop(upload_id, None)


async def _pump(request: Request, receiver: Receiver) -> None:
    """Stream the request body into the receiver: blocks of WRITE_BLOCK go to its threads while
    the next is read, and reading waits while more than IN_FLIGHT of them are queued. What is
    still queued at the end is waited for by the receiver (finish, keep_received, abandon)."""
    in_flight: deque[Future[None]] = deque()
    pending: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            pending.append(chunk)
            size += len(chunk)
            if size >= WRITE_BLOCK:
                in_flight.append(receiver.submit(pending))
                pending, size = [], 0
                while len(in_flight) > IN_FLIGHT:
                    # Raises the receiver's first error, which ends the request.
                    await asyncio.wrap_future(in_flight.popleft())
    except ClientDisconnect:
        if pending:
            receiver.submit(pending)  # the bytes that did arrive count
        raise
    if pending:
        receiver.submit(pending)


async def _append(
    request: Request,
    services: Services,
    caller: Caller,
    upload: Upload,
    offset: int,
) -> Upload | None:
    """Write a request body at offset; the upload after it (completed if it was the last
    byte), or None if the client went away before the end."""
    factory, expected = _checksum(request)
    declared_length = _integer_header(request, "content-length")
    if declared_length is not None and offset + declared_length > upload.length:
        raise UploadTooLarge(f"the request goes past the upload's length of {upload.length} bytes")
    async with _writer_lock(upload.id):
        # Re-read: the offset may have moved while an earlier request held the lock.
        upload = await _run(load_upload, services, caller, upload.id)
        receiver = await _run(
            open_receiver, services, upload, offset, factory, lock_wait=LOCK_WAIT_SECONDS
        )
        try:
            try:
                await _pump(request, receiver)
            except ClientDisconnect:
                kept = await _run(receiver.keep_received)
                log.info("upload %s: client went away, offset now %d", upload.id, kept)
                return None
            except UploadTooLarge:
                await _run(receiver.abandon)
                raise
            new_offset = await _run(receiver.finish, expected)
            sha256 = receiver.sha256 if new_offset == upload.length else None
        finally:
            await _run(receiver.close)
        if new_offset == upload.length:
            return await _run(complete_upload, services, upload.id, sha256)
        return await _run(load_upload, services, caller, upload.id)


# ------------------------------------------------------------------ routes


def _options() -> Response:
    return Response(
        status_code=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        },
    )


@router.options("", include_in_schema=False)
@router.options(
    "/",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Tus-Version, Tus-Extension and Tus-Max-Size in the headers"}},
)
def discover(services: ServicesDep) -> Response:
    """What this tus server supports (no authentication needed)."""
    response = _options()
    response.headers["Tus-Max-Size"] = str(services.settings.max_upload_bytes)
    return response


@router.options("/{upload_id}", include_in_schema=False)
def discover_upload(services: ServicesDep) -> Response:
    return discover(services)


@router.post("", include_in_schema=False, status_code=201)
@router.post("/", status_code=201, response_class=Response, responses=TUS_CREATE)
async def create(request: Request, caller: TusCallerDep, services: ServicesDep) -> Response:
    """Create an upload (tus creation); a body sent along is its first bytes."""
    if request.headers.get("upload-defer-length") is not None:
        raise BadTusRequest("Upload-Defer-Length is not supported; send Upload-Length")
    length = _integer_header(request, "upload-length")
    if length is None:
        raise BadTusRequest("Upload-Length is required")
    metadata_header = request.headers.get("upload-metadata", "")
    fields = _fields(parse_metadata(metadata_header))
    declared = _declared_sha256(request)
    if declared is not None:
        if fields.sha256 not in (None, declared):
            raise BadTusRequest(f"{WHOLE_FILE_SHA256} and the sha256 in Upload-Metadata differ")
        fields = dataclasses.replace(fields, sha256=declared)
    upload = await _run(
        create_upload,
        services,
        caller,
        length=length,
        metadata_header=metadata_header,
        fields=fields,
    )
    headers = {"Location": _location(request, upload.id)}
    with_body = request.headers.get("content-type", "").split(";")[0].strip() == OFFSET_STREAM
    if with_body or length == 0:
        try:
            upload = await _append(request, services, caller, upload, 0) or upload
        except ChecksumMismatch:
            # Nothing of the body was kept: the upload goes too, so the client (told 460, with
            # no Location) sends the file again rather than resuming an empty upload it never
            # learnt of.
            log.info("upload %s: first bytes failed their checksum; discarded", upload.id)
            await _run(terminate_upload, services, caller, upload.id)
            raise
        except DomainError as exc:
            if exc.status not in (409, 413):
                raise
            # The upload exists; the client learns its offset and goes on with PATCH.
            log.info("upload %s: first bytes refused: %s", upload.id, exc)
            upload = await _run(load_upload, services, caller, upload.id)
    headers.update(await _outcome_headers(services, upload))
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}", response_class=Response, responses=TUS_STATUS)
async def status(upload_id: str, caller: TusCallerDep, services: ServicesDep) -> Response:
    """Where an upload stands: its offset, and once complete, the file and job it made."""
    upload = await _run(load_upload, services, caller, upload_id)
    if upload.status is UploadStatus.RECEIVED or (
        upload.status is UploadStatus.RECEIVING and upload.upload_offset == upload.length
    ):
        # The server stopped between the last byte and storing the file: finish it now.
        async with _writer_lock(upload.id):
            upload = await _run(complete_upload, services, upload.id)
    headers = {
        "Upload-Length": str(upload.length),
        "Cache-Control": "no-store",
        **(await _outcome_headers(services, upload)),
    }
    if upload.upload_metadata:
        headers["Upload-Metadata"] = upload.upload_metadata
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204, response_class=Response, responses=TUS_APPEND)
async def append(
    upload_id: str, request: Request, caller: TusCallerDep, services: ServicesDep
) -> Response:
    """Append the body at Upload-Offset; the last byte stores the file and queues its ingest."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != OFFSET_STREAM:
        raise UnsupportedMediaType(f"PATCH bodies must be {OFFSET_STREAM}")
    offset = _integer_header(request, "upload-offset")
    if offset is None:
        raise BadTusRequest("Upload-Offset is required")
    declared = _declared_sha256(request)
    upload = await _run(load_upload, services, caller, upload_id)
    await _run(check_contributor, services, caller, upload)
    if declared is not None and upload.status is UploadStatus.RECEIVING:
        upload = await _run(declare_sha256, services, upload, declared)
    if upload.status is not UploadStatus.RECEIVING:
        if offset != upload.upload_offset:
            raise_conflict(upload)
        # Everything had arrived already (a retried last request): answer with the outcome.
        async with _writer_lock(upload.id):
            upload = await _run(complete_upload, services, upload.id)
        return Response(status_code=204, headers=await _outcome_headers(services, upload))
    if offset != upload.upload_offset:
        raise_conflict(upload)
    try:
        result = await _append(request, services, caller, upload, offset)
    except OffsetMismatch:
        # Another request on this upload got there first (a client that sent twice, or retried
        # while its first request was still running): if that one completed the upload, every
        # byte of it is in, and the client gets the outcome; else a 409 and the offset.
        current = await _run(load_upload, services, caller, upload_id)
        if current.status is UploadStatus.RECEIVING or current.upload_offset != current.length:
            raise
        async with _writer_lock(current.id):
            current = await _run(complete_upload, services, current.id)
        return Response(status_code=204, headers=await _outcome_headers(services, current))
    if result is None:
        return Response(status_code=204)
    return Response(status_code=204, headers=await _outcome_headers(services, result))


def raise_conflict(upload: Upload) -> None:
    raise OffsetMismatch(
        f"the upload's offset is {upload.upload_offset}; resume from there", upload.upload_offset
    )


@router.delete("/{upload_id}", status_code=204, response_class=Response, responses=TUS_TERMINATE)
async def terminate(upload_id: str, caller: TusCallerDep, services: ServicesDep) -> Response:
    """Abandon an upload and free its space (tus termination)."""
    async with _writer_lock(upload_id):
        await _run(terminate_upload, services, caller, upload_id)
    return Response(status_code=204)


@router.post("/{upload_id}", include_in_schema=False)
async def method_override(
    upload_id: str, request: Request, caller: TusCallerDep, services: ServicesDep
) -> Response:
    """X-HTTP-Method-Override, for clients behind proxies that only pass GET and POST."""
    method = request.headers.get("x-http-method-override", "").upper()
    if method == "PATCH":
        return await append(upload_id, request, caller, services)
    if method == "DELETE":
        return await terminate(upload_id, caller, services)
    if method == "HEAD":
        return await status(upload_id, caller, services)
    raise BadTusRequest("POST to an upload needs X-HTTP-Method-Override: PATCH, DELETE or HEAD")
