"""Figure export: a region of an image as a PNG or TIFF download for reports, rendered like its
tiles, with a calibrated scale bar and the image's ROIs burnt in."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from allmicro_data import rois
from allmicro_data.api import figures
from allmicro_data.api.figures import FigureRequest, Shape
from allmicro_data.api.iiif import parse_region
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.rendering import RenderSettings
from allmicro_data.api.routers.iiif import RenderDep, size_limits
from allmicro_data.api.streaming import content_disposition
from allmicro_data.api.viewing import ImageView, Viewing, viewing
from allmicro_data.errors import Invalid

router = APIRouter(prefix="/api", tags=["figures"])

FIGURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: binary(*figures.FORMATS.values(), description="the figure, as a download"),
    413: {"description": "the figure would exceed the pixels one figure may have"},
    503: {"description": "renders in progress hold the memory this one needs; see Retry-After"},
}


@router.get("/images/{image_id}/figure", response_class=Response, responses=FIGURE_RESPONSES)
async def image_figure(
    image_id: str,
    request: Request,
    settings: RenderDep,
    region: Annotated[
        str,
        Query(
            max_length=100,
            description="x,y,w,h in full-resolution pixels (or `full`, or IIIF `pct:`)",
        ),
    ] = "full",
    width: Annotated[
        int | None,
        Query(ge=1, le=100_000, description="output width in pixels; default: native resolution"),
    ] = None,
    fmt: Annotated[
        Literal["png", "tiff"], Query(alias="format", description="png or tiff")
    ] = "png",
    scalebar: Annotated[bool, Query(description="burn in a calibrated scale bar")] = False,
    rois: Annotated[bool, Query(description="draw the image's saved ROIs of this plane")] = False,
) -> Response:
    """The region rendered with the same parameters as the tiles (z, t, c, window, colors,
    gamma, cmap), at native resolution or `width`, as a PNG or a TIFF that records the
    physical pixel size (PNG pHYs; TIFF X/YResolution in pixels per centimetre)."""
    state = viewing(request)
    view = await state.image(await state.caller(request), image_id)
    pyramid = await state.open_pyramid(view)
    limits = size_limits(state.services.settings)
    asked = figures.figure_request(
        parse_region(region, pyramid.size("x"), pyramid.size("y")), width, limits
    )
    if scalebar and not view.pixel_size_x:
        raise Invalid("this image has no pixel size: it cannot have a scale bar")
    shapes = await run_in_threadpool(_shapes, state, view, settings.z, settings.t) if rois else []
    async with state.renders.hold(figures.figure_cost(pyramid, asked, settings, limits)):
        figure = await run_in_threadpool(
            _figure, state, view, asked, settings, fmt, scalebar, shapes
        )
    headers = {
        "Content-Disposition": content_disposition(_filename(view.name, asked, fmt)),
        # A figure is made for its asker; the image's rendering may change.
        "Cache-Control": "private, no-store",
    }
    if figure.scale_bar is not None:
        headers["X-Scale-Bar"] = f"{figure.scale_bar.pixels} px = {figure.scale_bar.metres:g} m"
    return Response(figure.body, media_type=figure.media_type, headers=headers)


def _shapes(state: Viewing, view: ImageView, z: int, t: int) -> list[Shape]:
    """The ROIs of the plane shown (the image is already found visible to the caller)."""
    with state.services.session() as session:
        return [
            Shape(kind=r.kind, points=list(r.points or []), name=r.name)
            for r in rois.rows_of(session, view.id)
            if r.z == z and r.t == t
        ]


def _figure(
    state: Viewing,
    view: ImageView,
    asked: FigureRequest,
    settings: RenderSettings,
    fmt: str,
    with_scale_bar: bool,
    shapes: list[Shape],
) -> figures.Figure:
    pyramid = state.pyramid(view)
    pixels = figures.render_region(state.services.store, state.chunks, pyramid, asked, settings)
    r = asked.region
    return figures.compose(
        pixels,
        asked,
        pixel_size=(view.pixel_size_x, view.pixel_size_y),
        with_scale_bar=with_scale_bar,
        shapes=shapes,
        fmt=fmt,
        description={
            "image_id": view.id,
            "image": view.name,
            "region": [r.x, r.y, r.w, r.h],
            "rendering": settings.key,
        },
    )


def _filename(name: str, asked: FigureRequest, fmt: str) -> str:
    stem = re.sub(r"\.(ome\.)?[A-Za-z0-9]{1,5}$", "", name) or "figure"
    r = asked.region
    return f"{stem}_x{r.x}_y{r.y}_{r.w}x{r.h}_{asked.width}px.{'tif' if fmt == 'tiff' else fmt}"
