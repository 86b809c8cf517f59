"""Share links: managers create, list and revoke them; anyone holding one gets a read-only view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import Select, select
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
from allmicro_data.archives import DatasetArchive, build_archive
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
from allmicro_data.delivery import mark_delivered, record_receipt
from allmicro_data.errors import NotFound
from allmicro_data.paging import Window
from allmicro_data.services import Services
from allmicro_data.sharing import (
    MAX_DOWNLOAD_LIMIT,
    ShareAccess,
    count_download,
    create_link,
    links_of_project,
    open_link,
    revoke_link,
)

router = APIRouter(prefix="/api", tags=["share links"])

PasswordHeader = Annotated[
    str | None, Header(alias="X-Share-Password", description="the link's password, if it has one")
]


class ShareLinkIn(BaseModel):
    expires_at: AwareDatetime | None = Field(default=None, description="default: in 7 days")
    password: str | None = Field(default=None, max_length=1024)
    label: Name = Field(default="", max_length=200)
    max_downloads: int | None = Field(
        default=None, ge=1, le=MAX_DOWNLOAD_LIMIT, description="downloads allowed; null: no limit"
    )


class ShareLinkOut(BaseModel):
    id: str
    project_id: str | None
    dataset_id: str | None
    label: str
    has_password: bool
    created_at: datetime
    expires_at: datetime
    revoked: bool
    use_count: int = Field(description="visits of the shared view")
    last_used_at: datetime | None
    max_downloads: int | None
    download_count: int

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
            max_downloads=link.max_downloads,
            download_count=link.download_count,
        )


class NewShareLinkOut(ShareLinkOut):
    token: str = Field(description="shown only now")
    url: str = Field(
        description="the address of the shared view: JSON for API clients, and browsers are "
        "sent on to page_url"
    )
    page_url: str = Field(description="the shared view's web page, for people")


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
        max_downloads=body.max_downloads,
    )
    url = str(request.url_for("open_share", token=token))
    page_url = share_page_url(request, token)
    return NewShareLinkOut(
        **ShareLinkOut.of(link).model_dump(), token=token, url=url, page_url=page_url
    )


def share_page_url(request: Request, token: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/share/{token}"


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


# ---------------------------------------------------------------- deliveries


class DeliveryIn(BaseModel):
    recipients: list[str] = Field(
        default=[], max_length=50, description="more addresses to tell (contacts without account)"
    )
    link_url: str | None = Field(default=None, max_length=2000, description="a share link for them")


class DeliveryOut(BaseModel):
    dataset_id: str
    delivered_at: datetime
    delivered_by_id: str | None


@router.post("/datasets/{dataset_id}/delivery", response_model=DeliveryOut)
def deliver_dataset(
    dataset_id: str,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    body: DeliveryIn | None = None,
) -> DeliveryOut:
    """Mark a dataset as delivered to the client (managers): it is frozen from now on, and the
    client's people are told by e-mail. Marking it again changes nothing."""
    body = body or DeliveryIn()
    dataset = mark_delivered(
        session,
        caller,
        dataset_id,
        client_address(request),
        recipients=body.recipients,
        link_url=body.link_url,
    )
    assert dataset.delivered_at is not None
    return DeliveryOut(
        dataset_id=dataset.id,
        delivered_at=dataset.delivered_at,
        delivered_by_id=dataset.delivered_by_id,
    )


# ---------------------------------------------------------------- the shared view


class SharedDatasetOut(DatasetOut):
    totals: TotalsOut
    delivered_at: datetime | None


class SharedViewOut(BaseModel):
    label: str
    expires_at: datetime
    project_name: str
    project_description: str
    max_downloads: int | None
    downloads_left: int | None
    datasets: list[SharedDatasetOut]


def _open(
    session: SessionDep, request: Request, token: str, password: str | None, what: str
) -> ShareAccess:
    access = open_link(session, token, password, client_address(request), count_use=what == "view")
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


def shared_view(session: SessionDep, access: ShareAccess) -> SharedViewOut:
    """What a link shares, as the JSON view and the web page show it."""
    project = session.get(Project, access.project_id)
    assert project is not None
    datasets = [session.get(Dataset, d) for d in access.dataset_ids]
    link = access.link
    return SharedViewOut(
        label=link.label,
        expires_at=link.expires_at,
        project_name=project.name,
        project_description=project.description,
        max_downloads=link.max_downloads,
        downloads_left=None
        if link.max_downloads is None
        else max(0, link.max_downloads - link.download_count),
        datasets=[
            SharedDatasetOut(
                **DatasetOut.of(d).model_dump(),
                totals=TotalsOut.of(directory.totals(session, dataset_id=d.id)),
                delivered_at=d.delivered_at,
            )
            for d in datasets
            if d is not None
        ],
    )


