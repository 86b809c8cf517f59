"""Liveness and readiness: GET /healthz."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from allmicro_data import __version__
from allmicro_data.api.deps import ServicesDep
from allmicro_data.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(services: ServicesDep) -> JSONResponse:
    """200 when the server can reach its catalogue; 503 otherwise."""
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except Exception:
        database = "unreachable"
    status = 200 if database == "ok" else 503
    body = Health(
        status="ok" if status == 200 else "degraded", version=__version__, database=database
    )
    return JSONResponse(body.model_dump(), status_code=status)
