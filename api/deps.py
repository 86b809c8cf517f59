"""Request dependencies: the process services, a catalogue session per request, and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from allmicro_data.access import Caller
from allmicro_data.auth import caller_for_token, csrf_token, unsign
from allmicro_data.catalogue.models import TokenKind
from allmicro_data.errors import Forbidden, Unauthorised
from allmicro_data.services import Services
from allmicro_data.settings import Settings, secret_key

SESSION_COOKIE = "allmicro_session"
CSRF_COOKIE = "allmicro_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def db_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    with services.session() as session:
        yield session


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def _csrf_ok(request: Request, expected: str) -> bool:
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        presented = value if isinstance(value, str) else None
    return presented is not None and presented == expected


@dataclass(frozen=True)
class PresentedToken:
    """The credential a request presents, before it is looked up."""

    plaintext: str
    kinds: tuple[TokenKind, ...]  # the kinds of token it may stand for
    from_cookie: bool  # a browser session, whose writes need the CSRF token


def presented_token(
    request: Request, settings: Settings, *, cookies: bool = True
) -> PresentedToken | None:
    """A bearer token (password or personal), else the signed session cookie when `cookies`.
    With auth.caller_for_token, the one way every endpoint (API, viewing, tus) finds its caller."""
    token = bearer_token(request)
    if token is not None:
        return PresentedToken(token, (TokenKind.BEARER, TokenKind.PERSONAL), from_cookie=False)
    cookie = request.cookies.get(SESSION_COOKIE) if cookies else None
    plaintext = unsign(cookie, secret_key(settings)) if cookie else None
    if plaintext is None:
        return None
    return PresentedToken(plaintext, (TokenKind.SESSION,), from_cookie=True)


async def optional_caller(
    request: Request,
    session: Annotated[Session, Depends(db_session, scope="function")],
    services: Annotated[Services, Depends(get_services)],
) -> Caller | None:
    """The caller from a bearer token, else from the session cookie (with CSRF on writes)."""
    presented = presented_token(request, services.settings)
    if presented is None:
        return None
    caller = caller_for_token(session, presented.plaintext, presented.kinds)
    if caller is None:
        return None
    if (
        presented.from_cookie
        and request.method not in SAFE_METHODS
        and not await _csrf_ok(
            request, csrf_token(presented.plaintext, secret_key(services.settings))
        )
    ):
        raise Forbidden("missing or wrong CSRF token")
    return caller


def current_caller(caller: Annotated[Caller | None, Depends(optional_caller)]) -> Caller:
    if caller is None:
        raise Unauthorised("sign in or send a valid bearer token")
    return caller


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


PlaneIndex = Annotated[int, Query(ge=0, le=1_000_000)]

SessionDep = Annotated[Session, Depends(db_session, scope="function")]
CallerDep = Annotated[Caller, Depends(current_caller)]
OptionalCallerDep = Annotated[Caller | None, Depends(optional_caller)]
ServicesDep = Annotated[Services, Depends(get_services)]
