"""Share links: managers create, list and revoke them; anyone holding one gets a read-only view."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from allmicro_data import directory
from allmicro_data.access import get_visible
from allmicro_data.api.deps import (
    CallerDep,
    PlaneIndex,
    ServicesDep,
    SessionDep,
    client_address,
)
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.paging import paged
from allmicro_data.api.routers.tiles import tile_response
from allmicro_data.api.schemas import DatasetOut, FileOut, ImageOut, Name, TotalsOut
from allmicro_data.api.streaming import archive_response, original_response, parse_range
from allmicro_data.api.viewing import ImageView, viewing
from allmicro_data.archives import build_archive
from allmicro_data.audit import record
from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Image,
    ImageStatus,
    Project,
    ShareLink,
    utcnow,
)
from allmicro_data.errors import NotFound
from allmicro_data.paging import Window
from allmicro_data.sharing import ShareAccess, create_link, links_of_project, open_link, revoke_link

router = APIRouter(prefix="/api", tags=["share links"])

PasswordHeader = Annotated[
    str | None, Header(alias="X-Share-Password", description="the link's password, if it has one")
]


class ShareLinkIn(BaseModel):
    expires_at: AwareDatetime | None = Field(default=None, description="default: in 7 days")
    password: str | None = Field(default=None, max_length=1024)
    label: Name = Field(default="", max_length=200)


class ShareLinkOut(BaseModel):
    id: str
    project_id: str | None
    dataset_id: str | None
    label: str
    has_password: bool
    created_at: datetime
    expires_at: datetime
    revoked: bool
    use_count: int
    last_used_at: datetime | None

    @classmethod
    def of(cls, link: ShareLink) -> ShareLinkOut:
        return cls(
            id=link.id,
            project_id=link.project_id,
            dataset_id=link.dataset_id,
            label=link.label,
            has_password=link.password_hash is not None,
            created_at=link.created_at,
            expires_at=link.expires_at,
            revoked=link.revoked_at is not None,
            use_count=link.use_count,
            last_used_at=link.last_used_at,
        )


class NewShareLinkOut(ShareLinkOut):
    token: str = Field(description="shown only now")
    url: str = Field(description="the API address of the shared view")


def _create(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
    body: ShareLinkIn,
    *,
    project_id: str | None,
    dataset_id: str | None,
) -> NewShareLinkOut:
    expires_at = body.expires_at or utcnow() + timedelta(days=7)
    token, link = create_link(
        session,
        caller,
        project_id=project_id,
        dataset_id=dataset_id,
        expires_at=expires_at,
        max_days=services.settings.share_link_max_days,
        password=body.password,
        label=body.label,
        client_address=client_address(request),
    )
    url = str(request.url_for("open_share", token=token))
    return NewShareLinkOut(**ShareLinkOut.of(link).model_dump(), token=token, url=url)


@router.post("/projects/{project_id}/share-links", response_model=NewShareLinkOut, status_code=201)
def share_project(
    project_id: str,
    body: ShareLinkIn,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> NewShareLinkOut:
    """A read-only link to a whole project (managers)."""
    project = get_visible(session, caller, Project, project_id)
    return _create(request, caller, session, services, body, project_id=project.id, dataset_id=None)


@router.post("/datasets/{dataset_id}/share-links", response_model=NewShareLinkOut, status_code=201)
def share_dataset(
    dataset_id: str,
    body: ShareLinkIn,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> NewShareLinkOut:
    """A read-only link to one dataset (managers)."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    return _create(request, caller, session, services, body, project_id=None, dataset_id=dataset.id)


@router.get("/projects/{project_id}/share-links", response_model=list[ShareLinkOut])
def list_share_links(project_id: str, caller: CallerDep, session: SessionDep) -> list[ShareLinkOut]:
    """The links to the project and its datasets (managers)."""
    project = get_visible(session, caller, Project, project_id)
    return [ShareLinkOut.of(link) for link in links_of_project(session, caller, project.id)]


