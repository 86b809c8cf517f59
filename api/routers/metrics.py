"""Prometheus metrics: GET /metrics (keep it off the public address; see deploy/README.md)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from allmicro_data.api.deps import ServicesDep
from allmicro_data.metrics import exposition

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    """Requests, latencies, jobs and storage in the Prometheus text format."""
    body = await run_in_threadpool(exposition, services.sessions)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
