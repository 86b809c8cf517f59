"""Organisations and users: global admins manage them; everyone sees their own organisation."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from allmicro_data import directory
from allmicro_data.access import Use, get_visible, require_admin, scoped
from allmicro_data.api.deps import CallerDep, SessionDep, client_address
from allmicro_data.api.paging import Page, WindowDep
from allmicro_data.api.schemas import Name
from allmicro_data.audit import record
from allmicro_data.auth import reset_password, revoke_user_tokens
from allmicro_data.catalogue.models import Organisation, User
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
