"""Organisations, users, their tokens and usage figures: global admins manage them (managers see
their projects' usage); everyone sees their own organisation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from allmicro_data import directory
from allmicro_data.access import (
    Use,
    administered,
    get_visible,
    require_admin,
    require_full_session,
    scoped,
)
from allmicro_data.api.deps import CallerDep, SessionDep, client_address
from allmicro_data.api.paging import Page, WindowDep
from allmicro_data.api.routers.auth import PersonalTokenOut
from allmicro_data.api.schemas import Name
from allmicro_data.audit import downloaded_bytes_by_month, record
from allmicro_data.auth import reset_password, revoke_user_tokens
from allmicro_data.catalogue.models import (
    AccessToken,
    Dataset,
    File,
    Organisation,
    OrganisationKind,
    Project,
    TokenKind,
    User,
    utcnow,
)
from allmicro_data.errors import NotFound
from allmicro_data.paging import fetch

router = APIRouter(prefix="/api", tags=["admin"])


class OrganisationIn(BaseModel):
    name: Name = Field(min_length=1, max_length=200)
    kind: str = Field(pattern="^(lead_partner|partner|company)$")
    country: str | None = Field(default=None, pattern="^[A-Za-z]{2}$")


class OrganisationOut(BaseModel):
    id: str
    name: str
    kind: str
    country: str | None
    created_at: datetime

    @classmethod
    def of(cls, o: Organisation) -> OrganisationOut:
        return cls(
            id=o.id, name=o.name, kind=o.kind.value, country=o.country, created_at=o.created_at
        )


@router.get("/organisations", response_model=Page[OrganisationOut])
def list_organisations(
    caller: CallerDep, session: SessionDep, window: WindowDep
) -> Page[OrganisationOut]:
    """All organisations for admins; your own for everyone else."""
    stmt = scoped(select(Organisation), Organisation, caller)
    found = fetch(session, stmt, window, order_by=[Organisation.name])
    return Page.of(found, OrganisationOut.of)


@router.post("/organisations", response_model=OrganisationOut, status_code=201)
def create_organisation(
    body: OrganisationIn, request: Request, caller: CallerDep, session: SessionDep
) -> OrganisationOut:
    require_admin(caller)
    org = directory.create_organisation(
        session, name=body.name, kind=body.kind, country=body.country
    )
    record(
        session,
        "organisation.create",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="organisation",
        object_id=org.id,
        client_address=client_address(request),
    )
    return OrganisationOut.of(org)


@router.get("/organisations/{organisation_id}", response_model=OrganisationOut)
def get_organisation(
    organisation_id: str, caller: CallerDep, session: SessionDep
) -> OrganisationOut:
    return OrganisationOut.of(get_visible(session, caller, Organisation, organisation_id))


class OrganisationPatch(BaseModel):
    name: Name | None = Field(default=None, min_length=1, max_length=200)
    kind: str | None = Field(default=None, pattern="^(lead_partner|partner|company)$")
    country: str | None = Field(default=None, pattern="^[A-Za-z]{2}$")


@router.patch("/organisations/{organisation_id}", response_model=OrganisationOut)
def update_organisation(
    organisation_id: str,
    body: OrganisationPatch,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
) -> OrganisationOut:
    """Rename an organisation, change its kind or country (global admins)."""
    require_admin(caller)
    org = get_visible(session, caller, Organisation, organisation_id, Use.WRITE)
    changes = body.model_dump(exclude_unset=True)
    if body.name is not None:
        org.name = body.name.strip()
    if body.kind is not None:
        org.kind = OrganisationKind(body.kind)
    if "country" in changes:
        org.country = body.country.upper() if body.country else None
    directory.flush_unique(session, f"organisation {org.name!r}")
    record(
        session,
        "organisation.update",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="organisation",
        object_id=org.id,
        client_address=client_address(request),
        detail=changes,
    )
    return OrganisationOut.of(org)


class UserIn(BaseModel):
    email: Name = Field(min_length=3, max_length=320)
    organisation_id: str
    display_name: Name = Field(default="", max_length=200)
    password: str = Field(max_length=1024)
    is_admin: bool = False


class UserPatch(BaseModel):
    display_name: Name | None = Field(default=None, max_length=200)
    is_admin: bool | None = None
    is_active: bool | None = None


class UserOut(BaseModel):
    id: str
    email: str
    display_name: str
    organisation_id: str
    is_admin: bool
    is_active: bool
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(
            id=u.id,
            email=u.email,
            display_name=u.display_name,
            organisation_id=u.organisation_id,
            is_admin=u.is_admin,
            is_active=u.is_active,
            locked_until=u.locked_until,
            created_at=u.created_at,
            last_login_at=u.last_login_at,
        )


@router.get("/users", response_model=Page[UserOut])
def list_users(
    caller: CallerDep,
    session: SessionDep,
    window: WindowDep,
    organisation_id: str | None = None,
) -> Page[UserOut]:
    """Every user (global admins)."""
    require_admin(caller)
    stmt = scoped(select(User), User, caller)
    if organisation_id:
        stmt = stmt.where(User.organisation_id == organisation_id)
    return Page.of(fetch(session, stmt, window, order_by=[User.email]), UserOut.of)


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserIn, request: Request, caller: CallerDep, session: SessionDep) -> UserOut:
    require_admin(caller)
    user = directory.create_user(
        session,
        email=body.email,
        organisation_id=body.organisation_id,
        password=body.password,
        display_name=body.display_name,
        is_admin=body.is_admin,
    )
    record(
        session,
        "user.create",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="user",
        object_id=user.id,
        client_address=client_address(request),
    )
    return UserOut.of(user)


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(user_id: str, caller: CallerDep, session: SessionDep) -> UserOut:
    return UserOut.of(get_visible(session, caller, User, user_id))


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(
    user_id: str, body: UserPatch, request: Request, caller: CallerDep, session: SessionDep
) -> UserOut:
    """Rename, promote, or disable a user (global admins)."""
    require_admin(caller)
    user = get_visible(session, caller, User, user_id, Use.WRITE)
    changes = body.model_dump(exclude_none=True)
    for name, value in changes.items():
        setattr(user, name, value)
    if changes.get("is_active") is False:
        revoke_user_tokens(session, user.id)
    record(
        session,
        "user.update",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="user",
        object_id=user.id,
        client_address=client_address(request),
        detail=changes,
    )
    return UserOut.of(user)


class PasswordReset(BaseModel):
    new_password: str = Field(max_length=1024)


@router.post("/users/{user_id}/password", status_code=204, response_class=Response)
def admin_reset_password(
    user_id: str, body: PasswordReset, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Set a new password for a user, unlock the account and sign it out (global admins)."""
    require_admin(caller)
    user = get_visible(session, caller, User, user_id, Use.WRITE)
    admin = session.get(User, caller.user_id)
    assert admin is not None
    reset_password(session, admin, user, body.new_password, client_address(request))
    return Response(status_code=204)


