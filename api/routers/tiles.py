"""A simple PNG tile endpoint over the pyramid (the IIIF Image API builds on the same parts)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from allmicro_data.access import get_visible
from allmicro_data.api.deps import CallerDep, PlaneIndex, ServicesDep, SessionDep
from allmicro_data.api.pyramids import PyramidCache
from allmicro_data.api.rendering import Window, encode_png, to_uint8
from allmicro_data.catalogue.models import Image
from allmicro_data.errors import Invalid, NotFound
from allmicro_data.services import Services

router = APIRouter(prefix="/api", tags=["tiles"])

TILE_SIZE = 512


def pyramid_cache(request: Request) -> PyramidCache:
    cache: PyramidCache = request.app.state.pyramids
    return cache


@router.get(
    "/images/{image_id}/tiles/{level}/{ty}/{tx}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_tile(
    image_id: str,
    level: int,
    ty: int,
    tx: int,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
    z: PlaneIndex = 0,
    t: PlaneIndex = 0,
    c: Annotated[
        int | None, Query(ge=0, le=1_000_000, description="channel; default: all (RGB) or 0")
    ] = None,
) -> Response:
    """A 512 px tile of one plane at a pyramid level (0 is full resolution), windowed to 8 bits."""
    image = get_visible(session, caller, Image, image_id)
    return tile_response(request, services, image, level, ty, tx, z=z, t=t, c=c)


def tile_response(
    request: Request,
    services: Services,
    image: Image,
    level: int,
    ty: int,
    tx: int,
    *,
    z: int = 0,
    t: int = 0,
    c: int | None = None,
) -> Response:
    if image.pyramid_key is None:
        raise NotFound(f"image {image.id} has no pyramid")
    pyramid = pyramid_cache(request).get(services.store, image.pyramid_key)
    if not 0 <= level < len(pyramid.levels):
        raise NotFound(f"image {image.id} has no level {level}")
    shape = pyramid.shape(level)
    axes = pyramid.axes
    height, width = shape[axes.index("y")], shape[axes.index("x")]
    if not (0 <= ty * TILE_SIZE < height and 0 <= tx * TILE_SIZE < width):
        raise NotFound(f"tile {ty},{tx} is outside level {level}")
    selection: list[Any] = []
    for axis, n in zip(axes, shape, strict=True):
        if axis == "t":
            selection.append(_index(t, n, "t"))
        elif axis == "z":
            selection.append(_index(z, n, "z"))
        elif axis == "c":
            selection.append(slice(None))
        elif axis == "y":
            selection.append(slice(ty * TILE_SIZE, min(height, (ty + 1) * TILE_SIZE)))
        else:
            selection.append(slice(tx * TILE_SIZE, min(width, (tx + 1) * TILE_SIZE)))
    data = np.asarray(pyramid.levels[level][tuple(selection)])
    pixels = render(data, "c" in axes, pyramid.windows, pyramid.rgb, c)
    return Response(encode_png(pixels), media_type="image/png")


def _index(value: int, size: int, axis: str) -> int:
    if value >= size:
        raise Invalid(f"{axis}={value} is outside 0..{size - 1}")
    return value


def render(
    data: np.ndarray[Any, Any],
    has_channels: bool,
    windows: list[Window],
    rgb: bool,
    channel: int | None,
) -> np.ndarray[Any, Any]:
    """(c, y, x) or (y, x) pixels to an 8-bit grey or RGB picture with the default windows."""
    if not has_channels:
        return to_uint8(data, windows[0] if windows else Window(0, 255))
    if rgb and channel is None:
        return np.moveaxis(data[:3], 0, -1).astype(np.uint8)
    index = channel or 0
    if index >= data.shape[0]:
        raise Invalid(f"c={index} is outside 0..{data.shape[0] - 1}")
    window = windows[index] if index < len(windows) else Window(0, 255)
    return to_uint8(data[index], window)
