"""Sign-in and credentials: bearer tokens, browser sessions, personal access tokens, passwords."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select

from allmicro_data.access import require_full_session
from allmicro_data.api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CallerDep,
    ServicesDep,
    SessionDep,
    client_address,
)
from allmicro_data.api.schemas import MeOut, Name, TokenOut, me_of
from allmicro_data.auth import (
    BEARER_TTL,
    LoginPolicy,
    LoginRefused,
    change_password,
    create_personal_token,
    csrf_token,
    issue_token,
    login,
    revoke_personal_token,
    sign,
    sign_out,
)
from allmicro_data.catalogue.models import AccessToken, TokenKind, User, utcnow
from allmicro_data.errors import Forbidden, NotFound, Unauthorised
from allmicro_data.ldap_login import LdapDirectory
from allmicro_data.services import Services
from allmicro_data.settings import secret_key

router = APIRouter(prefix="/api", tags=["auth"])

REFUSED: dict[int | str, dict[str, Any]] = {
    401: {"description": "incorrect e-mail or password"},
    429: {"description": "too many failed sign-ins from this address"},
}


def _policy(services: Services) -> LoginPolicy:
    s = services.settings
    return LoginPolicy(
        max_failures=s.login_max_failures,
        lockout=timedelta(seconds=s.login_lockout_seconds),
        address_limit=s.login_address_limit,
        address_window=timedelta(seconds=s.login_address_window_seconds),
        account_max_failures=s.login_account_max_failures,
    )


def _login(
    form: OAuth2PasswordRequestForm, request: Request, session: SessionDep, services: Services
) -> User:
    try:
        return login(
            session,
            form.username,
            form.password,
            client_address(request),
            _policy(services),
            directory=LdapDirectory.from_settings(services.settings),
        )
    except LoginRefused as exc:
        # Keep the failed attempt (counter, lockout, audit) although the request fails.
        session.commit()
        raise Unauthorised(str(exc)) from None


@router.post("/auth/token", response_model=TokenOut, responses=REFUSED)
def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    services: ServicesDep,
) -> TokenOut:
    """Exchange an e-mail and password for a bearer token (valid 12 hours)."""
    user = _login(form, request, session, services)
    expires = utcnow() + BEARER_TTL
    plaintext, _ = issue_token(session, user, TokenKind.BEARER, name="api", expires_at=expires)
    return TokenOut(access_token=plaintext, expires_at=expires)


class SessionOut(BaseModel):
    user: MeOut
    csrf_token: str = Field(description="send as X-CSRF-Token (or form field csrf_token) on writes")


@router.post(
    "/auth/login",
    response_model=SessionOut,
    responses={**REFUSED, 403: {"description": "posted from another site"}},
)
def browser_login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
) -> SessionOut:
    """Browser sign-in: sets an HttpOnly, SameSite=Lax, signed session cookie.

    Refused (403) when the browser says the form was posted from another site.
    """
    _refuse_cross_site(request)
    user = _login(form, request, session, services)
    csrf = start_session(user, request, response, session, services)
    return SessionOut(user=me_of(user), csrf_token=csrf)


def start_session(
    user: User, request: Request, response: Response, session: SessionDep, services: Services
) -> str:
    """A new browser session for a signed-in user, in cookies set on response; its CSRF token."""
    hours = services.settings.session_hours
    plaintext, _ = issue_token(
        session,
        user,
        TokenKind.SESSION,
        name="browser",
        expires_at=utcnow() + timedelta(hours=hours),
    )
    key = secret_key(services.settings)
    secure = request.url.scheme == "https"
    max_age = int(hours * 3600)
    response.set_cookie(
        SESSION_COOKIE,
        sign(plaintext, key),
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
    csrf = csrf_token(plaintext, key)
    # Readable by the page's scripts, which echo it in X-CSRF-Token.
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="lax", secure=secure, path="/"
    )
    return csrf


def _refuse_cross_site(request: Request) -> None:
    """Login CSRF: another site's page must not sign its visitor in to an account of the
    site's choosing (whose uploads the visitor would then make). Browsers say where a request
    comes from, in Sec-Fetch-Site or else Origin; a client that sends neither (curl, a script)
    is no browser a page could drive, and goes through."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        # "none": typed by the user; "same-site" is another origin (a sibling subdomain).
        if site.lower() not in ("same-origin", "none"):
            raise Forbidden("sign-in from another site refused")
        return
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin.lower() != own.lower():
            raise Forbidden("sign-in from another site refused")


