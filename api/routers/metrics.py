"""Prometheus metrics: GET /metrics for admins on the app's port, or without credentials on settings.metrics_port."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from allmicro_data.access import may_read_metrics
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep
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
    if not await run_in_threadpool(may_read_metrics, session, caller):
        raise Forbidden("metrics are for admins")
    body = await run_in_threadpool(exposition, services.sessions)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
