"""Replica policy: the store a process opens from its settings, the to-do list in the catalogue, and catching up (storage/replicated.py is the mechanism)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from allmicro_data.catalogue.db import session_scope
from allmicro_data.catalogue.models import ReplicaPending, utcnow
from allmicro_data.fixity import ManifestChecksums
from allmicro_data.settings import Settings
from allmicro_data.storage import (
    ChecksumMismatch,
    ObjectStore,
    PendingCopy,
    StorageError,
    SupportsReplicas,
    open_replicated_store,
)

log = logging.getLogger(__name__)

_MAX_ERROR = 1000


class CataloguePendingCopies:
    """The replicas' to-do list as catalogue rows: a miss is committed before the write that
    missed it reports success, so a restart forgets nothing."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def record(self, missed: PendingCopy) -> None:
        replica_url, key = missed.replica_url, missed.key
        for _attempt in range(3):
            try:
                with session_scope(self.sessions) as session:
                    row = session.scalars(
                        select(ReplicaPending).where(
                            ReplicaPending.store_url == replica_url, ReplicaPending.key == key
                        )
                    ).first()
                    if row is None:
                        row = ReplicaPending(store_url=replica_url, key=key)
                        session.add(row)
                    row.sha256 = missed.sha256
                    row.size = missed.size
                    row.deleted = missed.deleted
                    row.last_error = missed.reason[:_MAX_ERROR]
                    row.updated_at = utcnow()
                return
            except IntegrityError:
                continue  # another thread inserted the same row a moment ago: update it
            except SQLAlchemyError as exc:
                raise StorageError(
                    f"cannot put {key!r} on the to-do list of {replica_url}: {type(exc).__name__}"
                ) from exc
        raise StorageError(f"cannot put {key!r} on the to-do list of {replica_url}")


def open_settings_store(settings: Settings, sessions: sessionmaker[Session]) -> ObjectStore:
    """The store of this process: the primary, with its replicas and to-do list if configured."""
    access = settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    return open_replicated_store(
        settings.resolved_storage_url,
        settings.replica_urls,
        quorum=settings.replica_quorum,
        pending=CataloguePendingCopies(sessions),
        checksums=ManifestChecksums(),
        retry_seconds=settings.replica_retry_seconds,
        access_key=access,
        secret_key=secret,
    )


@dataclass
class CatchUpReport:
    done: int = 0
    failed: int = 0
    remaining: int = 0


def pending_counts(session: Session) -> dict[str, int]:
    """Entries on the to-do list per replica URL."""
    rows = session.execute(
        select(ReplicaPending.store_url, func.count()).group_by(ReplicaPending.store_url)
    ).all()
    return {url: int(n) for url, n in rows}


def catch_up_replicas(
    store: ObjectStore, sessions: sessionmaker[Session], *, limit: int = 5000
) -> CatchUpReport:
    """Work through the to-do list: copy what replicas missed from a verified copy, delete what
    was deleted. A replica that fails is left for the next round after its first failure."""
    report = CatchUpReport()
    if not isinstance(store, SupportsReplicas):
        return report
    configured = {r.url for r in store.replicas}
    with session_scope(sessions) as session:
        rows = list(
            session.scalars(
                select(ReplicaPending)
                .where(ReplicaPending.store_url.in_(configured))
                .order_by(ReplicaPending.created_at)
                .limit(limit)
            )
        )
        session.expunge_all()
    down: set[str] = set()
    for row in rows:
        if row.store_url in down:
            continue
        try:
            outcome = store.catch_up(
                row.store_url, row.key, sha256=row.sha256, size=row.size, deleted=row.deleted
            )
        except StorageError as exc:
            report.failed += 1
            if not isinstance(exc, ChecksumMismatch):
                down.add(row.store_url)
            with session_scope(sessions) as session:
                session.execute(
                    update(ReplicaPending)
                    .where(ReplicaPending.id == row.id)
                    .values(attempts=ReplicaPending.attempts + 1, last_error=str(exc)[:_MAX_ERROR])
                )
            continue
        with session_scope(sessions) as session:
            # Only if nobody recorded a newer miss of the key while it was being copied.
            session.execute(
                delete(ReplicaPending).where(
                    ReplicaPending.id == row.id, ReplicaPending.updated_at == row.updated_at
                )
            )
        log.debug("replica %s: %s %s", row.store_url, outcome, row.key)
        report.done += 1
    with session_scope(sessions) as session:
        report.remaining = sum(pending_counts(session).values())
    if report.done or report.failed:
        log.info(
            "replica catch-up: %d done, %d failed, %d left",
            report.done,
            report.failed,
            report.remaining,
        )
    return report
