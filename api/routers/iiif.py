"""IIIF Image API 3.0 (level 2) over the pyramids, with EM-aware rendering parameters: by bearer
token, session or IIIF access token at `/iiif/3/{image}`, and through capability URLs at
`/iiif/3/c/{capability}` (an image's service at its root; a dataset's images under their ids,
with the dataset's Presentation 3.0 manifest beside them). Manifests for signed-in callers are
at `/iiif/3/manifests/{dataset}`."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from allmicro_data import capabilities
from allmicro_data.access import Caller
from allmicro_data.api import iiif_auth, manifests
from allmicro_data.api.deps import bearer_token, client_address
from allmicro_data.api.iiif import (
    FORMATS,
    IIIFError,
    ImageRequest,
    SizeLimits,
    parse_request,
)
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.pyramids import OpenPyramid, level_box, level_for_factor
from allmicro_data.api.rendering import (
    RenderSettings,
    apply_quality,
    encode,
    encode_raw_png,
    orient,
    parse_settings,
    render,
    render_bytes,
    resize,
    resize_nearest,
)
from allmicro_data.api.viewing import ImageView, Rendered, Viewing, viewing
from allmicro_data.catalogue.models import utcnow
from allmicro_data.errors import Invalid, NotFound, Unauthorised
from allmicro_data.settings import Settings, secret_key

router = APIRouter(prefix="/iiif/3", tags=["IIIF"])

CACHE_CONTROL = "private, max-age=31536000, immutable"
IMAGE_CONTEXT = "http://iiif.io/api/image/3/context.json"
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: binary(*FORMATS.values()),
    304: {"description": "not modified"},
    400: {"description": "bad IIIF syntax, or a size beyond maxWidth, maxHeight or maxArea"},
    503: {"description": "renders in progress hold the memory this one needs; see Retry-After"},
}
JSON_LD: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/ld+json": {"schema": {"type": "object"}},
        }
    }
}
TILE = 512
# The largest render done on the event loop, in output and in source pixels (_renders_at_once).
AT_ONCE_PIXELS = TILE * TILE


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def size_limits(settings: Settings) -> SizeLimits:
    return SizeLimits(settings.iiif_max_width, settings.iiif_max_height, settings.iiif_max_area)


def linked_data(request: Request, body: dict[str, Any], context: str, **kw: Any) -> JSONResponse:
    """A IIIF JSON-LD document: `application/ld+json` with the API's context as its profile when
    the client asks for JSON-LD, plain `application/json` otherwise (Image API 3.0 §5,
    Presentation API 3.0 §6)."""
    accept = request.headers.get("accept", "")
    media = (
        f'application/ld+json;profile="{context}"'
        if "application/ld+json" in accept
        else "application/json"
    )
    response = JSONResponse(body, media_type=media, **kw)
    response.headers["Vary"] = "Accept"
    return response


def physical_dimensions(service_id: str, view: ImageView) -> dict[str, Any] | None:
    """The physical dimensions service (IIIF services annex): millimetres per pixel, for a scale
    bar. Left out when the pixel size is unknown or not square (one scale cannot say it).
    Square means within 0.1 %: SEMs derive x and y from field width and height, which round
    differently (the Zeiss sample's differ by 0.006 %), and a scale bar drawn from x is then
    right to well under a pixel in y too."""
    x, y = view.pixel_size_x, view.pixel_size_y
    if not x or (y and abs(x - y) > 1e-3 * x):
        return None
    return {
        "@context": "http://iiif.io/api/annex/services/physdim/1/context.json",
        "id": f"{service_id}/physdim",
        "type": "Service",
        "profile": "http://iiif.io/api/annex/services/physdim",
        "physicalScale": x * 1000.0,
        "physicalUnits": "mm",
    }


def info_document(
    service_id: str,
    view: ImageView,
    pyramid: OpenPyramid,
    limits: SizeLimits,
    auth: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The image information document of the image service at `service_id`; `auth`: the IIIF
    Authorization Flow services that protect it."""
    width, height = pyramid.size("x"), pyramid.size("y")
    factors = sorted({round(width / pyramid.size("x", lvl)) for lvl in range(len(pyramid.levels))})
    # Every size listed must be within the limits (IIIF 3.0 §5.2); the largest one allowed
    # stands in for the levels beyond them.
    sizes = [
        {"width": pyramid.size("x", lvl), "height": pyramid.size("y", lvl)}
        for lvl in reversed(range(len(pyramid.levels)))
        if limits.admit(pyramid.size("x", lvl), pyramid.size("y", lvl))
    ]
    if not limits.admit(width, height):
        w, h = limits.scaled(width, height, limits.fit_scale(width, height))
        sizes.append({"width": w, "height": h})
    info: dict[str, Any] = {
        "@context": IMAGE_CONTEXT,
        "id": service_id,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level2",
        "width": width,
        "height": height,
        "maxWidth": limits.max_width,
        "maxHeight": limits.max_height,
        "maxArea": limits.max_area,
        "sizes": sizes,
        "tiles": [{"width": TILE, "height": TILE, "scaleFactors": factors}],
        "extraFormats": ["png", "webp"],
        "extraQualities": ["color", "gray", "bitonal"],
        "extraFeatures": ["baseUriRedirect", "cors", "mirroring", "sizeUpscaling"],
    }
    service = list(auth or [])
    physdim = physical_dimensions(service_id, view)
    if physdim is not None:
        service.append(physdim)
    if service:
        info["service"] = service
    return info


async def render_settings(
    z: Annotated[int, Query(ge=0, le=1_000_000, description="z plane")] = 0,
    t: Annotated[int, Query(ge=0, le=1_000_000, description="time point")] = 0,
    c: Annotated[
        str | None, Query(max_length=300, description="visible channels, e.g. 0,2")
    ] = None,
    window: Annotated[
        str | None, Query(max_length=2000, description="per channel lo,hi; separated by ;")
    ] = None,
    colors: Annotated[str | None, Query(max_length=1000, description="per channel RRGGBB")] = None,
    gamma: Annotated[float | None, Query(description="display gamma, 0.05..20")] = None,
    cmap: Annotated[str | None, Query(max_length=20, description="colour map")] = None,
    raw: Annotated[bool, Query(description="stored values as PNG-16 (one channel)")] = False,
    invert: Annotated[bool, Query(description="dark for bright")] = False,
    log: Annotated[bool, Query(description="logarithmic intensities in the window")] = False,
) -> RenderSettings:
    """The EM-aware rendering parameters every image request of ours takes beside IIIF's own.

    A coroutine, though it awaits nothing: FastAPI runs a plain function dependency in its thread
    pool, and on a busy server the trip there and back cost a tile more than parsing does
    (5-20 ms in the server during bench/day.py's uploads)."""
    return parse_settings(
        z=z,
        t=t,
        c=c,
        window=window,
        colors=colors,
        gamma=gamma,
        cmap=cmap,
        raw=raw,
        invert=invert,
        log=log,
    )


RenderDep = Annotated[RenderSettings, Depends(render_settings)]


# ------------------------------------------------------------------ who asks


async def iiif_caller(state: Viewing, request: Request) -> Caller:
    """The caller of a bearer-route request: a IIIF access token (Authorization Flow 2.0), else
    a bearer token or the session cookie as on every viewing route."""
    token = bearer_token(request)
    if token is not None and iiif_auth.is_access_token(token):
        grant = iiif_auth.verify(secret_key(state.services.settings), token, utcnow())
        if grant is None:
            raise Unauthorised("the IIIF access token is invalid or expired")
        try:
            return await state.capability_caller(grant)
        except NotFound:
            raise Unauthorised("the IIIF access token's session has ended") from None
    return await state.caller(request)


async def capability_view(request: Request, token: str, image_id: str | None) -> ImageView:
    """The image a capability URL names: the image capability's own (image_id None), or one
    image of the dataset capability's dataset. 404 for anything else or a dead capability."""
    state = viewing(request)
    capability = capabilities.verify(secret_key(state.services.settings), token, utcnow())
    if capability is None:
        raise NotFound("capability not found or expired")
    if (capability.kind == "image") != (image_id is None):
        raise NotFound("no such image service under this capability")
    caller = await state.capability_caller(capability)
    view = await state.image(caller, image_id or capability.target)
    if capability.kind == "dataset" and view.dataset_id != capability.target:
        raise NotFound(f"image {image_id} not found")
    await state.note_capability_use(capability, client_address(request))
    return view


def _capability_service(request: Request, token: str, image_id: str | None) -> str:
    base = f"{_origin(request)}/iiif/3/c/{token}"
    return base if image_id is None else f"{base}/{image_id}"


# ------------------------------------------------------------------ shared responses


async def info_response(
    request: Request, view: ImageView, service_id: str, *, protected: bool
) -> Response:
    state = viewing(request)
    pyramid = await state.open_pyramid(view)
    auth = iiif_auth.services(_origin(request), view.id) if protected else None
    body = info_document(service_id, view, pyramid, size_limits(state.services.settings), auth)
    response = linked_data(request, body, IMAGE_CONTEXT)
    response.headers["Link"] = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
    return response


async def physdim_response(request: Request, view: ImageView, service_id: str) -> Response:
    service = physical_dimensions(service_id, view)
    if service is None:
        raise NotFound("this image has no physical pixel size")
    return linked_data(request, service, str(service["@context"]))


async def image_response(
    request: Request,
    view: ImageView,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    settings: RenderSettings,
) -> Response:
    state = viewing(request)
    # Repeat requests are answered from the request as written, before any parsing.
    as_written = f"{view.id}@{view.version}{request.url.path}?{request.url.query}"
    rendered = state.tiles.get(as_written)
    if rendered is None:
        pyramid = await state.open_pyramid(view)
        parsed = parse_request(
            region,
            size,
            rotation,
            quality_format,
            pyramid.size("x"),
            pyramid.size("y"),
            size_limits(state.services.settings),
        )
        if settings.raw and (parsed.format != "png" or parsed.quality != "default"):
            raise IIIFError("raw=1 is served as default.png")
        canonical = f"{view.id}@{view.version}/{parsed.canonical}?{settings.key}"
        rendered = state.tiles.get(canonical)
        if rendered is None:
            etag = f'"{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"'
            if etag in _if_none_match(request):
                return Response(status_code=304, headers=_headers(etag))
            async with state.renders.hold(render_cost(pyramid, parsed, settings)):
                if _renders_at_once(state, pyramid, parsed, settings):
                    body = _render(state, pyramid, parsed, settings)
                else:
                    body = await run_in_threadpool(_render, state, pyramid, parsed, settings)
            rendered = Rendered(body, FORMATS[parsed.format], etag)
            state.tiles.put(canonical, rendered)
        state.tiles.put(as_written, rendered)
    headers = _headers(rendered.etag)
    if rendered.etag in _if_none_match(request):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(rendered.body))
        return Response(status_code=200, headers=headers, media_type=rendered.media_type)
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)


