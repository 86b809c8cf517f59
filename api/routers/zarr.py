"""OME-Zarr over HTTP for napari, vizarr and neuroglancer: the stored pyramid exactly, read-only,
by bearer token or through a short-lived capability URL."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from allmicro_data import capabilities
from allmicro_data.access import Caller, get_visible
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep, client_address
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.streaming import content_disposition, parse_range
from allmicro_data.api.viewing import ImageView, Viewing, viewing
from allmicro_data.api.zarr_documents import (
    COLLECTION_ROOT,
    IMAGE_ROOT,
    ZarrDocuments,
    not_modified,
    strong_etag,
)
from allmicro_data.audit import record
from allmicro_data.catalogue.models import AccessToken, Dataset, Image, ImageStatus, User, utcnow
from allmicro_data.errors import NotFound, Unauthorised
from allmicro_data.settings import secret_key
from allmicro_data.storage import InvalidKey, ObjectNotFound

router = APIRouter(tags=["OME-Zarr"])
log = logging.getLogger(__name__)

METADATA_FILES = (".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json")
OBJECT: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            **binary("application/octet-stream")["content"],
            "application/json": {"schema": {"type": "object"}},
        }
    }
}


def _documents(request: Request) -> ZarrDocuments:
    state = request.app.state
    found: ZarrDocuments | None = getattr(state, "zarr_documents", None)
    if found is None:
        found = state.zarr_documents = ZarrDocuments(viewing(request).services)
    return found


def _media(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "application/json" if name in METADATA_FILES else "application/octet-stream"


def _headers(path: str, etag: str) -> dict[str, str]:
    # CORS headers and preflights: api.cors.
    return {
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
        "ETag": etag,
        # A download if a browser is sent here (OME/METADATA.ome.xml is the uploaded OME-XML);
        # viewers fetch() the objects and never look at it.
        "Content-Disposition": content_disposition(path.rsplit("/", 1)[-1] or "zarr"),
    }


def _answer(
    request: Request, path: str, size: int, etag: str
) -> tuple[Response | None, tuple[int, int] | None, dict[str, str]]:
    """The response when the headers alone decide it (304, 416, HEAD), else the byte range."""
    headers = _headers(path, etag)
    if not_modified(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers), None, headers
    byte_range = parse_range(request.headers.get("range"), size)
    if isinstance(byte_range, Response):
        return byte_range, None, headers
    start, end = byte_range or (0, size)
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if request.method == "HEAD":
        headers["Content-Length"] = str(end - start)
        return Response(status_code=200, headers=headers, media_type=_media(path)), None, headers
    return None, byte_range, headers


def _serve_bytes(request: Request, path: str, body: bytes) -> Response:
    """A document made here (consolidated metadata, a collection's root)."""
    done, byte_range, headers = _answer(request, path, len(body), strong_etag(body))
    if done is not None:
        return done
    start, end = byte_range or (0, len(body))
    return Response(
        body[start:end],
        status_code=206 if byte_range else 200,
        media_type=_media(path),
        headers=headers,
    )


async def _serve(state: Viewing, view: ImageView, path: str, request: Request) -> Response:
    documents = _documents(request)
    if path in IMAGE_ROOT:
        try:
            root = await run_in_threadpool(documents.image_root, view)
        except (ObjectNotFound, InvalidKey):
            raise NotFound(f"no {path!r} in this image") from None
        except (ValueError, KeyError, TypeError):
            # Not a pyramid we can consolidate (foreign metadata): its documents as stored.
            log.warning("image %s: no consolidated metadata made", view.id, exc_info=True)
            root = {}
        if path in root:
            return _serve_bytes(request, path, root[path])
    key = f"{view.pyramid_key}/{path}"
    store = state.services.store

    def stat() -> tuple[int, str]:
        size = store.size(key)
        return size, documents.object_etag(view, key, size)

    try:
        size, etag = await run_in_threadpool(stat)
    except (ObjectNotFound, InvalidKey):
        raise NotFound(f"no {path!r} in this image") from None
    done, byte_range, headers = _answer(request, path, size, etag)
    if done is not None:
        return done
    start, end = byte_range or (0, size)
    try:
        body = await run_in_threadpool(store.get_bytes, key, start, end)
    except ObjectNotFound:
        raise NotFound(f"no {path!r} in this image") from None
    return Response(
        body, status_code=206 if byte_range else 200, media_type=_media(path), headers=headers
    )


async def _serve_collection(
    state: Viewing, request: Request, caller: Caller, capability: capabilities.Capability, path: str
) -> Response:
    """A document of a dataset capability's root: its images as a bioformats2raw collection."""
    documents = _documents(request)
    images = await run_in_threadpool(documents.series, caller, capability.id, capability.target)
    try:
        served = await run_in_threadpool(documents.collection, images)
    except (ObjectNotFound, InvalidKey, ValueError, KeyError, TypeError):
        log.warning("dataset %s: no collection made", capability.target, exc_info=True)
        raise NotFound("this dataset's images cannot be listed as one collection") from None
    if path not in served:
        raise NotFound(f"no {path!r} in this dataset")
    return _serve_bytes(request, path, served[path])


# GET and HEAD as two routes, so each has its own operationId in the OpenAPI document.
@router.get("/zarr/c/{token}/{path:path}", response_class=Response, responses=OBJECT)
@router.head("/zarr/c/{token}/{path:path}", response_class=Response, responses=OBJECT)
async def capability_object(token: str, path: str, request: Request) -> Response:
    """An object of a pyramid through a capability URL (no other credentials needed).
    Image capabilities serve the image's pyramid at their root. Dataset capabilities serve a
    bioformats2raw collection at their root (`bioformats2raw.layout` 3, `OME/` listing the
    series): the dataset's images, oldest first, as `0/`, `1/`, …, and each also under
    `{image_id}/`."""
    state = viewing(request)
    services = state.services
    capability = capabilities.verify(secret_key(services.settings), token, utcnow())
    if capability is None:
        raise NotFound("capability not found or expired")
    caller = await state.capability_caller(capability)
    if capability.kind == "image":
        image_id = capability.target
    else:
        first, _, rest = path.partition("/")
        if first in COLLECTION_ROOT:
            await state.note_capability_use(capability, client_address(request))
            return await _serve_collection(state, request, caller, capability, path)
        image_id, path = first, rest
        if first.isdigit():
            images = await run_in_threadpool(
                _documents(request).series, caller, capability.id, capability.target
            )
            if int(first) >= len(images):
                raise NotFound(f"no series {first} in this dataset")
            image_id = images[int(first)].id
    view = await state.image(caller, image_id)
    if capability.kind == "dataset" and view.dataset_id != capability.target:
        raise NotFound(f"image {image_id} not found")
    await state.note_capability_use(capability, client_address(request))
    return await _serve(state, view, path, request)


@router.get("/zarr/{image_id}/{path:path}", response_class=Response, responses=OBJECT)
@router.head("/zarr/{image_id}/{path:path}", response_class=Response, responses=OBJECT)
async def zarr_object(image_id: str, path: str, request: Request) -> Response:
    """An object of the image's pyramid (zarr metadata or chunk), with a bearer token. Strong
    ETags (If-None-Match answers 304); the root documents carry consolidated metadata."""
    state = viewing(request)
    view = await state.image(await state.caller(request), image_id)
    return await _serve(state, view, path, request)


class CapabilityIn(BaseModel):
    expires_in_seconds: int = Field(
        default=int(capabilities.DEFAULT_LIFETIME.total_seconds()),
        ge=60,
        le=int(capabilities.MAX_LIFETIME.total_seconds()),
    )


class CapabilityOut(BaseModel):
    id: str
    url: str = Field(description="open this URL in napari, vizarr or neuroglancer")
    expires_at: Any
    images: dict[str, str] = Field(default_factory=dict, description="image id → URL")
    iiif: str = Field(
        default="",
        description="the IIIF Image API 3.0 id of the image (open its info.json in OpenSeadragon); "
        "for a dataset, the prefix under which each image's IIIF id is its image id",
    )
    iiif_images: dict[str, str] = Field(default_factory=dict, description="image id → IIIF id")
    manifest: str | None = Field(
        default=None, description="the dataset's IIIF Presentation 3.0 manifest (for Mirador)"
    )


def _mint(
    request: Request,
    caller: Caller,
    session: SessionDep,
    services: ServicesDep,
    *,
    kind: str,
    target: str,
    project_id: str,
    lifetime: int,
) -> tuple[str, capabilities.Capability]:
    # The capability names the credential that mints it, and dies with it.
    user = session.get(User, caller.user_id)
    credential = session.get(AccessToken, caller.token_id) if caller.token_id else None
    if user is None or credential is None:
        raise Unauthorised("sign in or send a valid bearer token")
    token, capability = capabilities.mint(
        secret_key(services.settings),
        kind=kind,
        target=target,
        user=user,
        credential=credential,
        lifetime=timedelta(seconds=lifetime),
        now=utcnow(),
    )
    record(
        session,
        "capability.mint",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type=kind,
        object_id=target,
        project_id=project_id,
        client_address=client_address(request),
        detail={"capability_id": capability.id, "expires_at": capability.expires_at.isoformat()},
    )
    return token, capability


def _zarr_url(request: Request, token: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/zarr/c/{token}/"


def _iiif_id(request: Request, token: str) -> str:
    """The IIIF side of the same capability (api/routers/iiif.py serves it)."""
    return f"{str(request.base_url).rstrip('/')}/iiif/3/c/{token}"


@router.post("/api/images/{image_id}/capabilities", response_model=CapabilityOut, status_code=201)
def mint_image_capability(
    image_id: str,
    body: CapabilityIn,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> CapabilityOut:
    """A short-lived read-only URL of the image's OME-Zarr, for viewers that send no headers."""
    image = get_visible(session, caller, Image, image_id)
    dataset = session.get(Dataset, image.dataset_id)
    assert dataset is not None
    token, capability = _mint(
        request,
        caller,
        session,
        services,
        kind="image",
        target=image.id,
        project_id=dataset.project_id,
        lifetime=body.expires_in_seconds,
    )
    url = _zarr_url(request, token)
    iiif = _iiif_id(request, token)
    return CapabilityOut(
        id=capability.id,
        url=url,
        expires_at=capability.expires_at,
        images={image.id: url},
        iiif=iiif,
        iiif_images={image.id: iiif},
    )


@router.post(
    "/api/datasets/{dataset_id}/capabilities", response_model=CapabilityOut, status_code=201
)
def mint_dataset_capability(
    dataset_id: str,
    body: CapabilityIn,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> CapabilityOut:
    """A short-lived read-only URL under which every ready image of the dataset is an OME-Zarr."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    token, capability = _mint(
        request,
        caller,
        session,
        services,
        kind="dataset",
        target=dataset.id,
        project_id=dataset.project_id,
        lifetime=body.expires_in_seconds,
    )
    url = _zarr_url(request, token)
    image_ids = session.scalars(
        select(Image.id).where(
            Image.dataset_id == dataset.id,
            Image.status == ImageStatus.READY,
            Image.deleted_at.is_(None),
        )
    ).all()
    return CapabilityOut(
        id=capability.id,
        url=url,
        expires_at=capability.expires_at,
        images={i: f"{url}{i}/" for i in image_ids},
        iiif=_iiif_id(request, token),
        iiif_images={i: f"{_iiif_id(request, token)}/{i}" for i in image_ids},
        manifest=f"{_iiif_id(request, token)}/manifest",
    )
