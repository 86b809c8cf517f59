"""The FastAPI application factory: routers, error handling, and the process's services."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from allmicro_data import __version__
from allmicro_data.api import problems
from allmicro_data.api.cors import Cors
from allmicro_data.api.proxies import ForwardedRequests
from allmicro_data.api.request_observer import RequestObserver
from allmicro_data.api.routers import (
    admin,
    audit,
    auth,
    catalogue,
    downloads,
    figures,
    files,
    health,
    iiif,
    iiif_auth,
    lifecycle,
    metrics,
    renderings,
    rois,
    shares,
    storage_admin,
    tiles,
    uploads,
    zarr,
)
from allmicro_data.api.security_headers import SecurityHeaders
from allmicro_data.api.viewing import Viewing
from allmicro_data.api.web import (
    admin_pages,
    api_docs,
    figure_pages,
    lifecycle_pages,
    pages,
    share_pages,
)
from allmicro_data.bootstrap import ensure_admin
from allmicro_data.catalogue.db import upgrade
from allmicro_data.ingest.ngff.metadata import load_ngff_models
from allmicro_data.jobs import EmbeddedRunner, WorkerConfig
from allmicro_data.lifecycle import TrashPurger
from allmicro_data.metrics import serve_exposition
from allmicro_data.scrub import StorageMaintenance
from allmicro_data.services import Services
from allmicro_data.settings import Settings, get_settings
from allmicro_data.taskqueue import CeleryDispatcher, celery_app
from allmicro_data.uploads import UploadSweeper

log = logging.getLogger(__name__)


def warm_up(app: FastAPI) -> None:
    """Load what a server's first requests would otherwise load on their way: the NGFF models
    (half a CPU-second, when the first pyramid opens) and FastAPI's matching context of every
    route (built when a request first walks a router). A fresh server's first tile from S3
    took half a second, and the first second of tiles the cold run's whole tail."""
    load_ngff_models()
    for _ in iter_route_contexts(app.routes):
        pass


# The API documentation's sections (the routes' tags), in the order a reader meets them.
API_TAGS = [
    {"name": "health", "description": "Whether the server is up."},
    {"name": "auth", "description": "Signing in and out, sessions and API tokens."},
    {
        "name": "admin",
        "description": "Organisations, users and memberships (facility administrators).",
    },
    {"name": "catalogue", "description": "Projects, datasets, images and their search."},
    {
        "name": "lifecycle",
        "description": "Renaming, moving and deleting; the trash, restoring and purging.",
    },
    {
        "name": "files",
        "description": "Original files: adding them to a dataset, and downloading them.",
    },
    {"name": "downloads", "description": "Originals, datasets as ZIP and metadata as CSV."},
    {"name": "figures", "description": "An image as a figure, for papers and reports."},
    {"name": "share links", "description": "Links that give a company or a guest what it may see."},
    {"name": "audit", "description": "Who did what, and when."},
    {"name": "storage", "description": "Fixity scrubs of the object stores, and their replicas."},
    {
        "name": "viewing",
        "description": "Tiles, thumbnails, histograms and display settings of an image.",
    },
    {"name": "IIIF", "description": "IIIF Image API 3.0, Presentation manifests and Auth 2.0."},
    {"name": "OME-Zarr", "description": "The pyramids as OME-Zarr, for napari, Fiji and vizarr."},
    {
        "name": "uploads",
        "description": "Resumable uploads (tus 1.0) from instrument PCs and browsers.",
    },
    {"name": "measurements", "description": "Regions of interest, measurements and line profiles."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The server. With no settings it reads ALLMICRO_* from the environment."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.queue == "celery" and settings.secret_key is None:
            # Every API process must sign and check links and cookies with the same key; a
            # key generated under each host's data_dir would differ between hosts.
            raise RuntimeError(
                "ALLMICRO_QUEUE=celery (several processes) needs ALLMICRO_SECRET_KEY"
            )
        if settings.upgrade_on_start:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            upgrade(settings.resolved_database_url)
        services = Services.from_settings(settings)
        with services.session() as session:
            ensure_admin(session, settings)
        runner: EmbeddedRunner | None = None
        if settings.queue == "embedded" and settings.job_workers > 0:
            runner = EmbeddedRunner(
                services.sessions,
                WorkerConfig.from_settings(settings),
                workers=settings.job_workers,
            )
            services.wake_jobs = runner.wake
            runner.start()
        dispatcher: CeleryDispatcher | None = None
        if settings.queue == "celery":
            # Workers elsewhere run the jobs; this process only sends the ids it queued.
            dispatcher = CeleryDispatcher(
                services.sessions, celery_app(settings), settings, reap=False
            )
            services.wake_jobs = dispatcher.wake
            dispatcher.start()
        # Catches replicas up from the to-do list and runs the scheduled scrub.
        maintenance = StorageMaintenance(services)
        maintenance.start()
        # Expires idle tus uploads and completes those a crash left half-stored.
        sweeper = UploadSweeper(services)
        sweeper.start()
        # Purges what has been in the trash longer than the retention period.
        purger = TrashPurger(
            services.sessions,
            services.store,
            settings.trash_retention_days,
            settings.trash_purge_interval_seconds,
        )
        purger.start()
        app.state.services = services
        app.state.viewing = Viewing(services)
        metrics_server = (
            serve_exposition(settings.metrics_host, settings.metrics_port, services.sessions)
            if settings.metrics_port
            else None
        )
        # Beside start-up, not before it: the first viewer after a restart finds them done.
        threading.Thread(target=warm_up, args=(app,), name="warm-up", daemon=True).start()
        log.info("serving catalogue %s, store %s", _safe_url(settings), services.store.url)
        try:
            yield
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            purger.stop()
            sweeper.stop()
            maintenance.stop()
            if dispatcher is not None:
                dispatcher.stop()
            if runner is not None:
                runner.stop()
            services.close()

    app = FastAPI(
        title="AllMicro Data",
        version=__version__,
        description="Image repository of the cross-border microscopy network.",
        # The documentation's sections in reading order, whatever order the routers are tried in.
        openapi_tags=API_TAGS,
        lifespan=lifespan,
        # Served from our own static files instead of a CDN (api/web/api_docs.py).
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    app.add_middleware(RequestObserver)
    # Uploaded content is served as data, never as a page of this origin (see the module).
    app.add_middleware(SecurityHeaders)
    # Cross-origin reads of the viewer and upload routes, errors included (see the module).
    app.add_middleware(Cors, allowed_origins=settings.cors_origins)
    # Outermost: everything inside sees the client and scheme a trusted proxy reports.
    app.add_middleware(
        ForwardedRequests,
        trusted_proxies=settings.trusted_proxies,
        hsts_seconds=settings.hsts_seconds,
    )
    problems.document_problems(app)
    # The viewer's routers first: a router's routes are tried in turn for every request, and
    # tiles are most of them (tens per second per viewer).
    for module in (
        iiif,
        zarr,
        tiles,
        health,
        metrics,
        auth,
        admin,
        catalogue,
        files,
        downloads,
        figures,
        shares,
        audit,
        storage_admin,
        renderings,
        iiif_auth,
        uploads,
        lifecycle,
        rois,
        lifecycle_pages,
        admin_pages,
        share_pages,
        figure_pages,
        pages,
    ):
        app.include_router(module.router)
    api_docs.install(app)
    app.mount("/static", pages.static_files(), name="static")
    return app


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)
