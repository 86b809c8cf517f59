"""Authentication: password logins with lockout and throttling, signed session cookies with CSRF
tokens, and bearer and personal access tokens stored only as their sha256."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from allmicro_data.access import Caller
from allmicro_data.audit import record
from allmicro_data.catalogue.models import AccessToken, AuditEvent, TokenKind, User, utcnow
from allmicro_data.directory import accept_invitations, find_user_by_email
from allmicro_data.errors import DomainError, Invalid, NotFound
from allmicro_data.institutional import AccountRefused, InstitutionalAccount, user_for_account
from allmicro_data.ldap_login import DirectoryUnavailable, LdapDirectory
from allmicro_data.passwords import WeakPassword, hash_password, verify_password
from allmicro_data.settings import OrganisationRule

log = logging.getLogger(__name__)

TOKEN_PREFIX = "amd_"  # noqa: S105 - a marker that makes leaked tokens easy to find, not a secret
BEARER_TTL = timedelta(hours=12)
TOKEN_SCOPES = ("read", "upload")


@dataclass(frozen=True)
class LoginPolicy:
    """How many failed sign-ins are tolerated.

    max_failures: to one account from one address within `lockout`, then that address is
    refused for that account; account_max_failures: to one account from anywhere within
    `lockout`, then the account is locked for everyone (clear abuse: many addresses);
    address_limit: from one address to any accounts within address_window.
    """

    max_failures: int = 20
    lockout: timedelta = timedelta(minutes=15)
    address_limit: int = 100
    address_window: timedelta = timedelta(minutes=15)
    account_max_failures: int = 500


class LoginRefused(Exception):
    """Wrong e-mail or password, or a locked or disabled account: deliberately one message."""

    def __str__(self) -> str:
        return "incorrect e-mail or password"


class LoginThrottled(DomainError):
    status = 429
    title = "Too many attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed sign-ins from this address; try again later")
        self.retry_after = max(1, retry_after)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_address(
    session: Session, client_address: str | None, policy: LoginPolicy, now: datetime
) -> None:
    if not client_address:
        return
    since = now - policy.address_window
    failures = session.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.client_address == client_address,
            AuditEvent.action == "login.failure",
            AuditEvent.at >= since,
        )
    )
    if (failures or 0) >= policy.address_limit:
        raise LoginThrottled(int(policy.address_window.total_seconds()))


def _check_account_from_address(
    session: Session, email: str, client_address: str | None, policy: LoginPolicy, now: datetime
) -> None:
    """Refuse an address that failed too often for this account, before any password check.

    Keyed by the e-mail as typed (normalised), not the user, so that an unknown address is
    throttled exactly like a real one and the 429 tells nothing about who has an account.
    """
    since = now - policy.lockout
    failed_at = session.scalars(
        select(AuditEvent.at)
        .where(
            AuditEvent.client_address == client_address
            if client_address
            else AuditEvent.client_address.is_(None),
            AuditEvent.action == "login.failure",
            AuditEvent.at >= since,
            AuditEvent.actor == email,
        )
        .order_by(AuditEvent.at.desc())
        .limit(policy.max_failures)
    ).all()
    if len(failed_at) >= policy.max_failures:
        # Open again once the oldest of the last max_failures leaves the window.
        raise LoginThrottled(int((failed_at[-1] + policy.lockout - now).total_seconds()) + 1)


def _account_failures(session: Session, user: User, policy: LoginPolicy, now: datetime) -> int:
    """Failed sign-ins to this account from every address within the lockout window."""
    count = session.scalar(
        select(func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.actor_user_id == user.id,
            AuditEvent.action == "login.failure",
            AuditEvent.at >= now - policy.lockout,
        )
    )
    return count or 0


def login(
    session: Session,
    email: str,
    password: str,
    client_address: str | None,
    policy: LoginPolicy | None = None,
    directory: LdapDirectory | None = None,
) -> User:
    """The user whose credentials these are.

    Every outcome costs one argon2 verification, so an unknown account cannot be told from a
    wrong password by timing; locked and disabled accounts get the same message as a wrong
    password. Failures count towards the address's throttle, the throttle of this account from
    this address, and, far higher, the account's lockout: someone guessing from elsewhere
    cannot lock the owner out unless they guess from very many addresses.
    """
    policy = policy or LoginPolicy()
    now = utcnow()
    actor = email.strip().lower()[:320]
    _check_address(session, client_address, policy, now)
    _check_account_from_address(session, actor, client_address, policy, now)
    user = find_user_by_email(session, email)
    refusal: str | None = None
    if directory is not None and (user is None or user.password_hash is None):
        # No local password: the directory decides (the name typed may be a uid, not an e-mail).
        user, ok, refusal = _directory_login(session, directory, email, password, user)
    else:
        ok = verify_password(password, user.password_hash if user else None)
    locked = user is not None and user.locked_until is not None and user.locked_until > now
    if user is None or not ok or locked or not user.is_active:
        if refusal is not None:
            reason = refusal
        elif user is None:
            reason = "unknown account"
        elif locked:
            reason = "locked"
        elif not ok:
            reason = "wrong password"
        else:
            reason = "disabled"
        if user is not None and not ok and not locked:
            user.failed_logins += 1
            # This failure is not recorded yet, hence + 1.
            if _account_failures(session, user, policy, now) + 1 >= policy.account_max_failures:
                user.locked_until = now + policy.lockout
                user.failed_logins = 0
                reason = "wrong password; account locked"
        record(
            session,
            "login.failure",
            actor=actor,
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
    # Roles offered to this address while the account already existed start now.
    accept_invitations(session, user)
    return user


def _directory_login(
    session: Session, directory: LdapDirectory, name: str, password: str, user: User | None
) -> tuple[User | None, bool, str | None]:
    """(user, password right, why refused) after asking the directory; a wrong password in
    the directory counts like a wrong local one."""
    try:
        account = directory.authenticate(name, password)
    except DirectoryUnavailable as exc:
        log.error("LDAP sign-in: no directory server usable: %s", exc)
        return user, False, "directory unavailable"
    if account is None:
        return user, False, None
    try:
        return user_for_account(session, account, directory.rules), True, None
    except AccountRefused as exc:
        return None, True, f"institutional account refused: {exc}"


def institutional_login(
    session: Session,
    account: InstitutionalAccount,
    rules: Sequence[OrganisationRule],
    client_address: str | None,
) -> User:
    """The user an account an identity provider vouched for signs in as (OpenID Connect);
    disabled and locked users are refused like at the password form."""
    now = utcnow()
    refusal = None
    try:
        user: User | None = user_for_account(session, account, rules)
    except AccountRefused as exc:
        user, refusal = None, f"institutional account refused: {exc}"
    if user is not None and user.locked_until is not None and user.locked_until > now:
        refusal = "locked"
    elif user is not None and not user.is_active:
        refusal = "disabled"
    if user is None or refusal is not None:
        record(
            session,
            "login.failure",
            actor=(account.email or account.subject)[:320],
            actor_user_id=user.id if user else None,
            client_address=client_address,
            success=False,
            detail={"reason": refusal, "issuer": account.issuer},
        )
        raise LoginRefused()
    user.last_login_at = now
    record(
        session,
        "login.success",
        actor=user.email,
        actor_user_id=user.id,
        client_address=client_address,
        detail={"issuer": account.issuer},
    )
    accept_invitations(session, user)
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


def resolve_token(
    session: Session, plaintext: str, kinds: tuple[TokenKind, ...] | None = None
) -> tuple[User, AccessToken] | None:
    """The active user and token a presented token stands for, or None."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    token = session.scalars(
        select(AccessToken).where(AccessToken.token_hash == token_hash(plaintext))
    ).first()
    return _usable(session, token, kinds)


