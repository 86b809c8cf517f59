"""Authorisation in one place: which projects a caller belongs to, and the scoping of every query."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Select, false, or_, select
from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import (
    AuditEvent,
    Dataset,
    File,
    Image,
    ImageFile,
    ImageStatus,
    Job,
    Organisation,
    Project,
    ProjectMembership,
    Roi,
    Role,
    Upload,
    User,
)
from allmicro_data.errors import Forbidden, NotFound

T = TypeVar("T")


class Use(enum.StrEnum):
    """What a request does with the objects it names; a credential's scope allows some uses."""

    SEE = "see"  # the object itself: a dataset's name and counts, a job's state
    READ = "read"  # what objects hold: images, files, metadata, pyramids, and grants to them
    UPLOAD = "upload"  # add originals to a dataset
    WRITE = "write"  # create or change catalogue objects, members, share links


# Token scopes (DESIGN.md): sessions and password (bearer) tokens carry the user's full rights;
# a `read` token reads what its user may read; an `upload` token only uploads into datasets its
# user may contribute to and sees those datasets and the jobs of its own uploads.
SCOPE_USES: dict[str, frozenset[Use]] = {
    "all": frozenset(Use),
    "read": frozenset({Use.SEE, Use.READ}),
    "upload": frozenset({Use.SEE, Use.UPLOAD}),
}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a signed-in user, with the scope of the credential they used."""

    user_id: str
    organisation_id: str
    email: str
    is_admin: bool = False
    scope: str = "all"  # "all", or "read" / "upload" for personal access tokens
    token_id: str | None = None  # the credential (session, bearer or personal token) presented

    @classmethod
    def for_user(cls, user: User, scope: str = "all", token_id: str | None = None) -> Caller:
        return cls(
            user_id=user.id,
            organisation_id=user.organisation_id,
            email=user.email,
            # Personal tokens never carry admin rights: a leaked instrument-PC token must not
            # be able to administer the server.
            is_admin=user.is_admin and scope == "all",
            scope=scope,
            token_id=token_id,
        )

    def may(self, use: Use) -> bool:
        """Whether the credential's scope allows this use at all (roles are checked apart)."""
        return use in SCOPE_USES.get(self.scope, frozenset())


def require(caller: Caller, use: Use) -> None:
    """Forbidden unless the caller's credential may do `use`; said before any lookup, so the
    answer is the same whether or not the object exists."""
    if caller.may(use):
        return
    if caller.scope == "upload":
        raise Forbidden("an upload token may only upload files and follow its uploads' jobs")
    if caller.scope == "read":
        raise Forbidden("this token is read-only")
    raise Forbidden("this credential may not do that")


def _memberships(caller: Caller) -> Select[str, Role]:
    """(project_id, role) for every membership that applies to the caller, directly or by organisation."""
    return select(ProjectMembership.project_id, ProjectMembership.role).where(
        or_(
            ProjectMembership.user_id == caller.user_id,
            ProjectMembership.organisation_id == caller.organisation_id,
        )
    )


def managed_project_ids(caller: Caller) -> Select[str]:
    """A subquery of the ids of the projects the caller manages."""
    if caller.is_admin:
        return select(Project.id)
    memberships = _memberships(caller).where(ProjectMembership.role == Role.MANAGER).subquery()
    return select(memberships.c.project_id)


def visible_project_ids(caller: Caller) -> Select[str]:
    """A subquery of the ids of the projects the caller may see."""
    if caller.is_admin:
        return select(Project.id)
    return select(_memberships(caller).subquery().c.project_id)


def contributed_project_ids(caller: Caller) -> Select[str]:
    """A subquery of the ids of the projects the caller may upload into."""
    if caller.is_admin:
        return select(Project.id)
    roles = [r for r in Role if r.allows(Role.CONTRIBUTOR)]
    memberships = _memberships(caller).where(ProjectMembership.role.in_(roles)).subquery()
    return select(memberships.c.project_id)


def _upload_scoped(stmt: Select[Any], model: type[Any], caller: Caller) -> Select[Any]:
    """What an upload token sees: the datasets it may upload into and its own uploads' jobs."""
    datasets = select(Dataset.id).where(Dataset.project_id.in_(contributed_project_ids(caller)))
    if model is Dataset:
        return stmt.where(Dataset.id.in_(datasets))
    if model is Job:
        own = select(Upload.job_id).where(
            Upload.created_by_id == caller.user_id, Upload.job_id.is_not(None)
        )
        return stmt.where(
            Job.dataset_id.in_(datasets),
            or_(Job.created_by_id == caller.user_id, Job.id.in_(own)),
        )
    return stmt.where(false())


def sees_every_user(caller: Caller) -> bool:
    """Global admins see every account and organisation; anyone else only their own, so that
    nobody else learns who is registered."""
    return caller.is_admin