@router.get("/users/{user_id}/tokens", response_model=list[PersonalTokenOut])
def list_user_tokens(
    user_id: str, caller: CallerDep, session: SessionDep
) -> list[PersonalTokenOut]:
    """A user's personal access tokens, revoked ones included (global admins; never secrets)."""
    require_admin(caller)
    user = get_visible(session, caller, User, user_id)
    rows = session.scalars(
        select(AccessToken)
        .where(AccessToken.user_id == user.id, AccessToken.kind == TokenKind.PERSONAL)
        .order_by(AccessToken.created_at)
    ).all()
    return [PersonalTokenOut.of(t) for t in rows]


@router.delete("/users/{user_id}/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_user_token(
    user_id: str, token_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Revoke any user's personal access token (global admins): a lost instrument PC's, say."""
    require_admin(caller)
    user = get_visible(session, caller, User, user_id, Use.WRITE)
    token = session.get(AccessToken, token_id)
    if token is None or token.user_id != user.id or token.kind is not TokenKind.PERSONAL:
        raise NotFound(f"token {token_id} not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record(
            session,
            "token.revoke",
            actor=caller.email,
            actor_user_id=caller.user_id,
            object_type="token",
            object_id=token.id,
            client_address=client_address(request),
            detail={"user_id": user.id},
        )
    return Response(status_code=204)


class MonthBytes(BaseModel):
    month: str = Field(description="YYYY-MM (UTC)")
    bytes: int


class ProjectUsageOut(BaseModel):
    project_id: str
    name: str
    kind: str
    client_organisation_id: str | None
    quota_bytes: int | None
    stored_bytes: int = Field(description="bytes of originals stored")
    downloaded: list[MonthBytes] = Field(description="bytes downloaded, per month")


class OrganisationUsageOut(BaseModel):
    organisation_id: str
    name: str
    projects: int = Field(description="projects run for this client organisation")
    stored_bytes: int
    downloaded: list[MonthBytes]


class UsageOut(BaseModel):
    months: list[str]
    projects: list[ProjectUsageOut]
    organisations: list[OrganisationUsageOut]


def _months_back(now: datetime, count: int) -> list[str]:
    """The count months up to now's, oldest first, as YYYY-MM."""
    year, month = now.year, now.month
    months = []
    for _ in range(count):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months[::-1]


@router.get("/admin/usage", response_model=UsageOut)
def usage(
    caller: CallerDep,
    session: SessionDep,
    months: Annotated[int, Query(ge=1, le=36)] = 6,
) -> UsageOut:
    """Bytes stored and bytes downloaded per month, per project and per client organisation:
    every project for global admins, the projects they manage for managers. Downloads are the
    originals, archives and shared files served (the audit log's download events)."""
    require_full_session(caller)
    projects = session.scalars(
        administered(select(Project), Project, caller).order_by(Project.name)
    ).all()
    ids = [p.id for p in projects]
    shown = _months_back(datetime.now(UTC), months)
    year, month = (int(part) for part in shown[0].split("-"))
    since = datetime(year, month, 1, tzinfo=UTC)
    downloads = downloaded_bytes_by_month(
        session, select(Project.id).where(Project.id.in_(ids)), since
    )
    stored = dict(
        session.execute(
            select(Dataset.project_id, func.coalesce(func.sum(File.size), 0))
            .join(File, File.dataset_id == Dataset.id)
            .where(Dataset.project_id.in_(ids))
            .group_by(Dataset.project_id)
        ).all()
    )

    def per_month(project_ids: list[str]) -> list[MonthBytes]:
        return [
            MonthBytes(month=m, bytes=sum(downloads.get((pid, m), 0) for pid in project_ids))
            for m in shown
        ]

    rows = [
        ProjectUsageOut(
            project_id=p.id,
            name=p.name,
            kind=p.kind.value,
            client_organisation_id=p.client_organisation_id,
            quota_bytes=p.quota_bytes,
            stored_bytes=int(stored.get(p.id, 0)),
            downloaded=per_month([p.id]),
        )
        for p in projects
    ]
    clients: dict[str, list[Project]] = {}
    for p in projects:
        if p.client_organisation_id:
            clients.setdefault(p.client_organisation_id, []).append(p)
    organisations = []
    for org_id, theirs in clients.items():
        org = session.get(Organisation, org_id)
        organisations.append(
            OrganisationUsageOut(
                organisation_id=org_id,
                name=org.name if org else org_id,
                projects=len(theirs),
                stored_bytes=sum(int(stored.get(p.id, 0)) for p in theirs),
                downloaded=per_month([p.id for p in theirs]),
            )
        )
    organisations.sort(key=lambda o: o.name)
    return UsageOut(months=shown, projects=rows, organisations=organisations)
