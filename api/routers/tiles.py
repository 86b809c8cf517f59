"""Simple viewing endpoints beside IIIF: 512 px PNG tiles, thumbnails, and display defaults."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from allmicro_data.api import plane_statistics
from allmicro_data.api.iiif import ImageRequest, Region
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.rendering import RenderSettings, Window, encode_png, render, render_bytes
from allmicro_data.api.routers.iiif import CACHE_CONTROL, _render, render_cost
from allmicro_data.api.viewing import ImageView, Rendered, Viewing, viewing
from allmicro_data.errors import Invalid, NotFound

router = APIRouter(prefix="/api", tags=["viewing"])

TILE_SIZE = 512
THUMBNAIL = 256
PNG: dict[int | str, dict[str, Any]] = {200: binary("image/png")}


@router.get(
    "/images/{image_id}/tiles/{level}/{ty}/{tx}.png", response_class=Response, responses=PNG
)
async def get_tile(
    image_id: str,
    level: int,
    ty: int,
    tx: int,
    request: Request,
    z: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    t: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    c: Annotated[int | None, Query(ge=0, le=1_000_000, description="one channel")] = None,
) -> Response:
    """A 512 px tile of one plane at a pyramid level (0 is full resolution), default display."""
    state = viewing(request)
    view = await state.image(await state.caller(request), image_id)
    return await tile_response(state, view, level, ty, tx, z=z, t=t, c=c)


async def tile_response(
    state: Viewing,
    view: ImageView,
    level: int,
    ty: int,
    tx: int,
    *,
    z: int = 0,
    t: int = 0,
    c: int | None = None,
) -> Response:
    pyramid = await state.open_pyramid(view)
    if not 0 <= level < len(pyramid.levels):
        raise NotFound(f"image {view.id} has no level {level}")
    height, width = pyramid.size("y", level), pyramid.size("x", level)
    if not (0 <= ty * TILE_SIZE < height and 0 <= tx * TILE_SIZE < width):
        raise NotFound(f"tile {ty},{tx} is outside level {level}")
    for axis, value in (("z", z), ("t", t)):
        if value >= pyramid.size(axis):
            raise Invalid(f"{axis}={value} is outside 0..{pyramid.size(axis) - 1}")
    settings = RenderSettings(z=z, t=t, channels=None if c is None else (c,))
    ys = (ty * TILE_SIZE, min(height, (ty + 1) * TILE_SIZE))
    xs = (tx * TILE_SIZE, min(width, (tx + 1) * TILE_SIZE))

    def draw() -> bytes:
        data = pyramid.read(state.services.store, state.chunks, level, {"z": z, "t": t}, ys, xs)
        return encode_png(render(data, "c" in pyramid.axes, pyramid.defaults, settings))

    pixels = (ys[1] - ys[0]) * (xs[1] - xs[0])
    cost = render_bytes(
        source_pixels=pixels,
        source_channels=pyramid.size("c", level),
        dtype=pyramid.levels[level].dtype,
        output_pixels=pixels,
        defaults=pyramid.defaults,
        settings=settings,
        quality="default",
        fmt="png",
    )
    async with state.renders.hold(cost):
        body = await run_in_threadpool(draw)
    return Response(body, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})


@router.get(
    "/images/{image_id}/thumbnail.jpg",
    response_class=Response,
    responses={200: binary("image/jpeg")},
)
async def thumbnail(image_id: str, request: Request) -> Response:
    """The whole image in at most 256 x 256 px, with the default display, cached."""
    state = viewing(request)
    view = await state.image(await state.caller(request), image_id)
    pyramid = await state.open_pyramid(view)
    width, height = pyramid.size("x"), pyramid.size("y")
    scale = min(1.0, THUMBNAIL / max(width, height))
    parsed = ImageRequest(
        Region(0, 0, width, height),
        max(1, round(width * scale)),
        max(1, round(height * scale)),
        0,
        False,
        "default",
        "jpg",
    )
    settings = RenderSettings(z=pyramid.size("z") // 2)
    key = f"{view.id}@{view.version}/thumbnail"
    etag = f'"{hashlib.sha256(key.encode()).hexdigest()[:40]}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    cached = state.tiles.get(key)
    if cached is None:
        async with state.renders.hold(render_cost(pyramid, parsed, settings)):
            body = await run_in_threadpool(_render, state, pyramid, parsed, settings)
        state.tiles.put(key, Rendered(body, "image/jpeg", etag))
    else:
        body = cached.body
    return Response(body, media_type="image/jpeg", headers=headers)


class DisplayChannel(BaseModel):
    label: str
    color: str
    window: dict[str, float]


class DisplayOut(BaseModel):
    """What a viewer needs to draw its controls: planes, channels and their default windows."""

    axes: str
    shape: list[int]
    levels: int
    dtype: str
    rgb: bool
    z_size: int
    t_size: int
    pixel_size: dict[str, float | None]
    channels: list[DisplayChannel]
    image_region: list[int] | None = Field(
        default=None,
        description="[y0, y1, x0, x1]: the part of the frame that is the sample, in "
        "full-resolution pixels, when the instrument burnt a data bar into the rest",
    )


@router.get("/images/{image_id}/display", response_model=DisplayOut)
async def display(image_id: str, request: Request) -> DisplayOut:
    """The image's planes, channels and default windows (without the data bar's pixels)."""
    state = viewing(request)
    view = await state.image(await state.caller(request), image_id)
    return await display_of(state, view)


async def display_of(state: Viewing, view: ImageView) -> DisplayOut:
    """The display controls' facts of an image, for members and share links alike."""
    pyramid = await state.open_pyramid(view)
    defaults = pyramid.defaults
    level0: Any = pyramid.levels[0]
    channels: list[DisplayChannel] = []
    for i in range(pyramid.size("c")):
        window = defaults.windows[i] if i < len(defaults.windows) else Window(0.0, 255.0)
        extent = defaults.ranges[i] if i < len(defaults.ranges) else window
        channels.append(
            DisplayChannel(
                label=defaults.labels[i] if i < len(defaults.labels) else f"channel {i}",
                color=defaults.colours[i] if i < len(defaults.colours) else "FFFFFF",
                window={
                    "start": window.start,
                    "end": window.end,
                    "min": extent.start,
                    "max": extent.end,
                },
            )
        )
    return DisplayOut(
        axes=pyramid.axes,
        shape=list(pyramid.shape(0)),
        levels=len(pyramid.levels),
        dtype=str(level0.dtype),
        rgb=pyramid.defaults.rgb,
        z_size=pyramid.size("z"),
        t_size=pyramid.size("t"),
        pixel_size={"x": view.pixel_size_x, "y": view.pixel_size_y, "z": view.pixel_size_z},
        channels=channels,
        image_region=list(view.image_region) if view.image_region else None,
    )