@router.delete("/share-links/{link_id}", status_code=204, response_class=Response)
def delete_share_link(
    link_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Revoke a link at once (managers of its project)."""
    revoke_link(session, caller, link_id, client_address(request))
    return Response(status_code=204)


# ---------------------------------------------------------------- the shared view


class SharedDatasetOut(DatasetOut):
    totals: TotalsOut


class SharedViewOut(BaseModel):
    label: str
    expires_at: datetime
    project_name: str
    project_description: str
    datasets: list[SharedDatasetOut]


def _open(
    session: SessionDep, request: Request, token: str, password: str | None, what: str
) -> ShareAccess:
    access = open_link(session, token, password, client_address(request))
    record(
        session,
        "share.use",
        object_type="share_link",
        object_id=access.link.id,
        project_id=access.project_id,
        client_address=client_address(request),
        detail={"request": what},
    )
    return access


@router.get("/share/{token}", response_model=SharedViewOut, name="open_share")
def open_share(
    token: str, request: Request, session: SessionDep, password: PasswordHeader = None
) -> SharedViewOut:
    """What a link shares: its datasets with their counts. No account needed."""
    access = _open(session, request, token, password, "view")
    project = session.get(Project, access.project_id)
    assert project is not None
    datasets = [session.get(Dataset, d) for d in access.dataset_ids]
    return SharedViewOut(
        label=access.link.label,
        expires_at=access.link.expires_at,
        project_name=project.name,
        project_description=project.description,
        datasets=[
            SharedDatasetOut(
                **DatasetOut.of(d).model_dump(),
                totals=TotalsOut.of(directory.totals(session, dataset_id=d.id)),
            )
            for d in datasets
            if d is not None
        ],
    )


@router.get("/share/{token}/datasets/{dataset_id}/images", response_model=list[ImageOut])
def shared_images(
    token: str,
    dataset_id: str,
    request: Request,
    session: SessionDep,
    window: Annotated[Window, paged(200)],
    password: PasswordHeader = None,
) -> list[ImageOut]:
    access = _open(session, request, token, password, "images")
    access.require_dataset(dataset_id)
    rows = session.scalars(
        window.slice(
            select(Image)
            .where(Image.dataset_id == dataset_id, Image.status == ImageStatus.READY)
            .order_by(Image.name, Image.id)
        )
    ).all()
    return [ImageOut.of(i) for i in rows]


@router.get("/share/{token}/datasets/{dataset_id}/files", response_model=list[FileOut])
def shared_files(
    token: str,
    dataset_id: str,
    request: Request,
    session: SessionDep,
    password: PasswordHeader = None,
) -> list[FileOut]:
    access = _open(session, request, token, password, "files")
    access.require_dataset(dataset_id)
    rows = session.scalars(
        select(File).where(File.dataset_id == dataset_id).order_by(File.original_name, File.id)
    ).all()
    return [FileOut.of(f) for f in rows]


def _shared_file(session: SessionDep, access: ShareAccess, file_id: str) -> File:
    f = session.get(File, file_id)
    if f is None or f.dataset_id not in access.dataset_ids:
        raise NotFound(f"file {file_id} not found")
    return f


@router.get(
    "/share/{token}/files/{file_id}/download",
    response_class=Response,
    responses={200: binary("application/octet-stream")},
)
def shared_download(
    token: str,
    file_id: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    password: PasswordHeader = None,
) -> Response:
    access = open_link(session, token, password, client_address(request))
    f = _shared_file(session, access, file_id)
    range_header = request.headers.get("range")
    byte_range = parse_range(range_header, f.size)
    if isinstance(byte_range, Response):
        return byte_range
    start, end = byte_range or (0, f.size)
    record(
        session,
        "share.download",
        object_type="file",
        object_id=f.id,
        project_id=access.project_id,
        client_address=client_address(request),
        size=end - start,
        detail={"share_link_id": access.link.id},
    )
    session.commit()
    return original_response(services.store, f, byte_range)


@router.get(
    "/share/{token}/datasets/{dataset_id}/download.zip",
    response_class=Response,
    responses={200: binary("application/zip")},
)
def shared_zip(
    token: str,
    dataset_id: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    password: PasswordHeader = None,
) -> Response:
    access = open_link(session, token, password, client_address(request))
    access.require_dataset(dataset_id)
    dataset = session.get(Dataset, dataset_id)
    assert dataset is not None
    files = list(
        session.scalars(
            select(File).where(File.dataset_id == dataset_id).order_by(File.uploaded_at, File.id)
        )
    )
    archive = build_archive(session, services.store, files)
    record(
        session,
        "share.download",
        object_type="dataset",
        object_id=dataset_id,
        project_id=access.project_id,
        client_address=client_address(request),
        size=sum(f.size for f in files),
        detail={"share_link_id": access.link.id, "archive_bytes": len(archive)},
    )
    session.commit()
    return archive_response(archive, f"{dataset.name}.zip")


@router.get(
    "/share/{token}/images/{image_id}/tiles/{level}/{ty}/{tx}.png",
    response_class=Response,
    responses={200: binary("image/png")},
)
async def shared_tile(
    token: str,
    image_id: str,
    level: int,
    ty: int,
    tx: int,
    request: Request,
    services: ServicesDep,
    password: PasswordHeader = None,
    z: PlaneIndex = 0,
    t: PlaneIndex = 0,
    c: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> Response:
    """A tile of an image the link shares (the read-only view)."""

    def shared_image() -> ImageView:
        with services.session() as session:
            access = open_link(session, token, password, client_address(request))
            image = session.get(Image, image_id)
            if (
                image is None
                or image.dataset_id not in access.dataset_ids
                or image.status != ImageStatus.READY
            ):
                raise NotFound(f"image {image_id} not found")
            return ImageView.of(image)

    view = await run_in_threadpool(shared_image)
    return await tile_response(viewing(request), view, level, ty, tx, z=z, t=t, c=c)
