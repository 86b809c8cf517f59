"""Projects, datasets, images and jobs, each seen through the caller's memberships."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from sqlalchemy import select

from allmicro_data import directory, lifecycle
from allmicro_data.access import (
    Use,
    administered,
    get_visible,
    project_role,
    require_admin,
    require_full_session,
    require_job_action,
    require_role,
    scoped,
    sees_every_user,
)
from allmicro_data.annotations import Annotations, of_dataset, of_image
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep, client_address
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.paging import Page, WindowDep
from allmicro_data.api.schemas import (
    DatasetDetailOut,
    DatasetIn,
    DatasetOut,
    DatasetPatch,
    ImageDetailOut,
    ImageOut,
    InvitationOut,
    JobOut,
    MembershipIn,
    MembershipOut,
    PairOut,
    ProjectDetailOut,
    ProjectIn,
    ProjectOut,
    ProjectPatch,
    TotalsOut,
)
from allmicro_data.api.streaming import content_disposition
from allmicro_data.audit import record
from allmicro_data.catalogue.models import (
    Dataset,
    Image,
    ImageFile,
    ImageStatus,
    Job,
    JobStatus,
    Project,
    ProjectInvitation,
    ProjectMembership,
    Role,
    utcnow,
)
from allmicro_data.errors import Conflict, NotFound
from allmicro_data.ingest.ome_xml import with_annotations
from allmicro_data.jobs import rerun
from allmicro_data.paging import fetch
from allmicro_data.quotas import project_usage, set_project_quota
from allmicro_data.rois import rows_of, with_rois
from allmicro_data.search import ImageQuery, search_images

router = APIRouter(prefix="/api", tags=["catalogue"])


@router.get("/projects", response_model=Page[ProjectOut])
def list_projects(caller: CallerDep, session: SessionDep, window: WindowDep) -> Page[ProjectOut]:
    """The projects the caller belongs to (all of them for admins)."""
    stmt = scoped(select(Project), Project, caller)
    return Page.of(fetch(session, stmt, window, order_by=[Project.name]), ProjectOut.of)


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


@router.get("/projects/{project_id}", response_model=ProjectDetailOut)
def get_project(project_id: str, caller: CallerDep, session: SessionDep) -> ProjectDetailOut:
    """A project with its counts and stored size, and the caller's role in it; managers and
    admins also see its quota and the bytes counted against it."""
    project = get_visible(session, caller, Project, project_id)
    role = project_role(session, caller, project.id)
    usage = project_usage(session, project) if role is Role.MANAGER else None
    return ProjectDetailOut(
        **ProjectOut.of(project).model_dump(),
        totals=TotalsOut.of(directory.totals(session, project_id=project.id)),
        role=role.value if role else None,
        quota_bytes=usage.quota_bytes if usage else None,
        used_bytes=usage.used_bytes if usage else None,
    )


@router.patch("/projects/{project_id}", response_model=ProjectOut)
def update_project(
    project_id: str, body: ProjectPatch, request: Request, caller: CallerDep, session: SessionDep
) -> ProjectOut:
    """Edit a project's description (managers), name, storage quota or legal hold (global
    admins)."""
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.MANAGER)
    if body.name is not None and body.name != project.name:
        require_admin(caller)
        project.name = body.name
    if body.description is not None:
        project.description = body.description
    if "quota_bytes" in body.model_fields_set:
        require_admin(caller)
        set_project_quota(
            session, project, body.quota_bytes, actor=caller.email, actor_user_id=caller.user_id
        )
    if body.legal_hold is not None:
        lifecycle.set_legal_hold(session, caller, project, body.legal_hold, client_address(request))
    directory.flush_unique(session, f"project {project.name!r}")
    return ProjectOut.of(project)


@router.get("/projects/{project_id}/members", response_model=list[MembershipOut])
def list_members(project_id: str, caller: CallerDep, session: SessionDep) -> list[MembershipOut]:
    """Who holds which role in the project (managers)."""
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.MANAGER, Use.READ)
    rows = session.scalars(
        select(ProjectMembership)
        .where(ProjectMembership.project_id == project.id)
        .order_by(ProjectMembership.created_at)
    ).all()
    return [MembershipOut.of(session, m) for m in rows]


@router.post(
    "/projects/{project_id}/members",
    response_model=MembershipOut,
    status_code=201,
    responses={202: {"model": InvitationOut, "description": "invited by e-mail"}},
)
def add_member(
    project_id: str, body: MembershipIn, request: Request, caller: CallerDep, session: SessionDep
) -> Response | MembershipOut:
    """Give a user (by id) or a whole organisation a role (managers).

    By e-mail a manager always gets 202 with an invitation, whether or not the address has an
    account, so that nobody learns who is registered: the role starts when that user is
    created or next signs in. Global admins, who see every user anyway, add an existing user
    at once (201).
    """
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.MANAGER)
    user_id = body.user_id
    if body.email is not None and sees_every_user(caller):
        existing = directory.find_user_by_email(session, body.email)
        user_id = existing.id if existing else None
    if body.email is not None and user_id is None:
        invitation = directory.invite(
            session,
            project_id=project.id,
            email=body.email,
            role=body.role,
            invited_by_id=caller.user_id,
        )
        record(
            session,
            "invitation.create",
            actor=caller.email,
            actor_user_id=caller.user_id,
            object_type="invitation",
            object_id=invitation.id,
            project_id=project.id,
            client_address=client_address(request),
            detail={"email": invitation.email, "role": body.role},
        )
        return JSONResponse(InvitationOut.of(invitation).model_dump(mode="json"), status_code=202)
    membership = directory.add_membership(
        session,
        project_id=project.id,
        user_id=user_id,
        organisation_id=body.organisation_id,
        role=body.role,
    )
    record(
        session,
        "membership.set",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="membership",
        object_id=membership.id,
        project_id=project.id,
        client_address=client_address(request),
        detail={"user_id": user_id, "organisation_id": body.organisation_id, "role": body.role},
    )
    return MembershipOut.of(session, membership)


@router.get("/projects/{project_id}/invitations", response_model=list[InvitationOut])
def list_invitations(
    project_id: str, caller: CallerDep, session: SessionDep
) -> list[InvitationOut]:
    """Invitations by e-mail not taken up yet (managers)."""
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.MANAGER, Use.READ)
    rows = session.scalars(
        select(ProjectInvitation)
        .where(ProjectInvitation.project_id == project.id)
        .order_by(ProjectInvitation.created_at)
    ).all()
    return [InvitationOut.of(i) for i in rows]


@router.delete(
    "/projects/{project_id}/invitations/{invitation_id}",
    status_code=204,
    response_class=Response,
)
def withdraw_invitation(
    project_id: str, invitation_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Withdraw an invitation not taken up yet (managers)."""
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.MANAGER)
    invitation = session.get(ProjectInvitation, invitation_id)
    if invitation is None or invitation.project_id != project.id:
        raise NotFound(f"invitation {invitation_id} not found")
    session.delete(invitation)
    record(
        session,
        "invitation.withdraw",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="invitation",
        object_id=invitation_id,
        project_id=project.id,
        client_address=client_address(request),
        detail={"email": invitation.email},
    )
    return Response(status_code=204)