# ------------------------------------------------------------------ capability URLs
# Declared before the bearer routes; GET and HEAD as two routes, so each has its own operationId.


@router.get("/c/{token}/manifest", responses=JSON_LD)
async def capability_manifest(token: str, request: Request) -> Response:
    """The Presentation 3.0 manifest of a dataset capability's dataset: one canvas per image,
    each with the image service under this same capability (Mirador needs no credentials)."""
    state = viewing(request)
    capability = capabilities.verify(secret_key(state.services.settings), token, utcnow())
    if capability is None or capability.kind != "dataset":
        raise NotFound("capability not found or expired")
    caller = await state.capability_caller(capability)
    await state.note_capability_use(capability, client_address(request))
    prefix = f"{_origin(request)}/iiif/3/c/{token}"
    body = await run_in_threadpool(
        manifests.build,
        state.services,
        caller,
        capability.target,
        manifest_id=f"{prefix}/manifest",
        service_of=lambda image_id: f"{prefix}/{image_id}",
        origin=_origin(request),
    )
    return _manifest_response(request, body)


@router.get("/c/{token}/info.json", responses=JSON_LD)
@router.head("/c/{token}/info.json", responses=JSON_LD)
async def capability_info(token: str, request: Request) -> Response:
    """The image information of an image capability's image (no other credentials needed)."""
    view = await capability_view(request, token, None)
    return await info_response(
        request, view, _capability_service(request, token, None), protected=False
    )