def resolve_token_id(session: Session, token_id: str) -> tuple[User, AccessToken] | None:
    """The active user and token of a credential named by its id (the one that minted a
    capability), or None once it is revoked, expired, or its user disabled."""
    return _usable(session, session.get(AccessToken, token_id), None)


def caller_for_token(
    session: Session, plaintext: str, kinds: tuple[TokenKind, ...]
) -> Caller | None:
    """The caller a presented credential stands for, with its scope and id, or None: the one
    place where a token becomes a caller (API, viewing and tus requests alike)."""
    resolved = resolve_token(session, plaintext, kinds)
    if resolved is None:
        return None
    user, token = resolved
    return Caller.for_user(user, scope=token.scope, token_id=token.id)


def _usable(
    session: Session, token: AccessToken | None, kinds: tuple[TokenKind, ...] | None
) -> tuple[User, AccessToken] | None:
    now = utcnow()
    if token is None or token.revoked_at is not None:
        return None
    if kinds is not None and token.kind not in kinds:
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


def create_personal_token(
    session: Session,
    user: User,
    *,
    name: str,
    scope: str,
    expires_at: datetime | None,
    client_address: str | None = None,
) -> tuple[str, AccessToken]:
    """A personal access token for an instrument PC or a script; `read` or `upload` scope."""
    if scope not in TOKEN_SCOPES:
        raise Invalid(f"scope must be one of {', '.join(TOKEN_SCOPES)}")
    if expires_at is not None and expires_at <= utcnow():
        raise Invalid("the expiry must be in the future")
    plaintext, token = issue_token(
        session, user, TokenKind.PERSONAL, name=name, scope=scope, expires_at=expires_at
    )
    record(
        session,
        "token.create",
        actor=user.email,
        actor_user_id=user.id,
        object_type="token",
        object_id=token.id,
        client_address=client_address,
        detail={"name": name, "scope": scope},
    )
    return plaintext, token