@router.delete(
    "/projects/{project_id}/members/{membership_id}", status_code=204, response_class=Response
)
def remove_member(
    project_id: str, membership_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Take a membership away (managers)."""
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.MANAGER)
    removed = directory.remove_membership(
        session, project_id=project.id, membership_id=membership_id
    )
    record(
        session,
        "membership.remove",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="membership",
        object_id=membership_id,
        project_id=project.id,
        client_address=client_address(request),
        detail={"user_id": removed.user_id, "organisation_id": removed.organisation_id},
    )
    return Response(status_code=204)


@router.get("/projects/{project_id}/datasets", response_model=Page[DatasetOut])
def list_datasets(
    project_id: str, caller: CallerDep, session: SessionDep, window: WindowDep
) -> Page[DatasetOut]:
    project = get_visible(session, caller, Project, project_id)
    stmt = scoped(select(Dataset), Dataset, caller).where(Dataset.project_id == project.id)
    return Page.of(fetch(session, stmt, window, order_by=[Dataset.name]), DatasetOut.of)


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


@router.get("/datasets/{dataset_id}", response_model=DatasetDetailOut)
def get_dataset(dataset_id: str, caller: CallerDep, session: SessionDep) -> DatasetDetailOut:
    """A dataset with its counts and stored size (an upload token sees the datasets it may
    upload into: the agent checks its target here)."""
    dataset = get_visible(session, caller, Dataset, dataset_id, Use.SEE)
    return DatasetDetailOut(
        **DatasetOut.of(dataset).model_dump(),
        totals=TotalsOut.of(directory.totals(session, dataset_id=dataset.id)),
        **_annotated(of_dataset(session, dataset.id)),
    )


def _annotated(found: Annotations) -> dict[str, Any]:
    """The tags and pairs fields of an image's or a dataset's detail."""
    return {
        "tags": found.tags,
        "annotations": [PairOut(key=k, value=v) for k, v in found.pairs],
    }


@router.patch("/datasets/{dataset_id}", response_model=DatasetOut)
def update_dataset(
    dataset_id: str, body: DatasetPatch, request: Request, caller: CallerDep, session: SessionDep
) -> DatasetOut:
    """Rename a dataset or edit its description (contributors), unless it was delivered."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    require_role(session, caller, dataset.project_id, Role.CONTRIBUTOR)
    lifecycle.edited_dataset(session, caller, dataset, client_address(request))
    if body.name is not None:
        dataset.name = body.name
    if body.description is not None:
        dataset.description = body.description
    directory.flush_unique(session, f"dataset {dataset.name!r} in this project")
    return DatasetOut.of(dataset)


SortField = Literal[
    "name",
    "-name",
    "acquired_at",
    "-acquired_at",
    "created_at",
    "-created_at",
    "pixel_size",
    "-pixel_size",
]


@router.get("/datasets/{dataset_id}/images", response_model=Page[ImageOut])
def list_dataset_images(
    dataset_id: str,
    caller: CallerDep,
    session: SessionDep,
    window: WindowDep,
    sort: SortField = "name",
) -> Page[ImageOut]:
    """The ready images of a dataset."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    query = ImageQuery(dataset_id=dataset.id, sort=sort, limit=window.limit, offset=window.offset)
    return Page.of(search_images(session, caller, query), ImageOut.of)


@router.get("/images", response_model=Page[ImageOut])
def image_search(
    caller: CallerDep,
    session: SessionDep,
    window: WindowDep,
    project_id: str | None = None,
    dataset_id: str | None = None,
    modality: str | None = None,
    vendor: str | None = None,
    instrument: str | None = None,
    acquired_from: AwareDatetime | None = None,
    acquired_to: AwareDatetime | None = None,
    pixel_size_min: Annotated[float | None, Query(description="metres")] = None,
    pixel_size_max: Annotated[float | None, Query(description="metres")] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    sort: SortField = "name",
) -> Page[ImageOut]:
    """Search the images the caller may see; `q` matches every word in names and metadata."""
    query = ImageQuery(
        project_id=project_id,
        dataset_id=dataset_id,
        modality=modality,
        vendor=vendor,
        instrument=instrument,
        acquired_from=acquired_from,
        acquired_to=acquired_to,
        pixel_size_min=pixel_size_min,
        pixel_size_max=pixel_size_max,
        text=q,
        sort=sort,
        limit=window.limit,
        offset=window.offset,
    )
    return Page.of(search_images(session, caller, query), ImageOut.of)


@router.get("/images/{image_id}", response_model=ImageDetailOut)
def get_image(image_id: str, caller: CallerDep, session: SessionDep) -> ImageDetailOut:
    """An image with its normalised and vendor metadata."""
    image = get_visible(session, caller, Image, image_id)
    file_ids = list(
        session.scalars(select(ImageFile.file_id).where(ImageFile.image_id == image.id))
    )
    return ImageDetailOut.detail(image, file_ids).model_copy(
        update=_annotated(of_image(session, image.id))
    )


@router.get(
    "/images/{image_id}/ome.xml",
    response_class=Response,
    responses={200: binary("application/xml")},
)
def get_image_ome_xml(
    image_id: str, caller: CallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    """The image's OME-XML document, as a download: it comes from the uploaded file and may
    carry anything, scripts included (the web UI shows it as text at /images/{id}/ome-xml).
    The image's tags and key-value pairs, and its dataset's, are in it as Tag- and
    MapAnnotations as they are now, and the ROIs drawn on it as OME ROIs."""
    image = get_visible(session, caller, Image, image_id)
    if not image.ome_xml_key:
        raise NotFound(f"image {image_id} has no OME-XML")
    own, of_set = of_image(session, image.id), of_dataset(session, image.dataset_id)
    data = with_annotations(
        services.store.get_bytes(image.ome_xml_key),
        tags=own.tags,
        pairs=own.pairs,
        dataset_tags=of_set.tags,
        dataset_pairs=of_set.pairs,
    )
    data = with_rois(data, rows_of(session, image.id), image.series_index)
    return Response(
        data,
        media_type="application/xml",
        headers={"Content-Disposition": content_disposition(f"{image.name}.ome.xml")},
    )


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobOut:
    """A job's status, progress and error, with the images it has made ready."""
    job = get_visible(session, caller, Job, job_id, Use.SEE)
    return JobOut.of(job, _ready_images_of(session, job))


@router.get("/datasets/{dataset_id}/jobs", response_model=Page[JobOut])
def list_dataset_jobs(
    dataset_id: str,
    caller: CallerDep,
    session: SessionDep,
    window: WindowDep,
    include_dismissed: bool = False,
) -> Page[JobOut]:
    """The jobs of a dataset, newest first: what is still processing, and what failed and why
    (failed jobs someone dismissed only with include_dismissed)."""
    dataset = get_visible(session, caller, Dataset, dataset_id, Use.SEE)
    stmt = scoped(select(Job), Job, caller, Use.SEE).where(Job.dataset_id == dataset.id)
    if not include_dismissed:
        stmt = stmt.where(Job.dismissed_at.is_(None))
    found = fetch(session, stmt, window, order_by=[Job.created_at.desc(), Job.id])
    return Page.of(found, lambda job: JobOut.of(job, _ready_images_of(session, job)))


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(
    caller: CallerDep,
    session: SessionDep,
    window: WindowDep,
    status: Literal["queued", "running", "failed"] | None = None,
    project_id: str | None = None,
) -> Page[JobOut]:
    """Jobs of the projects the caller administers (every project for global admins), newest
    first, without succeeded or dismissed ones: what is waiting, running and failed."""
    require_full_session(caller)
    stmt = administered(scoped(select(Job), Job, caller, Use.SEE), Job, caller).where(
        Job.status != JobStatus.SUCCEEDED, Job.dismissed_at.is_(None)
    )
    if status is not None:
        stmt = stmt.where(Job.status == JobStatus(status))
    if project_id:
        stmt = stmt.where(
            Job.dataset_id.in_(select(Dataset.id).where(Dataset.project_id == project_id))
        )
    found = fetch(session, stmt, window, order_by=[Job.created_at.desc(), Job.id])
    return Page.of(found, JobOut.of)


@router.post("/jobs/{job_id}/rerun", response_model=JobOut)
def rerun_job(
    job_id: str, request: Request, caller: CallerDep, session: SessionDep, services: ServicesDep
) -> JobOut:
    """Queue a finished job again (contributors of its project, managers, global admins)."""
    job = get_visible(session, caller, Job, job_id, Use.SEE)
    require_job_action(session, caller, job)
    rerun(session, job)
    job.dismissed_at = None
    job.dismissed_by_id = None
    _record_job_action(session, caller, request, job, "job.rerun")
    session.commit()
    services.wake_jobs()
    return JobOut.of(job)


@router.post("/jobs/{job_id}/dismiss", response_model=JobOut)
def dismiss_job(job_id: str, request: Request, caller: CallerDep, session: SessionDep) -> JobOut:
    """Set a failed job aside: it leaves the lists of failed jobs (the file stays; rerunning
    brings it back). Contributors of its project, managers, global admins."""
    job = get_visible(session, caller, Job, job_id, Use.SEE)
    require_job_action(session, caller, job)
    if job.status is not JobStatus.FAILED:
        raise Conflict("only a failed job can be dismissed")
    if job.dismissed_at is None:
        job.dismissed_at = utcnow()
        job.dismissed_by_id = caller.user_id
        _record_job_action(session, caller, request, job, "job.dismiss")
    return JobOut.of(job)


def _record_job_action(
    session: SessionDep, caller: CallerDep, request: Request, job: Job, action: str
) -> None:
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    record(
        session,
        action,
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="job",
        object_id=job.id,
        project_id=dataset.project_id if dataset else None,
        client_address=client_address(request),
    )


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