def wants_page(request: Request) -> bool:
    """Whether a request comes from a browser's address bar rather than an API client."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


@router.get(
    "/share/{token}",
    response_model=SharedViewOut,
    name="open_share",
    responses={303: {"description": "a browser (Accept: text/html) is sent to the web page"}},
)
def open_share(
    token: str, request: Request, session: SessionDep, password: PasswordHeader = None
) -> SharedViewOut | RedirectResponse:
    """What a link shares: its datasets with their counts. No account needed."""
    if wants_page(request):
        return RedirectResponse(f"/share/{token}", status_code=303)
    access = _open(session, request, token, password, "view")
    return shared_view(session, access)


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
    rows = session.scalars(window.slice(shared_images_query(dataset_id))).all()
    return [ImageOut.of(i) for i in rows]


def shared_images_query(dataset_id: str) -> Select[Any]:
    return (
        select(Image)
        .where(
            Image.dataset_id == dataset_id,
            Image.status == ImageStatus.READY,
            Image.deleted_at.is_(None),
        )
        .order_by(Image.name, Image.id)
    )


def shared_files_query(dataset_ids: Sequence[str]) -> Select[Any]:
    return (
        select(File)
        .where(File.dataset_id.in_(dataset_ids), File.deleted_at.is_(None))
        .order_by(File.original_name, File.id)
    )


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
    rows = session.scalars(shared_files_query([dataset_id])).all()
    return [FileOut.of(f) for f in rows]


def shared_file(session: SessionDep, access: ShareAccess, file_id: str) -> File:
    f = session.get(File, file_id)
    if f is None or f.dataset_id not in access.dataset_ids or f.deleted_at is not None:
        raise NotFound(f"file {file_id} not found")
    return f


def download_original(
    request: Request, session: SessionDep, services: Services, access: ShareAccess, f: File
) -> Response:
    """One original through a link: counted against its limit (a resumed range is not another
    download), audited, with a receipt when its dataset is a delivery."""
    byte_range = parse_range(request.headers.get("range"), f.size)
    if isinstance(byte_range, Response):
        return byte_range
    start, end = byte_range or (0, f.size)
    if start == 0:
        count_download(session, access)
    address = client_address(request)
    record(
        session,
        "share.download",
        object_type="file",
        object_id=f.id,
        project_id=access.project_id,
        client_address=address,
        size=end - start,
        detail={"share_link_id": access.link.id},
    )
    dataset = session.get(Dataset, f.dataset_id)
    assert dataset is not None
    record_receipt(
        session,
        dataset,
        files=[f],
        size=end - start,
        actor=None,
        actor_user_id=None,
        share_link_id=access.link.id,
        client_address=address,
    )
    session.commit()
    return original_response(services.store, f, byte_range)


def download_archive(
    request: Request,
    session: SessionDep,
    services: Services,
    access: ShareAccess,
    files: list[File],
    name: str,
) -> Response:
    """Originals through a link as one ZIP with SHA256SUMS: one download of the limit."""
    count_download(session, access)
    archive: DatasetArchive = build_archive(session, services.store, files)
    address = client_address(request)
    record(
        session,
        "share.download",
        object_type="files",
        project_id=access.project_id,
        client_address=address,
        size=sum(f.size for f in files),
        detail={
            "share_link_id": access.link.id,
            "file_ids": [f.id for f in files],
            "archive_bytes": len(archive),
        },
    )
    for dataset_id in sorted({f.dataset_id for f in files}):
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        in_dataset = [f for f in files if f.dataset_id == dataset_id]
        record_receipt(
            session,
            dataset,
            files=in_dataset,
            size=sum(f.size for f in in_dataset),
            actor=None,
            actor_user_id=None,
            share_link_id=access.link.id,
            client_address=address,
        )
    session.commit()
    return archive_response(archive, f"{name}.zip")


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
    f = shared_file(session, access, file_id)
    return download_original(request, session, services, access, f)


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
    files = list(session.scalars(shared_files_query([dataset_id])))
    return download_archive(request, session, services, access, files, dataset.name)


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
            return shared_image_view(session, access, image_id)

    view = await run_in_threadpool(shared_image)
    return await tile_response(viewing(request), view, level, ty, tx, z=z, t=t, c=c)


def shared_image_view(session: SessionDep, access: ShareAccess, image_id: str) -> ImageView:
    image = session.get(Image, image_id)
    if (
        image is None
        or image.dataset_id not in access.dataset_ids
        or image.status != ImageStatus.READY
        or image.deleted_at is not None
    ):
        raise NotFound(f"image {image_id} not found")
    return ImageView.of(image)
