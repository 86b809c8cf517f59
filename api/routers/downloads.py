"""Bulk downloads: a dataset or a selection of originals as a streamed ZIP; metadata as JSON or CSV."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from allmicro_data.access import get_visible, scoped
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep, client_address
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.schemas import Name
from allmicro_data.api.streaming import archive_response, content_disposition
from allmicro_data.archives import build_archive, image_records, metadata_csv
from allmicro_data.audit import record
from allmicro_data.catalogue.models import Dataset, File
from allmicro_data.delivery import record_receipt
from allmicro_data.errors import NotFound

router = APIRouter(prefix="/api", tags=["downloads"])

ZIP: dict[int | str, dict[str, Any]] = {200: binary("application/zip")}
MAX_SELECTION = 10_000


def _audit_archive(
    session: SessionDep,
    caller: CallerDep,
    request: Request,
    files: list[File],
    project_ids: set[str],
    archive_size: int,
) -> None:
    for project_id in sorted(project_ids):
        in_project = [f for f in files if _project_of(session, f) == project_id]
        record(
            session,
            "archive.download",
            actor=caller.email,
            actor_user_id=caller.user_id,
            object_type="files",
            project_id=project_id,
            client_address=client_address(request),
            size=sum(f.size for f in in_project),
            detail={"file_ids": [f.id for f in in_project], "archive_bytes": archive_size},
        )
    # A delivered dataset's downloads each leave a receipt (allmicro_data.delivery).
    for dataset_id in sorted({f.dataset_id for f in files}):
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None and dataset.delivered_at is not None:
            in_dataset = [f for f in files if f.dataset_id == dataset_id]
            record_receipt(
                session,
                dataset,
                files=in_dataset,
                size=sum(f.size for f in in_dataset),
                actor=caller.email,
                actor_user_id=caller.user_id,
                share_link_id=None,
                client_address=client_address(request),
            )
    session.commit()


def _project_of(session: SessionDep, f: File) -> str:
    dataset = session.get(Dataset, f.dataset_id)
    assert dataset is not None
    return dataset.project_id


@router.get("/datasets/{dataset_id}/download.zip", response_class=Response, responses=ZIP)
def download_dataset(
    dataset_id: str, request: Request, caller: CallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    """Every original of a dataset, its image metadata and a SHA256SUMS manifest, as one ZIP."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    files = list(
        session.scalars(
            select(File)
            .where(File.dataset_id == dataset.id, File.deleted_at.is_(None))
            .order_by(File.uploaded_at, File.id)
        )
    )
    archive = build_archive(session, services.store, files)
    _audit_archive(session, caller, request, files, {dataset.project_id}, len(archive))
    return archive_response(archive, f"{dataset.name}.zip")


class Selection(BaseModel):
    file_ids: list[str] = Field(min_length=1, max_length=MAX_SELECTION)
    name: Name = Field(default="selection", min_length=1, max_length=200)


@router.post("/downloads/zip", response_class=Response, responses=ZIP)
def download_selection(
    body: Selection, request: Request, caller: CallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    """Chosen originals as one ZIP. Any id the caller cannot see fails the whole request (404)."""
    wanted = list(dict.fromkeys(body.file_ids))
    files = list(session.scalars(scoped(select(File).where(File.id.in_(wanted)), File, caller)))
    if len(files) != len(wanted):
        # Which ids are missing stays unsaid: it would tell what exists elsewhere.
        raise NotFound("one or more files not found")
    files.sort(key=lambda f: wanted.index(f.id))
    archive = build_archive(session, services.store, files)
    projects = {_project_of(session, f) for f in files}
    _audit_archive(session, caller, request, files, projects, len(archive))
    return archive_response(archive, f"{body.name}.zip")


@router.get(
    "/datasets/{dataset_id}/metadata.json",
    response_model=list[dict[str, Any]],
)
def dataset_metadata_json(
    dataset_id: str, caller: CallerDep, session: SessionDep, response: Response
) -> list[dict[str, Any]]:
    """Normalised metadata of every ready image of the dataset (SI units)."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    response.headers["Content-Disposition"] = content_disposition(f"{dataset.name}.json")
    return image_records(session, [dataset.id])


@router.get(
    "/datasets/{dataset_id}/metadata.csv",
    response_class=Response,
    responses={200: binary("text/csv")},
)
def dataset_metadata_csv(dataset_id: str, caller: CallerDep, session: SessionDep) -> Response:
    """The same metadata as CSV, one image per row."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    body = metadata_csv(image_records(session, [dataset.id]))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition(f"{dataset.name}.csv")},
    )