def _directory_scoped(stmt: Select[Any], model: type[Any], caller: Caller) -> Select[Any]:
    """Organisations, users and the audit log, for a session or a read token."""
    if model is AuditEvent:
        # The audit log is read with a full session: all of it by admins, the events of the
        # projects they manage by managers; a personal token reads none of it.
        if caller.scope != "all":
            return stmt.where(false())
        if caller.is_admin:
            return stmt
        return stmt.where(AuditEvent.project_id.in_(managed_project_ids(caller)))
    if sees_every_user(caller):
        return stmt
    if model is Organisation:
        return stmt.where(Organisation.id == caller.organisation_id)
    return stmt.where(User.id == caller.user_id)


# Every model a query may be scoped over; any other is refused, never returned unfiltered.
_RULED: tuple[type[Any], ...] = (
    Project,
    Roi,
    Dataset,
    Image,
    File,
    Job,
    Upload,
    Organisation,
    User,
    AuditEvent,
)


def scoped(stmt: Select[Any], model: type[Any], caller: Caller, use: Use = Use.READ) -> Select[Any]:
    """Restrict a SELECT over model to the rows the caller may see. Routes never filter by hand.

    `use` says what the rows are wanted for: reading their contents (the default), or only
    seeing them (SEE: a dataset's name and counts, a job's state; an upload token may)."""
    if model not in _RULED:
        raise TypeError(f"no access rule for {model.__name__}")
    require(caller, use)
    if model is Roi:
        # Measurements and regions drawn on an image are seen by whoever sees the image.
        return stmt.where(Roi.image_id.in_(scoped(select(Image.id), Image, caller, use)))
    if model is Upload:
        # An upload is its creator's alone, admins included: nobody else resumes or ends it.
        return stmt.where(Upload.created_by_id == caller.user_id)
    if caller.scope == "upload":
        return _upload_scoped(stmt, model, caller)
    if model in (Organisation, User, AuditEvent):
        return _directory_scoped(stmt, model, caller)
    # What is in the trash (allmicro_data.lifecycle) is hidden from everyone, admins included,
    # with everything it holds: a deleted project's datasets, a deleted dataset's images.
    live_projects = select(Project.id).where(Project.deleted_at.is_(None))
    if caller.is_admin:
        # Admins see every project, so only the readiness and trash rules remain.
        if model is Project:
            return stmt.where(Project.deleted_at.is_(None))
        if model is Dataset:
            return stmt.where(Dataset.deleted_at.is_(None), Dataset.project_id.in_(live_projects))
        projects = live_projects
    else:
        projects = visible_project_ids(caller)
        if model is Project:
            return stmt.where(Project.id.in_(projects), Project.deleted_at.is_(None))
        projects = select(Project.id).where(Project.id.in_(projects), Project.deleted_at.is_(None))
        if model is Dataset:
            return stmt.where(Dataset.project_id.in_(projects), Dataset.deleted_at.is_(None))
    datasets = select(Dataset.id).where(
        Dataset.project_id.in_(projects), Dataset.deleted_at.is_(None)
    )
    if model is Image:
        # Images are visible only once complete: status ready means pyramid and metadata written.
        return stmt.where(
            Image.dataset_id.in_(datasets),
            Image.status == ImageStatus.READY,
            Image.deleted_at.is_(None),
        )
    if model is File:
        return stmt.where(File.dataset_id.in_(datasets), File.deleted_at.is_(None))
    return stmt.where(Job.dataset_id.in_(datasets))


def get_visible(
    session: Session, caller: Caller, model: type[T], object_id: str, use: Use = Use.READ
) -> T:
    """The object if the caller may see it; otherwise NotFound, exactly as for a missing id.
    Forbidden, before any lookup, if the credential's scope does not allow `use`."""
    pk = model.id  # type: ignore[attr-defined]
    stmt = scoped(select(model).where(pk == object_id), model, caller, use)
    found = session.scalars(stmt).first()
    if found is None:
        raise NotFound(f"{model.__name__.lower()} {object_id} not found")
    return cast(T, found)


def project_role(session: Session, caller: Caller, project_id: str) -> Role | None:
    """The caller's strongest role in a project (admins count as managers), or None."""
    if caller.is_admin:
        return Role.MANAGER
    roles = session.scalars(
        select(ProjectMembership.role)
        .where(ProjectMembership.project_id == project_id)
        .where(
            or_(
                ProjectMembership.user_id == caller.user_id,
                ProjectMembership.organisation_id == caller.organisation_id,
            )
        )
    ).all()
    return max(roles, key=lambda r: r.rank) if roles else None


