"""Request dependencies: the process services, a catalogue session per request, and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from allmicro_data.access import Caller
from allmicro_data.auth import csrf_token, resolve_token, unsign
from allmicro_data.catalogue.models import TokenKind
from allmicro_data.errors import Forbidden, Unauthorised
from allmicro_data.services import Services
from allmicro_data.settings import secret_key

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


async def optional_caller(
    request: Request,
    session: Annotated[Session, Depends(db_session, scope="function")],
    services: Annotated[Services, Depends(get_services)],
) -> Caller | None:
    """The caller from a bearer token, else from the session cookie (with CSRF on writes)."""
    token = bearer_token(request)
    if token is not None:
        resolved = resolve_token(session, token, (TokenKind.BEARER, TokenKind.PERSONAL))
        if resolved is None:
            return None
        user, access = resolved
        return Caller.for_user(user, scope=access.scope, token_id=access.id)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    key = secret_key(services.settings)
    plaintext = unsign(cookie, key)
    if plaintext is None:
        return None
    resolved = resolve_token(session, plaintext, (TokenKind.SESSION,))
    if resolved is None:
        return None
    if request.method not in SAFE_METHODS and not await _csrf_ok(
        request, csrf_token(plaintext, key)
    ):
        raise Forbidden("missing or wrong CSRF token")
    user, access = resolved
    return Caller.for_user(user, scope=access.scope, token_id=access.id)


def current_caller(caller: Annotated[Caller | None, Depends(optional_caller)]) -> Caller:
    if caller is None:
        raise Unauthorised("sign in or send a valid bearer token")
    return caller


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


# Page sizes and offsets, bounded so that no database is asked for an absurd OFFSET.
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="items to skip")]
PlaneIndex = Annotated[int, Query(ge=0, le=1_000_000)]

SessionDep = Annotated[Session, Depends(db_session, scope="function")]
CallerDep = Annotated[Caller, Depends(current_caller)]
OptionalCallerDep = Annotated[Caller | None, Depends(optional_caller)]
ServicesDep = Annotated[Services, Depends(get_services)]