def revoke_personal_token(
    session: Session, user: User, token_id: str, client_address: str | None = None
) -> None:
    token = session.get(AccessToken, token_id)
    if token is None or token.user_id != user.id or token.kind is not TokenKind.PERSONAL:
        raise NotFound(f"token {token_id} not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record(
            session,
            "token.revoke",
            actor=user.email,
            actor_user_id=user.id,
            object_type="token",
            object_id=token.id,
            client_address=client_address,
        )


def sign_out(session: Session, token_id: str | None, client_address: str | None) -> None:
    """End the credential a request was made with (logout). A personal token is revoked like
    DELETE /api/tokens/{id} would: presenting it and asking to sign out can mean nothing else."""
    token = session.get(AccessToken, token_id) if token_id is not None else None
    if token is None or token.revoked_at is not None:
        return
    token.revoked_at = utcnow()
    if token.kind is TokenKind.PERSONAL:
        user = session.get(User, token.user_id)
        record(
            session,
            "token.revoke",
            actor=user.email if user else None,
            actor_user_id=token.user_id,
            object_type="token",
            object_id=token.id,
            client_address=client_address,
            detail={"by": "logout"},
        )


def revoke_user_tokens(session: Session, user_id: str, *, keep_token_id: str | None = None) -> None:
    """Sign a user out everywhere (after a password change or reset)."""
    stmt = (
        update(AccessToken)
        .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
        .where(AccessToken.kind.in_([TokenKind.SESSION, TokenKind.BEARER]))
        .values(revoked_at=utcnow())
    )
    if keep_token_id is not None:
        stmt = stmt.where(AccessToken.id != keep_token_id)
    session.execute(stmt)


def change_password(
    session: Session,
    user: User,
    current: str,
    new: str,
    *,
    keep_token_id: str | None,
    client_address: str | None,
) -> None:
    if not verify_password(current, user.password_hash):
        record(
            session,
            "password.change",
            actor=user.email,
            actor_user_id=user.id,
            client_address=client_address,
            success=False,
        )
        raise Invalid("the current password is not correct")
    set_password(user, new)
    revoke_user_tokens(session, user.id, keep_token_id=keep_token_id)
    record(
        session,
        "password.change",
        actor=user.email,
        actor_user_id=user.id,
        client_address=client_address,
    )


def reset_password(
    session: Session, admin: User | None, user: User, new: str, client_address: str | None
) -> None:
    """An admin (None: the server's own CLI) sets a new password: the account is unlocked and
    signed out everywhere."""
    set_password(user, new)
    user.failed_logins = 0
    user.locked_until = None
    revoke_user_tokens(session, user.id)
    record(
        session,
        "password.reset",
        actor=admin.email if admin else "cli",
        actor_user_id=admin.id if admin else None,
        object_type="user",
        object_id=user.id,
        client_address=client_address,
    )


def set_password(user: User, new: str) -> None:
    try:
        user.password_hash = hash_password(new)
    except WeakPassword as exc:
        raise Invalid(str(exc)) from None


# ------------------------------------------------------------------ cookies


def sign(value: str, key: bytes) -> str:
    mac = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{value}.{mac}"


def unsign(signed: str, key: bytes) -> str | None:
    value, _, mac = signed.rpartition(".")
    if not value or not mac:
        return None
    expected = hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
    return value if hmac.compare_digest(mac, expected) else None


def csrf_token(session_token: str, key: bytes) -> str:
    """The CSRF token that belongs to a session: derived, so nothing more is stored."""
    return hmac.new(key, f"csrf:{session_token}".encode(), hashlib.sha256).hexdigest()[:40]
