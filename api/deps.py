"""Request dependencies: the process services, a catalogue session per request, and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from allmicro_data.access import Caller
from allmicro_data.auth import resolve_token
from allmicro_data.errors import Unauthorised
from allmicro_data.services import Services


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


def optional_caller(
    request: Request, session: Annotated[Session, Depends(db_session, scope="function")]
) -> Caller | None:
    token = bearer_token(request)
    if token is None:
        return None
    resolved = resolve_token(session, token)
    if resolved is None:
        return None
    user, access = resolved
    return Caller.for_user(user, scope=access.scope)


def current_caller(caller: Annotated[Caller | None, Depends(optional_caller)]) -> Caller:
    if caller is None:
        raise Unauthorised("sign in or send a valid bearer token")
    return caller


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


SessionDep = Annotated[Session, Depends(db_session, scope="function")]
CallerDep = Annotated[Caller, Depends(current_caller)]
ServicesDep = Annotated[Services, Depends(get_services)]