@router.post("/auth/logout", status_code=204, response_class=Response)
def logout(caller: CallerDep, session: SessionDep, request: Request) -> Response:
    """End the credential the request was made with: the browser session, the bearer token or
    the personal access token (which is revoked, as by DELETE /api/tokens/{id}). Capability
    URLs minted with it stop working too."""
    sign_out(session, caller.token_id, client_address(request))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=MeOut)
def me(caller: CallerDep, session: SessionDep) -> MeOut:
    """Who the presented credentials belong to."""
    user = session.get(User, caller.user_id)
    if user is None:
        raise NotFound("user not found")
    return me_of(user)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


@router.post("/me/password", status_code=204, response_class=Response)
def change_my_password(
    body: PasswordChange, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Change your password; your other sessions and bearer tokens are signed out."""
    require_full_session(caller)
    user = session.get(User, caller.user_id)
    if user is None:
        raise NotFound("user not found")
    change_password(
        session,
        user,
        body.current_password,
        body.new_password,
        keep_token_id=caller.token_id,
        client_address=client_address(request),
    )
    return Response(status_code=204)


class PersonalTokenIn(BaseModel):
    name: Name = Field(min_length=1, max_length=200, description="e.g. the instrument PC's name")
    scope: str = Field(default="upload", pattern="^(read|upload)$")
    expires_at: AwareDatetime | None = None


class PersonalTokenOut(BaseModel):
    id: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, t: AccessToken) -> PersonalTokenOut:
        return cls(
            id=t.id,
            name=t.name,
            scope=t.scope,
            created_at=t.created_at,
            expires_at=t.expires_at,
            last_used_at=t.last_used_at,
            revoked=t.revoked_at is not None,
        )


class NewPersonalTokenOut(PersonalTokenOut):
    token: str = Field(description="shown only now; store it safely")


@router.post("/tokens", response_model=NewPersonalTokenOut, status_code=201)
def create_token(
    body: PersonalTokenIn, request: Request, caller: CallerDep, session: SessionDep
) -> NewPersonalTokenOut:
    """Create a personal access token (`read` or `upload` scope) for an instrument PC or script."""
    require_full_session(caller)
    user = session.get(User, caller.user_id)
    if user is None:
        raise NotFound("user not found")
    plaintext, access = create_personal_token(
        session,
        user,
        name=body.name,
        scope=body.scope,
        expires_at=body.expires_at,
        client_address=client_address(request),
    )
    return NewPersonalTokenOut(**PersonalTokenOut.of(access).model_dump(), token=plaintext)


@router.get("/tokens", response_model=list[PersonalTokenOut])
def list_tokens(caller: CallerDep, session: SessionDep) -> list[PersonalTokenOut]:
    """Your personal access tokens (never their secrets); account management, as creating and
    revoking them is, needs a session or a password token."""
    require_full_session(caller)
    rows = session.scalars(
        select(AccessToken)
        .where(AccessToken.user_id == caller.user_id, AccessToken.kind == TokenKind.PERSONAL)
        .order_by(AccessToken.created_at)
    ).all()
    return [PersonalTokenOut.of(t) for t in rows]


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_token(
    token_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Revoke one of your personal access tokens."""
    require_full_session(caller)
    user = session.get(User, caller.user_id)
    if user is None:
        raise NotFound("user not found")
    revoke_personal_token(session, user, token_id, client_address(request))
    return Response(status_code=204)