@router.get("/c/{token}/physdim", responses=JSON_LD)
async def capability_physdim(token: str, request: Request) -> Response:
    """The physical dimensions service of an image capability's image."""
    view = await capability_view(request, token, None)
    return await physdim_response(request, view, _capability_service(request, token, None))


@router.get("/c/{token}", include_in_schema=False)
async def capability_base(token: str, request: Request) -> RedirectResponse:
    return RedirectResponse(f"{_capability_service(request, token, None)}/info.json", 303)


@router.get(
    "/c/{token}/{region}/{size}/{rotation}/{quality_format}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
@router.head(
    "/c/{token}/{region}/{size}/{rotation}/{quality_format}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def capability_image(
    token: str,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    request: Request,
    settings: RenderDep,
) -> Response:
    """A rendered region of an image capability's image."""
    view = await capability_view(request, token, None)
    return await image_response(request, view, region, size, rotation, quality_format, settings)


@router.get("/c/{token}/{image_id}/info.json", responses=JSON_LD)
@router.head("/c/{token}/{image_id}/info.json", responses=JSON_LD)
async def capability_dataset_info(token: str, image_id: str, request: Request) -> Response:
    """The image information of one image of a dataset capability's dataset."""
    view = await capability_view(request, token, image_id)
    return await info_response(
        request, view, _capability_service(request, token, image_id), protected=False
    )


@router.get("/c/{token}/{image_id}/physdim", responses=JSON_LD)
async def capability_dataset_physdim(token: str, image_id: str, request: Request) -> Response:
    """The physical dimensions service of one image of a dataset capability's dataset."""
    view = await capability_view(request, token, image_id)
    return await physdim_response(request, view, _capability_service(request, token, image_id))


@router.get("/c/{token}/{image_id}", include_in_schema=False)
async def capability_dataset_base(token: str, image_id: str, request: Request) -> RedirectResponse:
    service = _capability_service(request, token, image_id)
    return RedirectResponse(f"{service}/info.json", 303)


@router.get(
    "/c/{token}/{image_id}/{region}/{size}/{rotation}/{quality_format}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
@router.head(
    "/c/{token}/{image_id}/{region}/{size}/{rotation}/{quality_format}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def capability_dataset_image(
    token: str,
    image_id: str,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    request: Request,
    settings: RenderDep,
) -> Response:
    """A rendered region of one image of a dataset capability's dataset."""
    view = await capability_view(request, token, image_id)
    return await image_response(request, view, region, size, rotation, quality_format, settings)


# ------------------------------------------------------------------ manifests


@router.get("/manifests/{dataset_id}", responses=JSON_LD)
async def dataset_manifest(dataset_id: str, request: Request) -> Response:
    """The dataset as a IIIF Presentation 3.0 manifest: one canvas per ready image, with the
    dataset's and each image's metadata, for Mirador or Universal Viewer."""
    state = viewing(request)
    caller = await iiif_caller(state, request)
    origin = _origin(request)
    body = await run_in_threadpool(
        manifests.build,
        state.services,
        caller,
        dataset_id,
        manifest_id=f"{origin}/iiif/3/manifests/{dataset_id}",
        service_of=lambda image_id: f"{origin}/iiif/3/{image_id}",
        origin=origin,
        auth=True,
    )
    return _manifest_response(request, body)


def _manifest_response(request: Request, body: dict[str, Any]) -> Response:
    response = linked_data(request, body, manifests.CONTEXT)
    # The images it lists change with ingest; a viewer may keep it for a minute.
    response.headers["Cache-Control"] = "private, max-age=60"
    return response


# ------------------------------------------------------------------ bearer token or session


def _base(request: Request, image_id: str) -> str:
    return f"{_origin(request)}/iiif/3/{image_id}"


@router.get("/{image_id}", include_in_schema=False)
async def base_uri(image_id: str, request: Request) -> RedirectResponse:
    return RedirectResponse(f"{_base(request, image_id)}/info.json", status_code=303)


@router.get("/{image_id}/info.json", responses=JSON_LD)
@router.head("/{image_id}/info.json", responses=JSON_LD)
async def info_json(image_id: str, request: Request) -> Response:
    """The image service description: size, tiles, scale factors, formats, physical scale, and
    the IIIF Authorization Flow services by which a viewer elsewhere signs its user in.
    Without valid credentials: 401 with a stub naming only those services (for any id)."""
    state = viewing(request)
    try:
        caller = await iiif_caller(state, request)
    except Unauthorised:
        return _sign_in_first(request, image_id)
    view = await state.image(caller, image_id)
    return await info_response(request, view, _base(request, image_id), protected=True)


def _sign_in_first(request: Request, image_id: str) -> Response:
    """A 401 image service description with only the authorization services: what a IIIF viewer
    needs to sign its user in. It says nothing about the image, not even whether it exists."""
    body = {
        "@context": IMAGE_CONTEXT,
        "id": _base(request, image_id),
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level2",
        "service": iiif_auth.services(_origin(request), image_id),
    }
    return linked_data(
        request, body, IMAGE_CONTEXT, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


@router.get("/{image_id}/physdim", responses=JSON_LD)
async def physdim(image_id: str, request: Request) -> Response:
    """The physical dimensions service of the image (millimetres per pixel)."""
    state = viewing(request)
    view = await state.image(await iiif_caller(state, request), image_id)
    return await physdim_response(request, view, _base(request, image_id))


@router.get(
    "/{image_id}/{region}/{size}/{rotation}/{quality_format}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
@router.head(
    "/{image_id}/{region}/{size}/{rotation}/{quality_format}",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def image_request(
    image_id: str,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    request: Request,
    settings: RenderDep,
) -> Response:
    """A rendered region of one plane (IIIF Image API 3.0 request)."""
    state = viewing(request)
    view = await state.image(await iiif_caller(state, request), image_id)
    return await image_response(request, view, region, size, rotation, quality_format, settings)


def _headers(etag: str) -> dict[str, str]:
    return {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
    }


def _if_none_match(request: Request) -> set[str]:
    header = request.headers.get("if-none-match")
    return {v.strip() for v in header.split(",")} if header else set()


def _source_box(
    pyramid: OpenPyramid, parsed: ImageRequest
) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """The pyramid level a request reads, and the rows and columns of it."""
    r = parsed.region
    level = level_for_factor(pyramid, min(r.w / parsed.width, r.h / parsed.height))
    ys, xs = level_box(pyramid, level, r.x, r.y, r.w, r.h)
    return level, ys, xs


def _renders_at_once(
    state: Viewing, pyramid: OpenPyramid, parsed: ImageRequest, settings: RenderSettings
) -> bool:
    """Whether to render on the event loop: a tile of at most AT_ONCE_PIXELS, read from at
    most as many, all of whose chunks are decoded in the cache already. Such a tile renders in
    about a millisecond, while the trip to the thread pool and back cost it more than that on a
    busy server (5-20 ms in the server during bench/day.py's uploads). Any other render, and
    any that must read the store or decode a chunk, goes to the pool."""
    if parsed.width * parsed.height > AT_ONCE_PIXELS:
        return False
    level, ys, xs = _source_box(pyramid, parsed)
    if (ys[1] - ys[0]) * (xs[1] - xs[0]) > AT_ONCE_PIXELS:
        return False
    if settings.z >= pyramid.size("z") or settings.t >= pyramid.size("t"):
        return False  # the pool's render says what is wrong
    plane = {"z": settings.z, "t": settings.t}
    return pyramid.cached(state.chunks, level, plane, ys, xs)


def render_cost(pyramid: OpenPyramid, parsed: ImageRequest, settings: RenderSettings) -> int:
    """The estimated peak memory of rendering a request, in bytes (for the render budget)."""
    level, ys, xs = _source_box(pyramid, parsed)
    return render_bytes(
        source_pixels=(ys[1] - ys[0]) * (xs[1] - xs[0]),
        source_channels=pyramid.size("c", level),
        dtype=pyramid.levels[level].dtype,
        output_pixels=parsed.width * parsed.height,
        defaults=pyramid.defaults,
        settings=settings,
        quality=parsed.quality,
        fmt=parsed.format,
    )


def _render(
    state: Viewing, pyramid: OpenPyramid, parsed: ImageRequest, settings: RenderSettings
) -> bytes:
    for axis, value in (("z", settings.z), ("t", settings.t)):
        if value >= pyramid.size(axis):
            raise Invalid(f"{axis}={value} is outside 0..{pyramid.size(axis) - 1}")
    level, ys, xs = _source_box(pyramid, parsed)
    data = pyramid.read(
        state.services.store, state.chunks, level, {"z": settings.z, "t": settings.t}, ys, xs
    )
    has_channels = "c" in pyramid.axes
    if settings.raw:
        plane = data
        if has_channels:
            if settings.channels is None and data.shape[0] > 1:
                raise Invalid("raw=1 needs one channel: pass c=N")
            plane = data[settings.channels[0] if settings.channels else 0]
        plane = resize_nearest(plane, parsed.width, parsed.height)
        return encode_raw_png(orient(plane, parsed.rotation, parsed.mirror))
    pixels = render(data, has_channels, pyramid.defaults, settings)
    pixels = resize(pixels, parsed.width, parsed.height)
    pixels = apply_quality(pixels, parsed.quality)
    pixels = orient(pixels, parsed.rotation, parsed.mirror)
    return encode(np.ascontiguousarray(pixels), parsed.format, bitonal=parsed.quality == "bitonal")
