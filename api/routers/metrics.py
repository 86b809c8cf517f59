"""Prometheus metrics: GET /metrics for admins on the app's port, or without credentials on settings.metrics_port."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from allmicro_data.access import Caller
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep
from allmicro_data.catalogue.models import User
from allmicro_data.errors import Forbidden
from allmicro_data.metrics import exposition

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep, caller: CallerDep, session: SessionDep) -> Response:
    """Requests, latencies, jobs and storage in the Prometheus text format (admins).

    The figures (queue depths, stored bytes, routes and their traffic) describe the whole
    installation, so only admins get them here; Prometheus scrapes the separate metrics port
    (ALLMICRO_METRICS_PORT) or sends an admin's personal `read` token.
    """
    if not await run_in_threadpool(_may_read_metrics, caller, session):
        raise Forbidden("metrics are for admins")
    body = await run_in_threadpool(exposition, services.sessions)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _may_read_metrics(caller: Caller, session: Session) -> bool:
    if caller.is_admin:
        return True
    # A personal token never carries admin rights, but an admin's `read` token is what a
    # Prometheus server keeps in its credentials file: enough to read figures, nothing more.
    if caller.scope != "read":
        return False
    user = session.get(User, caller.user_id)
    return user is not None and user.is_admin and user.is_active
