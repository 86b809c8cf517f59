"""Sign-in: POST /api/auth/token (OAuth2 password form) and GET /api/me."""

from __future__ import annotations

from typing import Annotated

from allmicro_data.api.deps import CallerDep, SessionDep, client_address
from allmicro_data.api.schemas import MeOut, TokenOut, me_of
from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from allmicro_data.auth import BEARER_TTL, LoginRefused, issue_token, login
from allmicro_data.catalogue.models import TokenKind, User, utcnow
from allmicro_data.errors import NotFound, Unauthorised

router = APIRouter(prefix="/api", tags=["auth"])


@router.post("/auth/token", response_model=TokenOut, responses={401: {"description": "refused"}})
def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
) -> TokenOut:
    """Exchange an e-mail and password for a bearer token."""
    try:
        user = login(session, form.username, form.password, client_address(request))
    except LoginRefused as exc:
        # Keep the failed attempt (counter, lockout, audit) although the request fails.
        session.commit()
        raise Unauthorised(str(exc)) from None
    expires = utcnow() + BEARER_TTL
    plaintext, _ = issue_token(session, user, TokenKind.BEARER, name="api", expires_at=expires)
    return TokenOut(access_token=plaintext, expires_at=expires)


@router.get("/me", response_model=MeOut)
def me(caller: CallerDep, session: SessionDep) -> MeOut:
    """Who the presented credentials belong to."""
    user = session.get(User, caller.user_id)
    if user is None:
        raise NotFound("user not found")
    return me_of(user)
