"""The audit log: one row per security-relevant event (logins, downloads, shares, membership changes)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, extract, func, or_, select
from sqlalchemy.orm import Session

from allmicro_data.access import Caller, scoped
from allmicro_data.catalogue.models import AuditEvent
from allmicro_data.csv_export import spreadsheet_row
from allmicro_data.paging import Found, Window, fetch


def record(
    session: Session,
    action: str,
    *,
    actor: str | None = None,
    actor_user_id: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    project_id: str | None = None,
    client_address: str | None = None,
    size: int | None = None,
    success: bool = True,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to the caller's transaction: it is kept exactly when the action is."""
    event = AuditEvent(
        action=action,
        actor=actor,
        actor_user_id=actor_user_id,
        object_type=object_type,
        object_id=object_id,
        project_id=project_id,
        client_address=client_address,
        bytes=size,
        success=success,
        detail=detail,
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class AuditQuery(Window):
    project_id: str | None = None
    action: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    object_id: str | None = None  # an object's id, or its type alone ("user", "job")


def visible_events(caller: Caller, query: AuditQuery) -> Select[Any]:
    """The caller's visible events (access.scoped says which) that match the query."""
    stmt = scoped(select(AuditEvent), AuditEvent, caller)
    if query.project_id:
        stmt = stmt.where(AuditEvent.project_id == query.project_id)
    if query.action:
        stmt = stmt.where(AuditEvent.action == query.action)
    if query.actor:
        stmt = stmt.where(AuditEvent.actor == query.actor.lower())
    if query.since:
        stmt = stmt.where(AuditEvent.at >= query.since)
    if query.until:
        stmt = stmt.where(AuditEvent.at <= query.until)
    if query.object_id:
        stmt = stmt.where(
            or_(
                AuditEvent.object_id == query.object_id,
                AuditEvent.object_type == query.object_id,
            )
        )
    return stmt


def search_events(session: Session, caller: Caller, query: AuditQuery) -> Found[AuditEvent]:
    """One page of the caller's visible events, newest first, and how many there are."""
    return fetch(
        session,
        visible_events(caller, query),
        query,
        order_by=(AuditEvent.at.desc(), AuditEvent.id.desc()),
    )


CSV_COLUMNS = (
    "at",
    "action",
    "success",
    "actor",
    "actor_user_id",
    "object_type",
    "object_id",
    "project_id",
    "client_address",
    "bytes",
    "detail",
)


def iter_csv(session: Session, caller: Caller, query: AuditQuery) -> Iterator[str]:
    """The caller's visible events as CSV lines, oldest first, fetched in batches."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    stmt = visible_events(caller, query).order_by(AuditEvent.at, AuditEvent.id)
    for event in session.scalars(stmt.execution_options(yield_per=1000)):
        writer.writerow(
            spreadsheet_row(
                [
                    event.at.isoformat(),
                    event.action,
                    event.success,
                    event.actor or "",
                    event.actor_user_id or "",
                    event.object_type or "",
                    event.object_id or "",
                    event.project_id or "",
                    event.client_address or "",
                    "" if event.bytes is None else event.bytes,
                    json.dumps(event.detail, sort_keys=True) if event.detail else "",
                ]
            )
        )
        yield out.getvalue()
        out.seek(0)
        out.truncate()


# The events of bytes served to someone: originals, archives and shared files (ranges count
# the bytes of the range).
DOWNLOAD_ACTIONS = ("file.download", "archive.download", "share.download")


def downloaded_bytes_by_month(
    session: Session, project_ids: Select[Any], since: datetime
) -> dict[tuple[str, str], int]:
    """Bytes downloaded since a moment, by (project id, "YYYY-MM") for the projects selected."""
    year = extract("year", AuditEvent.at)
    month = extract("month", AuditEvent.at)
    rows = session.execute(
        select(AuditEvent.project_id, year, month, func.sum(AuditEvent.bytes))
        .where(
            AuditEvent.action.in_(DOWNLOAD_ACTIONS),
            AuditEvent.success.is_(True),
            AuditEvent.at >= since,
            AuditEvent.project_id.in_(project_ids),
        )
        .group_by(AuditEvent.project_id, year, month)
    )
    return {
        (str(project_id), f"{int(y):04d}-{int(m):02d}"): int(total or 0)
        for project_id, y, m, total in rows
    }
