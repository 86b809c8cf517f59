"""Authorisation in one place: which projects a caller belongs to, and the scoping of every query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Image,
    ImageStatus,
    Job,
    Project,
    ProjectMembership,
    Role,
    User,
)
from allmicro_data.errors import Forbidden, NotFound

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a signed-in user, with the scope of the credential they used."""

    user_id: str
    organisation_id: str
    email: str
    is_admin: bool = False
    scope: str = "all"  # "all", or "read" / "upload" for personal access tokens
    token_id: str | None = None

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


# How each catalogue model reaches its project; every scoped query goes through this table.
def scoped(stmt: Select[Any], model: type[Any], caller: Caller) -> Select[Any]:
    """Restrict a SELECT over model to the rows the caller may see. Routes never filter by hand."""
    if model not in (Project, Dataset, Image, File, Job):
        raise TypeError(f"no access rule for {model.__name__}")
    if caller.is_admin:
        # Admins see every project, so only the readiness rule for images remains; leaving out
        # the project subquery lets the database use the search indexes directly.
        return stmt.where(Image.status == ImageStatus.READY) if model is Image else stmt
    projects = visible_project_ids(caller)
    if model is Project:
        return stmt.where(Project.id.in_(projects))
    if model is Dataset:
        return stmt.where(Dataset.project_id.in_(projects))
    datasets = select(Dataset.id).where(Dataset.project_id.in_(projects))
    if model is Image:
        # Images are visible only once complete: status ready means pyramid and metadata written.
        return stmt.where(Image.dataset_id.in_(datasets), Image.status == ImageStatus.READY)
    if model is File:
        return stmt.where(File.dataset_id.in_(datasets))
    return stmt.where(Job.dataset_id.in_(datasets))


def get_visible(session: Session, caller: Caller, model: type[T], object_id: str) -> T:
    """The object if the caller may see it; otherwise NotFound, exactly as for a missing id."""
    pk = model.id  # type: ignore[attr-defined]
    found = session.scalars(scoped(select(model).where(pk == object_id), model, caller)).first()
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


def require_role(session: Session, caller: Caller, project_id: str, needed: Role) -> Role:
    """The caller's role if it allows `needed`; NotFound if they cannot see the project at all."""
    role = project_role(session, caller, project_id)
    if role is None:
        raise NotFound(f"project {project_id} not found")
    if not role.allows(needed):
        raise Forbidden(f"this needs the {needed.value} role in the project")
    if needed is not Role.VIEWER and caller.scope == "read":
        raise Forbidden("this token is read-only")
    if needed is Role.MANAGER and caller.scope != "all":
        raise Forbidden("personal access tokens cannot manage projects")
    return role


def require_full_session(caller: Caller) -> None:
    """Account management needs a password sign-in, not a personal access token."""
    if caller.scope != "all":
        raise Forbidden("this needs a signed-in session, not a personal access token")


def require_admin(caller: Caller) -> None:
    if not caller.is_admin or caller.scope != "all":
        raise Forbidden("this needs a global admin")
