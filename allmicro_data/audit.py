"""The audit log: one row per security-relevant event (logins, downloads, shares, membership changes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from allmicro_data.catalogue.models import AuditEvent


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
