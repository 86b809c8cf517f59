"""Projects, datasets, images and jobs, each seen through the caller's memberships."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep
from allmicro_data.api.schemas import (
    DatasetIn,
    DatasetOut,
    ImageDetailOut,
    ImageOut,
    JobOut,
    Page,
    ProjectIn,
    ProjectOut,
)
from fastapi import APIRouter, Query, Response
from sqlalchemy import func, or_, select

from allmicro_data import directory
from allmicro_data.access import get_visible, require_admin, require_role, scoped
from allmicro_data.catalogue.models import (
    Dataset,
    Image,
    ImageFile,
    ImageStatus,
    Job,
    Project,
    Role,
)
from allmicro_data.errors import NotFound
from allmicro_data.jobs import rerun

router = APIRouter(prefix="/api", tags=["catalogue"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


@router.get("/projects", response_model=Page[ProjectOut])
def list_projects(
    caller: CallerDep, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> Page[ProjectOut]:
    """The projects the caller belongs to (all of them for admins)."""
    stmt = scoped(select(Project), Project, caller)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Project.name).limit(limit).offset(offset)).all()
    return Page(items=[ProjectOut.of(p) for p in rows], total=total, limit=limit, offset=offset)


@router.post("/projects", response_model=ProjectOut, status_code=201)
def create_project(body: ProjectIn, caller: CallerDep, session: SessionDep) -> ProjectOut:
    """Create a project (global admins)."""
    require_admin(caller)
    project = directory.create_project(
        session,
        name=body.name,
        kind=body.kind,
        client_organisation_id=body.client_organisation_id,
        description=body.description,
    )
    return ProjectOut.of(project)


@router.get("/projects/{project_id}", response_model=ProjectOut)
def get_project(project_id: str, caller: CallerDep, session: SessionDep) -> ProjectOut:
    return ProjectOut.of(get_visible(session, caller, Project, project_id))


@router.get("/projects/{project_id}/datasets", response_model=Page[DatasetOut])
def list_datasets(
    project_id: str,
    caller: CallerDep,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DatasetOut]:
    project = get_visible(session, caller, Project, project_id)
    stmt = scoped(select(Dataset), Dataset, caller).where(Dataset.project_id == project.id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Dataset.name).limit(limit).offset(offset)).all()
    return Page(items=[DatasetOut.of(d) for d in rows], total=total, limit=limit, offset=offset)


@router.post("/projects/{project_id}/datasets", response_model=DatasetOut, status_code=201)
def create_dataset(
    project_id: str, body: DatasetIn, caller: CallerDep, session: SessionDep
) -> DatasetOut:
    """Create a dataset in a project (contributors and managers)."""
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.CONTRIBUTOR)
    dataset = directory.create_dataset(
        session,
        project_id=project.id,
        name=body.name,
        description=body.description,
        created_by_id=caller.user_id,
    )
    return DatasetOut.of(dataset)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, caller: CallerDep, session: SessionDep) -> DatasetOut:
    return DatasetOut.of(get_visible(session, caller, Dataset, dataset_id))


SortField = Literal["name", "-name", "acquired_at", "-acquired_at", "created_at", "-created_at"]
_SORT: dict[str, Any] = {
    "name": Image.name,
    "acquired_at": Image.acquired_at,
    "created_at": Image.created_at,
}


def _search_images(
    caller: CallerDep,
    session: SessionDep,
    *,
    project_id: str | None = None,
    dataset_id: str | None = None,
    modality: str | None = None,
    vendor: str | None = None,
    instrument: str | None = None,
    acquired_from: datetime | None = None,
    acquired_to: datetime | None = None,
    pixel_size_min: float | None = None,
    pixel_size_max: float | None = None,
    q: str | None = None,
    sort: str = "name",
    limit: int = 100,
    offset: int = 0,
) -> Page[ImageOut]:
    stmt = scoped(select(Image), Image, caller)
    if dataset_id is not None:
        stmt = stmt.where(Image.dataset_id == dataset_id)
    if project_id is not None:
        stmt = stmt.where(
            Image.dataset_id.in_(select(Dataset.id).where(Dataset.project_id == project_id))
        )
    for column, value in ((Image.modality, modality), (Image.vendor, vendor)):
        if value:
            stmt = stmt.where(func.lower(column) == value.lower())
    if instrument:
        stmt = stmt.where(Image.instrument.ilike(f"%{_escape_like(instrument)}%", escape="\\"))
    if acquired_from is not None:
        stmt = stmt.where(Image.acquired_at >= acquired_from)
    if acquired_to is not None:
        stmt = stmt.where(Image.acquired_at <= acquired_to)
    if pixel_size_min is not None:
        stmt = stmt.where(Image.pixel_size_x >= pixel_size_min)
    if pixel_size_max is not None:
        stmt = stmt.where(Image.pixel_size_x <= pixel_size_max)
    if q:
        pattern = f"%{_escape_like(q)}%"
        stmt = stmt.where(
            or_(
                Image.name.ilike(pattern, escape="\\"),
                Image.instrument.ilike(pattern, escape="\\"),
                Image.detector.ilike(pattern, escape="\\"),
                Image.operator.ilike(pattern, escape="\\"),
            )
        )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    column = _SORT[sort.lstrip("-")]
    order = column.desc() if sort.startswith("-") else column.asc()
    rows = session.scalars(stmt.order_by(order, Image.id).limit(limit).offset(offset)).all()
    return Page(items=[ImageOut.of(i) for i in rows], total=total, limit=limit, offset=offset)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@router.get("/datasets/{dataset_id}/images", response_model=Page[ImageOut])
def list_dataset_images(
    dataset_id: str,
    caller: CallerDep,
    session: SessionDep,
    sort: SortField = "name",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ImageOut]:
    """The ready images of a dataset."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    return _search_images(
        caller, session, dataset_id=dataset.id, sort=sort, limit=limit, offset=offset
    )


