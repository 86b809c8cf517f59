"""Share links: read-only access to one project or dataset for people without an account.

A link works while its creator is enabled and still manages its project: sharing is a manager's
act, and ends with their rights (another manager may share again). Wrong passwords are limited
per client address and link, so whoever holds the link cannot lock the right password out for
everyone; a link-wide limit, several times higher, stops only a guessing attack spread over many
addresses."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from allmicro_data import throttle
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
    raise Unauthorised("this link needs its password (X-Share-Password header)")


def open_link(
    session: Session, token: str, password: str | None, client_address: str | None
) -> ShareAccess:
    """The access a presented link token gives. Unknown, expired and revoked links are 404."""
    link = None
    if token.startswith(SHARE_PREFIX) and len(token) < 200:
        link = session.scalars(
            select(ShareLink).where(ShareLink.token_hash == token_hash(token))
        ).first()
    now = utcnow()
    if link is None or link.revoked_at is not None or link.expires_at <= now:
        raise NotFound("share link not found or expired")
    project_id = project_of_link(session, link)
    creator = session.get(User, link.created_by_id) if link.created_by_id else None
    if creator is None or not may_manage(session, creator, project_id):
        raise NotFound("share link not found or expired")
    if link.password_hash is not None:
        _check_password(session, link, project_id, password, client_address)
    if link.dataset_id is not None:
        dataset_ids: tuple[str, ...] = (link.dataset_id,)
    else:
        dataset_ids = tuple(
            session.scalars(
                select(Dataset.id).where(Dataset.project_id == project_id).order_by(Dataset.name)
            )
        )
    link.last_used_at = now
    link.use_count += 1
    return ShareAccess(link=link, project_id=project_id, dataset_ids=dataset_ids)
