"""IIIF Image API 3.0 (level 2) over the pyramids, with EM-aware rendering parameters."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

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
from allmicro_data.errors import Invalid
from allmicro_data.settings import Settings

router = APIRouter(prefix="/iiif/3", tags=["IIIF"])

CACHE_CONTROL = "private, max-age=31536000, immutable"
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: binary(*FORMATS.values()),
    304: {"description": "not modified"},
    400: {"description": "bad IIIF syntax, or a size beyond maxWidth, maxHeight or maxArea"},
    503: {"description": "renders in progress hold the memory this one needs; see Retry-After"},
}
INFO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/ld+json": {"schema": {"type": "object"}}}}
}
TILE = 512


def _base(request: Request, image_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/iiif/3/{image_id}"


def size_limits(settings: Settings) -> SizeLimits:
    return SizeLimits(settings.iiif_max_width, settings.iiif_max_height, settings.iiif_max_area)


def info_document(
    request: Request, view: ImageView, pyramid: OpenPyramid, limits: SizeLimits
) -> dict[str, Any]:
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
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": _base(request, view.id),
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
    if view.pixel_size_x:
        # The physical dimensions service: viewers draw a calibrated scale bar from it.
        info["service"] = [
            {
                "@context": "http://iiif.io/api/annex/services/physdim/1/context.json",
                "profile": "http://iiif.io/api/annex/services/physdim",
                "physicalScale": view.pixel_size_x,
                "physicalUnits": "m",
            }
        ]
    return info


@router.get("/{image_id}", include_in_schema=False)
async def base_uri(image_id: str, request: Request) -> RedirectResponse:
    return RedirectResponse(f"{_base(request, image_id)}/info.json", status_code=303)


# GET and HEAD as two routes, so each has its own operationId in the OpenAPI document.
@router.get("/{image_id}/info.json", responses=INFO_RESPONSES)
@router.head("/{image_id}/info.json", responses=INFO_RESPONSES)
async def info_json(image_id: str, request: Request) -> Response:
    """The image service description: size, tiles, scale factors, formats, physical scale."""
    state = viewing(request)
    caller = await state.caller(request)
    view = await state.image(caller, image_id)
    pyramid = await state.open_pyramid(view)
    body = info_document(request, view, pyramid, size_limits(state.services.settings))
    accept = request.headers.get("accept", "")
    media = "application/ld+json" if "application/ld+json" in accept else "application/json"
    response = JSONResponse(body, media_type=media)
    response.headers["Link"] = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
    return response


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
) -> Response:
    """A rendered region of one plane (IIIF Image API 3.0 request)."""
    state = viewing(request)
    caller = await state.caller(request)
    view = await state.image(caller, image_id)
    # Repeat requests are answered from the request as written, before any parsing.
    as_written = f"{view.id}@{view.version}{request.url.path}?{request.url.query}"
    rendered = state.tiles.get(as_written)
    if rendered is None:
        settings = parse_settings(
            z=z, t=t, c=c, window=window, colors=colors, gamma=gamma, cmap=cmap, raw=raw
        )
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