def require_role(
    session: Session, caller: Caller, project_id: str, needed: Role, use: Use = Use.WRITE
) -> Role:
    """The caller's role if it allows `needed` and their credential allows `use` (by default a
    change: reading what only managers see, such as the members, passes Use.READ); NotFound
    if they cannot see the project at all."""
    require(caller, use)
    role = project_role(session, caller, project_id)
    if role is None:
        raise NotFound(f"project {project_id} not found")
    if not role.allows(needed):
        raise Forbidden(f"this needs the {needed.value} role in the project")
    return role


def require_upload_target(session: Session, caller: Caller, dataset_id: str) -> Dataset:
    """The dataset if the caller may upload into it: a contributor's role, and a session, a
    password token or an upload token (not a read token)."""
    dataset = get_visible(session, caller, Dataset, dataset_id, Use.UPLOAD)
    require_role(session, caller, dataset.project_id, Role.CONTRIBUTOR, Use.UPLOAD)
    # A delivered dataset takes no more originals. (delivery imports this module.)
    from allmicro_data.delivery import require_not_frozen

    require_not_frozen(dataset)
    return dataset


def may_manage(session: Session, user: User, project_id: str) -> bool:
    """Whether a user, signed in with full rights, manages a project (share links made by
    someone who no longer does stop working)."""
    if not user.is_active:
        return False
    role = project_role(session, Caller.for_user(user), project_id)
    return role is not None and role.allows(Role.MANAGER)


def require_image_deletion(session: Session, caller: Caller, image: Image, project_id: str) -> None:
    """An image goes to the trash by a manager of its project, or by a contributor who uploaded
    every original it was read from (their own mistake); Forbidden otherwise."""
    role = require_role(session, caller, project_id, Role.CONTRIBUTOR)
    if role.allows(Role.MANAGER):
        return
    uploaders = set(
        session.scalars(
            select(File.uploaded_by_id)
            .join(ImageFile, ImageFile.file_id == File.id)
            .where(ImageFile.image_id == image.id)
        )
    )
    if uploaders != {caller.user_id}:
        raise Forbidden("only a manager, or the contributor who uploaded it, deletes an image")


def may_delete_image(session: Session, caller: Caller, image: Image, project_id: str) -> bool:
    """What require_image_deletion allows, for offering the button."""
    try:
        require_image_deletion(session, caller, image, project_id)
    except (Forbidden, NotFound):
        return False
    return True


def may_upload(caller: Caller, role: Role | None) -> bool:
    """What require_upload_target allows, told from the caller's role in the dataset's project:
    a contributor's role, and a credential that may upload."""
    return role is not None and role.allows(Role.CONTRIBUTOR) and caller.may(Use.UPLOAD)


def may_read_metrics(session: Session, caller: Caller) -> bool:
    """Whether the caller may read the installation's metrics (queue depths, stored bytes,
    routes and their traffic): admins with a session or a password token, or an active admin's
    `read` token."""
    if caller.is_admin:
        return True
    # A personal token never carries admin rights, but an admin's `read` token is what a
    # Prometheus server keeps in its credentials file: enough to read figures, nothing more.
    if caller.scope != "read":
        return False
    user = session.get(User, caller.user_id)
    return user is not None and user.is_admin and user.is_active


def require_full_session(caller: Caller) -> None:
    """Account management needs a password sign-in, not a personal access token."""
    if caller.scope != "all":
        raise Forbidden("this needs a signed-in session, not a personal access token")


def require_admin(caller: Caller) -> None:
    if not caller.is_admin or caller.scope != "all":
        raise Forbidden("this needs a global admin")


def may_administer(session: Session, caller: Caller) -> bool:
    """Whether the caller has an admin area to open: a global admin's, or a signed-in manager's
    part of it for the projects they manage."""
    if caller.scope != "all":
        return False
    if caller.is_admin:
        return True
    managed = session.scalars(managed_project_ids(caller).limit(1)).first()
    return managed is not None


def administered(stmt: Select[Any], model: type[Any], caller: Caller) -> Select[Any]:
    """Restrict a SELECT to the admin area's part for the caller: everything for a global admin,
    the projects they manage (their datasets' jobs) for a manager, nothing for anyone else or
    for a personal token."""
    if model not in (Project, Job):
        raise TypeError(f"no admin-area rule for {model.__name__}")
    if caller.scope != "all":
        return stmt.where(false())
    if caller.is_admin:
        return stmt
    managed = managed_project_ids(caller)
    if model is Project:
        return stmt.where(Project.id.in_(managed))
    return stmt.where(Job.dataset_id.in_(select(Dataset.id).where(Dataset.project_id.in_(managed))))


def require_job_action(session: Session, caller: Caller, job: Job) -> None:
    """Rerunning or dismissing a job: a contributor of its dataset's project (the people who
    upload act on their failed uploads), a manager or a global admin, with a full session."""
    require_full_session(caller)
    if caller.is_admin:
        return
    dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
    if dataset is None:
        raise Forbidden("this needs a global admin")
    require_role(session, caller, dataset.project_id, Role.CONTRIBUTOR)