class HistogramOut(BaseModel):
    """A channel's intensities in one plane, without the data bar, for the contrast controls."""

    channel: int
    z: int
    t: int
    start: float = Field(description="the lowest value found; the first bin starts here")
    end: float = Field(description="where the last bin ends (the highest value is below it)")
    counts: list[int] = Field(description="pixels per bin; the bins are equally wide")
    min: float
    max: float
    percentiles: dict[str, float] = Field(
        description="values at these percentiles, e.g. 0.1 and 99.9 (auto-contrast)"
    )
    auto: list[float] = Field(
        description="[lo, hi]: the window auto-contrast picks (the 0.1 and 99.9 percentiles), "
        "as the server's default window does for images with a data bar"
    )
    pixels: int = Field(description="how many pixels were counted")
    level: int = Field(description="the pyramid level read (0 is full resolution)")
    image_region: list[int] | None = Field(
        description="[y0, y1, x0, x1] counted; null: the whole frame"
    )


@router.get("/images/{image_id}/histogram", response_model=HistogramOut)
async def histogram(
    image_id: str,
    request: Request,
    z: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    t: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    c: Annotated[int, Query(ge=0, le=1_000_000, description="channel")] = 0,
    bins: Annotated[int, Query(ge=2, le=4096)] = 256,
) -> HistogramOut:
    """The histogram of one channel of one plane, counted on a pyramid level of about a
    megapixel, inside the image region (an instrument's data bar is left out)."""
    state = viewing(request)
    view = await state.image(await state.caller(request), image_id)
    return await histogram_of(state, view, z=z, t=t, c=c, bins=bins)


async def histogram_of(
    state: Viewing, view: ImageView, *, z: int, t: int, c: int, bins: int
) -> HistogramOut:
    pyramid = await state.open_pyramid(view)
    for axis, value in (("z", z), ("t", t), ("c", c)):
        if value >= pyramid.size(axis):
            raise Invalid(f"{axis}={value} is outside 0..{pyramid.size(axis) - 1}")

    def count() -> plane_statistics.Histogram:
        values = plane_statistics.plane_values(
            state.services.store, state.chunks, pyramid, view.image_region, z=z, t=t
        )
        return plane_statistics.histogram(
            values[c], bins, plane_statistics.statistics_level(pyramid)
        )

    level = plane_statistics.statistics_level(pyramid)
    pixels = pyramid.size("y", level) * pyramid.size("x", level) * pyramid.size("c", level)
    # Reading the level, a channel's copy and np.histogram's float temporaries.
    async with state.renders.hold(pixels * (pyramid.levels[level].dtype.itemsize + 16)):
        found = await run_in_threadpool(count)
    region = plane_statistics.sample_region(view.image_region, pyramid)
    whole = region == (0, pyramid.size("y"), 0, pyramid.size("x"))
    return HistogramOut(
        channel=c,
        z=z,
        t=t,
        start=found.start,
        end=found.end,
        counts=found.counts,
        min=found.start,
        max=found.highest,
        percentiles=found.percentiles,
        auto=[found.auto.start, found.auto.end],
        pixels=found.pixels,
        level=found.level,
        image_region=None if whole else list(region),
    )
