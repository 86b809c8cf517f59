"""Originals: one-shot upload into a dataset, file details, and streamed downloads with ranges."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import RedirectResponse, StreamingResponse

from allmicro_data.access import get_visible, require_upload_target
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep, client_address
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.schemas import FileOut, Name, UploadResult
from allmicro_data.api.streaming import content_disposition, original_response, parse_range
from allmicro_data.audit import record
from allmicro_data.catalogue.models import Dataset
from allmicro_data.catalogue.models import File as StoredFile
from allmicro_data.ingest.grouping import acquisition_key
from allmicro_data.originals import clean_name, keep_for_ingest, spool, store_original
from allmicro_data.quotas import check_upload
from allmicro_data.storage import SupportsPresignedGet

router = APIRouter(prefix="/api", tags=["files"])


@router.post("/datasets/{dataset_id}/files", response_model=UploadResult, status_code=201)
def upload_file(
    dataset_id: str,
    # format: binary beside 3.1's contentMediaType: generated clients (openapi-python-client)
    # take a file for it, not a string.
    file: Annotated[
        UploadFile,
        File(description="the original, byte for byte", json_schema_extra={"format": "binary"}),
    ],
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
    group: Annotated[Name | None, Form(max_length=300)] = None,
    relative_path: Annotated[Name | None, Form(max_length=4096)] = None,
) -> UploadResult:
    """Upload one original into a dataset (contributors); its ingest job starts at once."""
    dataset = require_upload_target(session, caller, dataset_id)
    name = clean_name(file.filename)
    if file.size is not None:
        # The same limits as a resumable upload of that size (the body is already parsed).
        check_upload(
            session,
            services.settings,
            user_id=caller.user_id,
            project=dataset.project,
            length=file.size,
            spool=services.settings.uploads_dir,
        )
    path, sha256, size = spool(
        file.file, services.settings.uploads_dir, services.settings.max_upload_bytes
    )
    try:
        result = store_original(
            session,
            services.store,
            dataset=dataset,
            path=path,
            sha256=sha256,
            size=size,
            original_name=name,
            uploaded_by_id=caller.user_id,
            relative_path=relative_path,
            # Unless the client groups them, files join their acquisition by the vendors'
            # naming rules: the web form and scripts send an .emi and its .ser one by one.
            group_key=group or acquisition_key(name),
            max_attempts=services.settings.job_max_attempts,
        )
        record(
            session,
            "file.upload",
            actor=caller.email,
            actor_user_id=caller.user_id,
            object_type="file",
            object_id=result.file.id,
            project_id=dataset.project_id,
            size=size,
            detail={"already_present": result.already_present},
        )
        session.commit()
        if result.ingests_new_bytes:
            keep_for_ingest(services.settings, services.store, path, sha256)
    finally:
        path.unlink(missing_ok=True)
    services.wake_jobs()
    return UploadResult(
        file_id=result.file.id,
        job_id=result.job.id if result.job else None,
        already_present=result.already_present,
    )


@router.get("/files/{file_id}", response_model=FileOut)
def get_file(file_id: str, caller: CallerDep, session: SessionDep) -> FileOut:
    return FileOut.of(get_visible(session, caller, StoredFile, file_id))


@router.get(
    "/files/{file_id}/download",
    response_class=StreamingResponse,
    responses={
        200: binary("application/octet-stream"),
        206: binary("application/octet-stream", description="the requested byte range"),
        307: {"description": "presigned download from the store (when enabled)"},
        416: {"description": "range not satisfiable"},
    },
)
def download_file(
    file_id: str,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """The original exactly as uploaded; supports single byte ranges. Every download is audited."""
    f = get_visible(session, caller, StoredFile, file_id)
    dataset = session.get(Dataset, f.dataset_id)
    range_header = request.headers.get("range")
    byte_range = parse_range(range_header, f.size)
    if isinstance(byte_range, Response):
        return byte_range
    start, end = byte_range or (0, f.size)
    record(
        session,
        "file.download",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="file",
        object_id=f.id,
        project_id=dataset.project_id if dataset else None,
        client_address=client_address(request),
        size=end - start,
        detail={"range": range_header} if range_header else None,
    )
    session.commit()
    settings = services.settings
    if settings.presigned_downloads and isinstance(services.store, SupportsPresignedGet):
        url = services.store.presigned_get_url(
            f.storage_key,
            settings.presigned_expiry_seconds,
            content_disposition=content_disposition(f.original_name),
        )
        if url is not None:
            # The browser fetches the bytes from the store itself. The URL is a short-lived
            # credential: it goes to this caller only and is never logged.
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    return original_response(services.store, f, byte_range)
