"""Share links: read-only access to one project or dataset for people without an account.

A link works while its creator is enabled and still manages its project: sharing is a manager's
act, and ends with their rights (another manager may share again). Wrong passwords are limited
per client address and link, so whoever holds the link cannot lock the right password out for
everyone; a link-wide limit, several times higher, stops only a guessing attack spread over many
addresses."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from allmicro_data import notifications, throttle
from allmicro_data.access import Caller, Use, may_manage, require_role
from allmicro_data.audit import record
from allmicro_data.auth import token_hash
from allmicro_data.catalogue.models import Dataset, Project, Role, ShareLink, User, utcnow
from allmicro_data.errors import DomainError, Invalid, NotFound, Unauthorised
from allmicro_data.passwords import WeakPassword, hash_password, verify_password

SHARE_PREFIX = "amds_"
PASSWORD_FAILURE_LIMIT = 20  # wrong passwords per client address and link, per window
LINK_FAILURE_LIMIT = 200  # per link from all addresses together: clear abuse
PASSWORD_FAILURE_WINDOW = timedelta(minutes=15)
# How long a browser stays unlocked after typing a link's password (its cookie's lifetime).
UNLOCK_LIFETIME = timedelta(hours=2)
MAX_DOWNLOAD_LIMIT = 1_000_000


class ShareUnavailable(NotFound):
    """A link that opens nothing. The API answers 404 whatever the reason (a guessed token
    learns nothing); the link's own page, to whoever holds it, says why: `reason` is
    "unknown", "expired", "revoked" or "exhausted" (its download limit reached)."""

    def __init__(self, reason: str) -> None:
        super().__init__("share link not found or expired")
        self.reason = reason


class SharePasswordNeeded(Unauthorised):
    """The link has a password and none (or a wrong one) came with the request."""


class ShareThrottled(DomainError):
    status = 429
    title = "Too many attempts"

    def __init__(self, everyone: bool = False) -> None:
        super().__init__(
            "too many wrong passwords for this link from all addresses; try again later"
            if everyone
            else "too many wrong passwords for this link from this address; try again later"
        )
        self.retry_after = int(PASSWORD_FAILURE_WINDOW.total_seconds())


@dataclass(frozen=True)
class ShareAccess:
    """What an opened link reaches: its datasets, read-only."""

    link: ShareLink
    project_id: str
    dataset_ids: tuple[str, ...]

    def require_dataset(self, dataset_id: str) -> None:
        if dataset_id not in self.dataset_ids:
            raise NotFound(f"dataset {dataset_id} not found")


def project_of_link(session: Session, link: ShareLink) -> str:
    if link.project_id is not None:
        return link.project_id
    dataset = session.get(Dataset, link.dataset_id)
    if dataset is None:
        raise NotFound("share link not found")
    return dataset.project_id


def create_link(
    session: Session,
    caller: Caller,
    *,
    project_id: str | None,
    dataset_id: str | None,
    expires_at: datetime,
    max_days: int,
    password: str | None,
    label: str,
    client_address: str | None,
    max_downloads: int | None = None,
) -> tuple[str, ShareLink]:
    """A new link (managers of the project); the token is returned once and stored hashed."""
    if (project_id is None) == (dataset_id is None):
        raise Invalid("a link shares exactly one project or one dataset")
    if dataset_id is not None:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} not found")
        owning_project = dataset.project_id
    else:
        assert project_id is not None
        if session.get(Project, project_id) is None:
            raise NotFound(f"project {project_id} not found")
        owning_project = project_id
    require_role(session, caller, owning_project, Role.MANAGER)
    now = utcnow()
    if expires_at <= now:
        raise Invalid("the expiry must be in the future")
    if expires_at > now + timedelta(days=max_days):
        raise Invalid(f"share links last at most {max_days} days")
    if max_downloads is not None and not 1 <= max_downloads <= MAX_DOWNLOAD_LIMIT:
        raise Invalid(f"a download limit is between 1 and {MAX_DOWNLOAD_LIMIT}")
    try:
        password_hash = hash_password(password) if password else None
    except WeakPassword as exc:
        raise Invalid(str(exc)) from None
    plaintext = SHARE_PREFIX + secrets.token_urlsafe(24)
    link = ShareLink(
        token_hash=token_hash(plaintext),
        project_id=project_id,
        dataset_id=dataset_id,
        label=label,
        password_hash=password_hash,
        created_by_id=caller.user_id,
        expires_at=expires_at,
        max_downloads=max_downloads,
        download_count=0,
    )
    session.add(link)
    session.flush()
    record(
        session,
        "share.create",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="share_link",
        object_id=link.id,
        project_id=owning_project,
        client_address=client_address,
        detail={
            "dataset_id": dataset_id,
            "expires_at": expires_at.isoformat(),
            "password": bool(password),
            "max_downloads": max_downloads,
        },
    )
    return plaintext, link


def revoke_link(session: Session, caller: Caller, link_id: str, client_address: str | None) -> None:
    link = session.get(ShareLink, link_id)
    if link is None:
        raise NotFound(f"share link {link_id} not found")
    project_id = project_of_link(session, link)
    try:
        require_role(session, caller, project_id, Role.MANAGER)
    except NotFound:
        raise NotFound(f"share link {link_id} not found") from None
    if link.revoked_at is None:
        link.revoked_at = utcnow()
        record(
            session,
            "share.revoke",
            actor=caller.email,
            actor_user_id=caller.user_id,
            object_type="share_link",
            object_id=link.id,
            project_id=project_id,
            client_address=client_address,
        )


def links_of_project(session: Session, caller: Caller, project_id: str) -> list[ShareLink]:
    require_role(session, caller, project_id, Role.MANAGER, Use.READ)
    datasets = select(Dataset.id).where(Dataset.project_id == project_id)
    return list(
        session.scalars(
            select(ShareLink)
            .where((ShareLink.project_id == project_id) | ShareLink.dataset_id.in_(datasets))
            .order_by(ShareLink.created_at)
        )
    )


def _check_password(
    session: Session,
    link: ShareLink,
    project_id: str,
    password: str | None,
    client_address: str | None,
) -> None:
    """Unauthorised unless `password` is the link's. Each try first takes a slot from its
    address's window and from the link's (throttle.take, atomic), so parallel guesses never
    pass the limits; the right password gives its slots back and clears its address."""
    assert link.password_hash is not None
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    bucket = f"share-password:{link.id}"
    address = client_address or "unknown"
    full = throttle.take(
        engine,
        bucket,
        {address: PASSWORD_FAILURE_LIMIT, throttle.EVERYONE: LINK_FAILURE_LIMIT},
        PASSWORD_FAILURE_WINDOW,
    )
    if full is not None:
        raise ShareThrottled(everyone=full == throttle.EVERYONE)
    if password and verify_password(password, link.password_hash):
        throttle.succeeded(engine, bucket, address)
        return
    record(
        session,
        "share.password_failure",
        object_type="share_link",
        object_id=link.id,
        project_id=project_id,
        client_address=client_address,
        success=False,
    )
    session.commit()
    raise SharePasswordNeeded("this link needs its password (X-Share-Password header)")


def unlock_cookie(key: bytes, link: ShareLink, now: datetime) -> str:
    """The value of the cookie that keeps a browser unlocked after the right password: the
    link, the moment it ends and a keyed mark of the link's password hash, under an HMAC. It
    dies with the link (revoked, expired) and with a changed password."""
    until = int((now + UNLOCK_LIFETIME).timestamp())
    return f"{until}.{_unlock_mac(key, link, until)}"


def _unlock_mac(key: bytes, link: ShareLink, until: int) -> str:
    material = f"share-unlock:{link.id}:{link.password_hash or ''}:{until}".encode()
    return hmac.new(key, material, hashlib.sha256).hexdigest()[:40]


def _unlocked(key: bytes | None, link: ShareLink, cookie: str | None, now: datetime) -> bool:
    if key is None or not cookie or len(cookie) > 100:
        return False
    until_text, _, mac = cookie.partition(".")
    if not until_text.isdigit() or int(until_text) <= now.timestamp():
        return False
    return hmac.compare_digest(mac, _unlock_mac(key, link, int(until_text)))


def find_link(session: Session, token: str) -> ShareLink:
    """The link a token names, whether it still works or not (ShareUnavailable "unknown")."""
    link = None
    if token.startswith(SHARE_PREFIX) and len(token) < 200:
        link = session.scalars(
            select(ShareLink).where(ShareLink.token_hash == token_hash(token))
        ).first()
    if link is None:
        raise ShareUnavailable("unknown")
    return link


def exhausted(link: ShareLink) -> bool:
    return link.max_downloads is not None and link.download_count >= link.max_downloads


def _in_trash(session: Session, link: ShareLink, project_id: str) -> bool:
    """Whether what the link shares is in the trash (allmicro_data.lifecycle): it answers as
    an unknown link until restored."""
    project = session.get(Project, project_id)
    if project is None or project.deleted_at is not None:
        return True
    if link.dataset_id is None:
        return False
    dataset = session.get(Dataset, link.dataset_id)
    return dataset is None or dataset.deleted_at is not None


def open_link(
    session: Session,
    token: str,
    password: str | None,
    client_address: str | None,
    *,
    key: bytes | None = None,
    cookie: str | None = None,
    count_use: bool = False,
) -> ShareAccess:
    """The access a presented link token gives: with its password, or with the cookie
    `unlock_cookie` gave (checked with `key`). Unknown, expired, revoked and exhausted links
    raise ShareUnavailable (404). `count_use` counts one visit (the shared view, not each tile)."""
    link = find_link(session, token)
    now = utcnow()
    if link.revoked_at is not None:
        raise ShareUnavailable("revoked")
    if link.expires_at <= now:
        raise ShareUnavailable("expired")
    project_id = project_of_link(session, link)
    creator = session.get(User, link.created_by_id) if link.created_by_id else None
    if creator is None or not may_manage(session, creator, project_id):
        raise ShareUnavailable("unknown")
    if _in_trash(session, link, project_id):
        raise ShareUnavailable("unknown")
    if exhausted(link):
        raise ShareUnavailable("exhausted")
    if link.password_hash is not None and not _unlocked(key, link, cookie, now):
        _check_password(session, link, project_id, password, client_address)
    if link.dataset_id is not None:
        dataset_ids: tuple[str, ...] = (link.dataset_id,)
    else:
        dataset_ids = tuple(
            session.scalars(
                select(Dataset.id)
                .where(Dataset.project_id == project_id, Dataset.deleted_at.is_(None))
                .order_by(Dataset.name)
            )
        )
    if count_use:
        link.last_used_at = now
        link.use_count += 1
        session.flush()
        notifications.share_link_first_used(session, link)
    return ShareAccess(link=link, project_id=project_id, dataset_ids=dataset_ids)


def count_download(session: Session, access: ShareAccess) -> None:
    """Take one download from the link's limit, atomically (parallel downloads never pass it);
    ShareUnavailable "exhausted" when none is left."""
    link = access.link
    taken = session.execute(
        update(ShareLink)
        .where(ShareLink.id == link.id)
        .where(
            ShareLink.max_downloads.is_(None) | (ShareLink.download_count < ShareLink.max_downloads)
        )
        .values(download_count=ShareLink.download_count + 1, last_used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise ShareUnavailable("exhausted")
    session.refresh(link)
