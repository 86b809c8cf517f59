"""Storage for admins: scrub runs and their findings, starting a scrub, replicas and their to-do lists."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from allmicro_data.access import require_admin
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep
from allmicro_data.api.paging import Page, paged
from allmicro_data.audit import record
from allmicro_data.catalogue.models import ScrubRun
from allmicro_data.errors import NotFound
from allmicro_data.paging import Window, fetch
from allmicro_data.replica_catchup import pending_counts
from allmicro_data.scrub import begin_scrub, execute_scrub, run_document, stores_of
from allmicro_data.services import Services
from allmicro_data.storage import SupportsReplicas

router = APIRouter(prefix="/api/admin/storage", tags=["storage"])


class ScrubProblem(BaseModel):
    key: str
    store: str | None
    state: str
    repaired: bool = False
    unrecoverable: bool = False
    error: str | None = None


class ScrubRunOut(BaseModel):
    id: str
    trigger: str
    repair: bool
    image_id: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    objects: int
    copies: int
    ok: int
    missing: int
    corrupt: int
    unreachable: int
    repaired: int
    unrecoverable: int
    outstanding: int = Field(description="Copies found bad and not mended.")
    bytes_read: int
    clean: bool = Field(description="Every copy is as recorded after this run.")
    error: str | None
    problems: list[ScrubProblem] = Field(description="The first problems found (at most 1000).")

    @classmethod
    def of(cls, run: ScrubRun) -> ScrubRunOut:
        return cls.model_validate(run_document(run))


class ScrubIn(BaseModel):
    repair: bool = False
    image_id: str | None = None


class ReplicaOut(BaseModel):
    url: str
    role: str
    available: bool
    pending: int = Field(description="Changes waiting on the to-do list for this store.")


class StorageOut(BaseModel):
    quorum: int
    stores: list[ReplicaOut]


@router.get("/scrubs", response_model=Page[ScrubRunOut])
def list_scrubs(
    caller: CallerDep, session: SessionDep, window: Annotated[Window, paged(20)]
) -> Page[ScrubRunOut]:
    """Scrub runs, newest first."""
    require_admin(caller)
    found = fetch(session, select(ScrubRun), window, order_by=[ScrubRun.started_at.desc()])
    return Page.of(found, ScrubRunOut.of)


@router.get("/scrubs/{run_id}", response_model=ScrubRunOut)
def get_scrub(run_id: str, caller: CallerDep, session: SessionDep) -> ScrubRunOut:
    require_admin(caller)
    run = session.get(ScrubRun, run_id)
    if run is None:
        raise NotFound(f"no scrub run {run_id}")
    return ScrubRunOut.of(run)


@router.post("/scrubs", response_model=ScrubRunOut, status_code=202)
def start_scrub(
    body: ScrubIn, caller: CallerDep, session: SessionDep, services: ServicesDep
) -> ScrubRunOut:
    """Start a scrub in the background (409 while one runs); poll the run for its outcome."""
    require_admin(caller)
    run = begin_scrub(
        session, trigger="api", repair=body.repair, image_id=body.image_id, exclusive=True
    )
    record(
        session,
        "storage.scrub",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="scrub_run",
        object_id=run.id,
        detail={"repair": body.repair, "image_id": body.image_id},
    )
    session.commit()
    threading.Thread(
        target=_execute_quietly,
        args=(services, run.id),
        name=f"scrub-{run.id[:8]}",
        daemon=True,
    ).start()
    return ScrubRunOut.of(run)


def _execute_quietly(services: Services, run_id: str) -> None:
    # execute_scrub records its own failures on the run; nothing is left to raise to.
    execute_scrub(services, run_id, bandwidth=services.settings.scrub_bandwidth or None)


@router.get("/replicas", response_model=StorageOut)
def storage_replicas(caller: CallerDep, session: SessionDep, services: ServicesDep) -> StorageOut:
    """The stores that hold copies, whether each answers, and what each still has to catch up."""
    require_admin(caller)
    store = services.store
    counts = pending_counts(session)
    stores = stores_of(store)
    return StorageOut(
        quorum=store.quorum if isinstance(store, SupportsReplicas) else 0,
        stores=[
            ReplicaOut(
                url=s.url,
                role="primary" if index == 0 else "replica",
                available=store.available(s) if isinstance(store, SupportsReplicas) else True,
                pending=counts.get(s.url, 0),
            )
            for index, s in enumerate(stores)
        ],
    )