@router.get("/images", response_model=Page[ImageOut])
def search_images(
    caller: CallerDep,
    session: SessionDep,
    project_id: str | None = None,
    dataset_id: str | None = None,
    modality: str | None = None,
    vendor: str | None = None,
    instrument: str | None = None,
    acquired_from: datetime | None = None,
    acquired_to: datetime | None = None,
    pixel_size_min: Annotated[float | None, Query(description="metres")] = None,
    pixel_size_max: Annotated[float | None, Query(description="metres")] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    sort: SortField = "name",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ImageOut]:
    """Search the images the caller may see."""
    return _search_images(
        caller,
        session,
        project_id=project_id,
        dataset_id=dataset_id,
        modality=modality,
        vendor=vendor,
        instrument=instrument,
        acquired_from=acquired_from,
        acquired_to=acquired_to,
        pixel_size_min=pixel_size_min,
        pixel_size_max=pixel_size_max,
        q=q,
        sort=sort,
        limit=limit,
        offset=offset,
    )


@router.get("/images/{image_id}", response_model=ImageDetailOut)
def get_image(image_id: str, caller: CallerDep, session: SessionDep) -> ImageDetailOut:
    """An image with its normalised and vendor metadata."""
    image = get_visible(session, caller, Image, image_id)
    file_ids = list(
        session.scalars(select(ImageFile.file_id).where(ImageFile.image_id == image.id))
    )
    return ImageDetailOut.detail(image, file_ids)


@router.get(
    "/images/{image_id}/ome.xml",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
def get_image_ome_xml(
    image_id: str, caller: CallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    """The image's OME-XML document."""
    image = get_visible(session, caller, Image, image_id)
    if not image.ome_xml_key:
        raise NotFound(f"image {image_id} has no OME-XML")
    data = services.store.get_bytes(image.ome_xml_key)
    return Response(data, media_type="application/xml")


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobOut:
    """A job's status, progress and error, with the images it has made ready."""
    job = get_visible(session, caller, Job, job_id)
    return JobOut.of(job, _ready_images_of(session, job))


@router.get("/datasets/{dataset_id}/jobs", response_model=Page[JobOut])
def list_dataset_jobs(
    dataset_id: str,
    caller: CallerDep,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[JobOut]:
    """The jobs of a dataset, newest first: what is still processing, and what failed and why."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    stmt = scoped(select(Job), Job, caller).where(Job.dataset_id == dataset.id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    ).all()
    return Page(
        items=[JobOut.of(j, _ready_images_of(session, j)) for j in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post("/jobs/{job_id}/rerun", response_model=JobOut)
def rerun_job(job_id: str, caller: CallerDep, session: SessionDep, services: ServicesDep) -> JobOut:
    """Queue a finished job again (global admins)."""
    job = get_visible(session, caller, Job, job_id)
    require_admin(caller)
    rerun(session, job)
    session.commit()
    services.wake_jobs()
    return JobOut.of(job)


def _ready_images_of(session: SessionDep, job: Job) -> list[str]:
    if job.file_id is None:
        return []
    return list(
        session.scalars(
            select(Image.id)
            .join(ImageFile, ImageFile.image_id == Image.id)
            .where(ImageFile.file_id == job.file_id, Image.status == ImageStatus.READY)
            .order_by(Image.series_index)
        )
    )
