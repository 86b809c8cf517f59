"""Authentication: password logins with lockout, and tokens stored only as their sha256."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data.audit import record
from allmicro_data.catalogue.models import AccessToken, TokenKind, User, utcnow
from allmicro_data.directory import find_user_by_email
from allmicro_data.passwords import verify_password

MAX_FAILED_LOGINS = 20
LOCKOUT = timedelta(minutes=15)
BEARER_TTL = timedelta(hours=12)
TOKEN_PREFIX = "amd_"  # noqa: S105 - a marker, not a secret


class LoginRefused(Exception):
    """Wrong e-mail or password, or a locked or disabled account; deliberately one message."""

    def __str__(self) -> str:
        return "incorrect e-mail or password"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def login(session: Session, email: str, password: str, client_address: str | None) -> User:
    """The user whose credentials these are. Every outcome takes one argon2 verification,
    so that unknown accounts cannot be told from wrong passwords by timing."""
    user = find_user_by_email(session, email)
    now = utcnow()
    ok = verify_password(password, user.password_hash if user else None)
    locked = user is not None and user.locked_until is not None and user.locked_until > now
    if user is None or not ok or locked or not user.is_active:
        reason = (
            "unknown account"
            if user is None
            else "locked"
            if locked
            else "disabled"
            if not user.is_active
            else "wrong password"
        )
        if user is not None and not ok:
            user.failed_logins += 1
            if user.failed_logins >= MAX_FAILED_LOGINS:
                user.locked_until = now + LOCKOUT
                user.failed_logins = 0
        record(
            session,
            "login.failure",
            actor=email.strip().lower()[:320],
            actor_user_id=user.id if user else None,
            client_address=client_address,
            success=False,
            detail={"reason": reason},
        )
        raise LoginRefused()
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    record(
        session,
        "login.success",
        actor=user.email,
        actor_user_id=user.id,
        client_address=client_address,
    )
    return user


def issue_token(
    session: Session,
    user: User,
    kind: TokenKind,
    *,
    name: str = "",
    scope: str = "all",
    expires_at: datetime | None = None,
) -> tuple[str, AccessToken]:
    """A new random token for user; the plaintext is returned once and never stored."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AccessToken(
        user_id=user.id,
        token_hash=token_hash(plaintext),
        kind=kind,
        name=name,
        scope=scope,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return plaintext, token


def resolve_token(session: Session, plaintext: str) -> tuple[User, AccessToken] | None:
    """The active user and token a presented token stands for, or None."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    token = session.scalars(
        select(AccessToken).where(AccessToken.token_hash == token_hash(plaintext))
    ).first()
    now = utcnow()
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    user = session.get(User, token.user_id)
    if user is None or not user.is_active:
        return None
    # Write last use at most once a minute, so that reads do not all become writes.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        token.last_used_at = now
    return user, token
