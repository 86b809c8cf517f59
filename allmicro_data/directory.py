"""People and projects: organisations, users, projects, datasets and memberships."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from allmicro_data.audit import record
from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Image,
    ImageStatus,
    Organisation,
    OrganisationKind,
    Project,
    ProjectInvitation,
    ProjectKind,
    ProjectMembership,
    Role,
    User,
)
from allmicro_data.errors import Conflict, Invalid, NotFound
from allmicro_data.passwords import WeakPassword, hash_password


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise Invalid(f"unknown role {role!r}") from None


def _require_project(session: Session, project_id: str) -> None:
    if session.get(Project, project_id) is None:
        raise NotFound(f"project {project_id} not found")


def flush_unique(session: Session, what: str) -> None:
    """Flush, turning a unique-constraint violation into a Conflict about `what`."""
    _flush(session, what)


def _flush(session: Session, what: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"{what} already exists") from None


def create_organisation(
    session: Session, *, name: str, kind: str, country: str | None = None
) -> Organisation:
    name = name.strip()
    if not name:
        raise Invalid("an organisation needs a name")
    try:
        org_kind = OrganisationKind(kind)
    except ValueError:
        raise Invalid(f"unknown organisation kind {kind!r}") from None
    org = Organisation(name=name, kind=org_kind, country=country.upper() if country else None)
    session.add(org)
    _flush(session, f"organisation {name!r}")
    return org


def find_organisation(session: Session, id_or_name: str) -> Organisation:
    org = session.get(Organisation, id_or_name) if _is_uuid(id_or_name) else None
    org = (
        org or session.scalars(select(Organisation).where(Organisation.name == id_or_name)).first()
    )
    if org is None:
        raise NotFound(f"organisation {id_or_name!r} not found")
    return org


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    session: Session,
    *,
    email: str,
    organisation_id: str,
    password: str | None,
    display_name: str = "",
    is_admin: bool = False,
) -> User:
    email = normalise_email(email)
    if "@" not in email:
        raise Invalid(f"{email!r} is not an e-mail address")
    if session.get(Organisation, organisation_id) is None:
        raise NotFound(f"organisation {organisation_id} not found")
    try:
        password_hash = hash_password(password) if password is not None else None
    except WeakPassword as exc:
        raise Invalid(str(exc)) from None
    user = User(
        email=email,
        organisation_id=organisation_id,
        password_hash=password_hash,
        display_name=display_name,
        is_admin=is_admin,
    )
    session.add(user)
    _flush(session, f"user {email!r}")
    accept_invitations(session, user)
    return user


def find_user(session: Session, id_or_email: str) -> User:
    user = session.get(User, id_or_email) if _is_uuid(id_or_email) else None
    user = (
        user
        or session.scalars(select(User).where(User.email == normalise_email(id_or_email))).first()
    )
    if user is None:
        raise NotFound(f"user {id_or_email!r} not found")
    return user


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == normalise_email(email))).first()


def create_project(
    session: Session,
    *,
    name: str,
    kind: str = "research",
    client_organisation_id: str | None = None,
    description: str = "",
) -> Project:
    name = name.strip()
    if not name:
        raise Invalid("a project needs a name")
    try:
        project_kind = ProjectKind(kind)
    except ValueError:
        raise Invalid(f"unknown project kind {kind!r}") from None
    if project_kind is ProjectKind.PILOT:
        if client_organisation_id is None:
            raise Invalid("a pilot project names its client company")
        client = session.get(Organisation, client_organisation_id)
        if client is None or client.kind is not OrganisationKind.COMPANY:
            raise Invalid("the client of a pilot project must be a company")
    elif client_organisation_id is not None:
        raise Invalid("only pilot projects have a client company")
    project = Project(
        name=name,
        kind=project_kind,
        client_organisation_id=client_organisation_id,
        description=description,
    )
    session.add(project)
    _flush(session, f"project {name!r}")
    return project


def find_project(session: Session, id_or_name: str) -> Project:
    project = session.get(Project, id_or_name) if _is_uuid(id_or_name) else None
    project = project or session.scalars(select(Project).where(Project.name == id_or_name)).first()
    if project is None:
        raise NotFound(f"project {id_or_name!r} not found")
    return project


def create_dataset(
    session: Session,
    *,
    project_id: str,
    name: str,
    description: str = "",
    created_by_id: str | None = None,
) -> Dataset:
    name = name.strip()
    if not name:
        raise Invalid("a dataset needs a name")
    _require_project(session, project_id)
    dataset = Dataset(
        project_id=project_id, name=name, description=description, created_by_id=created_by_id
    )
    session.add(dataset)
    _flush(session, f"dataset {name!r} in this project")
    return dataset


def add_membership(
    session: Session,
    *,
    project_id: str,
    role: str,
    user_id: str | None = None,
    organisation_id: str | None = None,
) -> ProjectMembership:
    """Give a user or an organisation a role in a project; an existing membership changes role."""
    if (user_id is None) == (organisation_id is None):
        raise Invalid("a membership is for exactly one user or one organisation")
    project_role = _role(role)
    _require_project(session, project_id)
    if user_id is not None and session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} not found")
    if organisation_id is not None and session.get(Organisation, organisation_id) is None:
        raise NotFound(f"organisation {organisation_id} not found")
    existing = session.scalars(
        select(ProjectMembership).where(
            ProjectMembership.project_id == project_id,
            ProjectMembership.user_id == user_id
            if user_id
            else ProjectMembership.organisation_id == organisation_id,
        )
    ).first()
    if existing is not None:
        existing.role = project_role
        session.flush()
        return existing
    membership = ProjectMembership(
        project_id=project_id, user_id=user_id, organisation_id=organisation_id, role=project_role
    )
    session.add(membership)
    _flush(session, "this membership")
    return membership


def invite(
    session: Session, *, project_id: str, email: str, role: str, invited_by_id: str | None
) -> ProjectInvitation:
    """Offer a role in a project to an e-mail address, whether or not it has an account yet:
    the answer is the same either way, so a manager learns nothing about who is registered
    (in other organisations least of all). It takes effect when that user is created or next
    signs in (accept_invitations); inviting the address again changes the role."""
    email = normalise_email(email)
    if "@" not in email:
        raise Invalid(f"{email!r} is not an e-mail address")
    project_role = _role(role)
    _require_project(session, project_id)
    invitation = session.scalars(
        select(ProjectInvitation).where(
            ProjectInvitation.project_id == project_id, ProjectInvitation.email == email
        )
    ).first()
    if invitation is None:
        invitation = ProjectInvitation(project_id=project_id, email=email, role=project_role)
        session.add(invitation)
    invitation.role = project_role
    invitation.invited_by_id = invited_by_id
    _flush(session, "this invitation")
    return invitation


def accept_invitations(session: Session, user: User) -> list[ProjectMembership]:
    """Turn the invitations to the user's e-mail address into memberships (when the user is
    created, and at each sign-in); each is recorded in the audit log."""
    invitations = session.scalars(
        select(ProjectInvitation)
        .where(ProjectInvitation.email == user.email)
        .order_by(ProjectInvitation.created_at)
    ).all()
    memberships = []
    for invitation in invitations:
        membership = add_membership(
            session, project_id=invitation.project_id, role=invitation.role, user_id=user.id
        )
        record(
            session,
            "invitation.accept",
            actor=user.email,
            actor_user_id=user.id,
            object_type="membership",
            object_id=membership.id,
            project_id=invitation.project_id,
            detail={"invitation_id": invitation.id, "role": invitation.role.value},
        )
        session.delete(invitation)
        memberships.append(membership)
    session.flush()
    return memberships


def count_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.is_admin)) or 0


def remove_membership(
    session: Session, *, project_id: str, membership_id: str
) -> ProjectMembership:
    membership = session.get(ProjectMembership, membership_id)
    if membership is None or membership.project_id != project_id:
        raise NotFound(f"membership {membership_id} not found")
    session.delete(membership)
    session.flush()
    return membership


@dataclass(frozen=True)
class Totals:
    datasets: int
    images: int
    files: int
    bytes: int


def totals(
    session: Session, *, project_id: str | None = None, dataset_id: str | None = None
) -> Totals:
    """Counts and stored size of a project or a dataset (ready images only; not what is in
    the trash)."""
    if dataset_id is not None:
        dataset_ids = select(Dataset.id).where(Dataset.id == dataset_id)
    else:
        dataset_ids = select(Dataset.id).where(
            Dataset.project_id == project_id, Dataset.deleted_at.is_(None)
        )
    datasets = session.scalar(select(func.count()).select_from(dataset_ids.subquery())) or 0
    images = (
        session.scalar(
            select(func.count())
            .select_from(Image)
            .where(
                Image.dataset_id.in_(dataset_ids),
                Image.status == ImageStatus.READY,
                Image.deleted_at.is_(None),
            )
        )
        or 0
    )
    files, size = session.execute(
        select(func.count(File.id), func.coalesce(func.sum(File.size), 0)).where(
            File.dataset_id.in_(dataset_ids), File.deleted_at.is_(None)
        )
    ).one()
    return Totals(datasets=datasets, images=images, files=int(files), bytes=int(size))
