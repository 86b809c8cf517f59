"""The audit log: admins read everything, managers their projects' events; JSON pages or CSV."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel

from allmicro_data.access import require_full_session
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.paging import Page, WindowDep
from allmicro_data.api.streaming import content_disposition
from allmicro_data.audit import AuditQuery, iter_csv, search_events
from allmicro_data.catalogue.models import AuditEvent
from allmicro_data.errors import Invalid
from allmicro_data.names import unfit_character
from allmicro_data.paging import Window

router = APIRouter(prefix="/api", tags=["audit"])
# The events about one object: its id, or every object of a type ("user", "job", "file").
ObjectFilter = Annotated[
    str | None, Query(max_length=64, description="an object's id, or an object type")
]


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    action: str
    success: bool
    actor: str | None
    actor_user_id: str | None
    object_type: str | None
    object_id: str | None
    project_id: str | None
    client_address: str | None
    bytes: int | None
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, e: AuditEvent) -> AuditEventOut:
        return cls(
            id=e.id,
            at=e.at,
            action=e.action,
            success=e.success,
            actor=e.actor,
            actor_user_id=e.actor_user_id,
            object_type=e.object_type,
            object_id=e.object_id,
            project_id=e.project_id,
            client_address=e.client_address,
            bytes=e.bytes,
            detail=e.detail,
        )


def _query(
    project_id: str | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=320)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    window: Window = Window(),
    object_id: str | None = None,
) -> AuditQuery:
    # Checked before anything is sent: the CSV streams, and PostgreSQL refuses a NUL only once
    # the query runs, after the response has begun.
    filters = {"project_id": project_id, "action": action, "actor": actor, "object_id": object_id}
    for name, text in filters.items():
        ch = unfit_character(text) if text else None
        if ch is not None:
            raise Invalid(f"{name} holds the control character U+{ord(ch):04X}")
    return AuditQuery(
        project_id=project_id,
        action=action,
        actor=actor,
        since=since,
        until=until,
        object_id=object_id,
        limit=window.limit,
        offset=window.offset,
    )


@router.get("/audit", response_model=Page[AuditEventOut])
def list_audit(
    caller: CallerDep,
    session: SessionDep,
    window: WindowDep,
    project_id: str | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=320)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    object_id: ObjectFilter = None,
) -> Page[AuditEventOut]:
    """Newest first. Admins see every event; managers see their projects' events."""
    require_full_session(caller)
    query = _query(project_id, action, actor, since, until, window, object_id)
    return Page.of(search_events(session, caller, query), AuditEventOut.of)


@router.get(
    "/audit.csv",
    response_class=StreamingResponse,
    responses={200: binary("text/csv")},
)
def export_audit(
    caller: CallerDep,
    services: ServicesDep,
    project_id: str | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=320)] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    object_id: ObjectFilter = None,
) -> StreamingResponse:
    """The same events as CSV, oldest first."""
    require_full_session(caller)
    query = _query(project_id, action, actor, since, until, object_id=object_id)

    def lines() -> Iterator[str]:
        # Its own session: the export streams after the request's session has closed.
        with services.session() as session:
            yield from iter_csv(session, caller, query)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition("audit.csv")},
    )
