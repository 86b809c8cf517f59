"""Figures for reports: a region of an image rendered as its tiles are, with a burnt-in calibrated
scale bar and the image's ROIs drawn on it, encoded as PNG or TIFF with its physical pixel size."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from allmicro_data.api.iiif import Region, SizeLimits
from allmicro_data.api.pyramids import ChunkCache, OpenPyramid, level_box, level_for_factor
from allmicro_data.api.rendering import RenderSettings, render, render_bytes, resize
from allmicro_data.errors import DomainError, Invalid
from allmicro_data.storage import ObjectStore

# A figure is one picture in memory, bounded as the largest IIIF picture is (maxWidth, maxHeight,
# maxArea); the level it reads is less than twice as fine as the output, so its source pixels are
# at most this many times the largest figure's.
SOURCE_PER_FIGURE_PIXEL = 4
FORMATS = {"png": "image/png", "tiff": "image/tiff"}
ROI_COLOUR = (255, 215, 0)  # gold: visible on grey, fire and viridis pictures alike


class FigureTooLarge(DomainError):
    """A figure beyond the pixels one render may produce."""

    status = 413
    title = "Figure too large"


@dataclass(frozen=True)
class FigureRequest:
    """Which part of the image, at which size: region in full-resolution pixels, output width."""

    region: Region
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Full-resolution pixels per figure pixel (horizontally)."""
        return self.region.w / self.width


def figure_request(region: Region, width: int | None, limits: SizeLimits) -> FigureRequest:
    """The output size of a region (native resolution unless a width is asked for), within the
    limits of one rendered picture: FigureTooLarge (413) names the widest figure that fits."""
    w = region.w if width is None else width
    if w < 1:
        raise Invalid("width must be at least 1")
    if w > region.w:
        raise Invalid(f"width {w} is wider than the region ({region.w} px): figures never upscale")
    h = max(1, round(region.h * w / region.w))
    if not limits.admit(w, h):
        most, _ = limits.scaled(region.w, region.h, limits.fit_scale(region.w, region.h))
        raise FigureTooLarge(
            f"a {w} x {h} px figure exceeds this server's limits (width {limits.max_width}, "
            f"height {limits.max_height}, {limits.max_area:,} pixels); ask for width={most} or "
            "less, or a smaller region"
        )
    return FigureRequest(region, w, h)


def source_box(
    pyramid: OpenPyramid, asked: FigureRequest
) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """The pyramid level a figure reads, and its rows and columns: as a IIIF request of the same
    region and size reads them, so the figure's pixels are the tiles' pixels."""
    r = asked.region
    level = level_for_factor(pyramid, min(r.w / asked.width, r.h / asked.height))
    ys, xs = level_box(pyramid, level, r.x, r.y, r.w, r.h)
    return level, ys, xs


def figure_cost(
    pyramid: OpenPyramid, asked: FigureRequest, settings: RenderSettings, limits: SizeLimits
) -> int:
    """The estimated peak memory of a figure, for the render budget: the render, then a copy
    for drawing and the encoder's. FigureTooLarge for a read beyond any figure's (a pyramid
    without its coarser levels)."""
    level, ys, xs = source_box(pyramid, asked)
    source = (ys[1] - ys[0]) * (xs[1] - xs[0])
    most = SOURCE_PER_FIGURE_PIXEL * limits.max_area
    if source > most:
        raise FigureTooLarge(
            f"this figure reads {source:,} source pixels, more than {most:,}; "
            "ask for a smaller width or region"
        )
    rendered = render_bytes(
        source_pixels=source,
        source_channels=pyramid.size("c", level),
        dtype=pyramid.levels[level].dtype,
        output_pixels=asked.width * asked.height,
        defaults=pyramid.defaults,
        settings=settings,
        quality="color",
        fmt="png",
    )
    return rendered + asked.width * asked.height * 8


def render_region(
    store: ObjectStore,
    cache: ChunkCache,
    pyramid: OpenPyramid,
    asked: FigureRequest,
    settings: RenderSettings,
) -> np.ndarray[Any, Any]:
    """The figure's picture before any drawing: (h, w) grey or (h, w, 3) RGB, 8 bits."""
    if settings.raw:
        raise Invalid("figures are rendered pictures; raw values come from the IIIF or zarr API")
    for axis, value in (("z", settings.z), ("t", settings.t)):
        if value >= pyramid.size(axis):
            raise Invalid(f"{axis}={value} is outside 0..{pyramid.size(axis) - 1}")
    level, ys, xs = source_box(pyramid, asked)
    data = pyramid.read(store, cache, level, {"z": settings.z, "t": settings.t}, ys, xs)
    pixels = render(data, "c" in pyramid.axes, pyramid.defaults, settings)
    return resize(pixels, asked.width, asked.height)


# ------------------------------------------------------------------ the scale bar


@dataclass(frozen=True)
class ScaleBar:
    """A round physical length (1, 2 or 5 x 10^n metres) and how it is written."""

    metres: float
    pixels: int  # its length in figure pixels
    label: str


# Units a scale bar's label is written in, coarsest first, by their power of ten in metres.
_UNITS = ((-3, "mm"), (-6, "µm"), (-9, "nm"), (-10, "Å"))


def scale_bar(metres_per_pixel: float, figure_width: int) -> ScaleBar:
    """The largest round length not longer than a fifth of the figure's width."""
    if not (metres_per_pixel > 0 and math.isfinite(metres_per_pixel)):
        raise Invalid("this image has no pixel size: it cannot have a scale bar")
    limit = metres_per_pixel * figure_width / 5
    power = math.floor(math.log10(limit))
    step = 1
    for candidate in (5, 2, 1):
        if candidate * 10.0**power <= limit * (1 + 1e-9):
            step = candidate
            break
    metres = float(f"{step}e{power}")  # the double nearest 5e-06, not 5 * 10.0**-6
    exponent, unit = next(((e, u) for e, u in _UNITS if power >= e), _UNITS[-1])
    # step x 10^(power - exponent), written exactly: 500 nm, 2 µm, 0.5 Å.
    shift = power - exponent
    value = str(step * 10**shift) if shift >= 0 else f"{step / 10 ** (-shift):g}"
    pixels = round(metres / metres_per_pixel)
    if pixels < 1:
        raise Invalid(
            f"a figure {figure_width} px wide has no room for a scale bar; ask for a wider one"
        )
    return ScaleBar(metres, pixels, f"{value} {unit}")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font (FreeType): the same on every server, with µ and Å.
    return ImageFont.load_default(size)


def draw_scale_bar(canvas: PILImage.Image, bar: ScaleBar) -> None:
    """A white bar with its label on a black box in the bottom right corner; sizes follow the
    figure's width so that a bar reads the same in a thumbnail-sized figure and a poster."""
    width, height = canvas.size
    unit = max(1, round(min(width, 4 * height) / 100))
    thickness = max(2, unit)
    margin = max(2, unit * 2)
    font = _font(max(9, unit * 3))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), bar.label, font=font)
    text_w, text_h = right - left, bottom - top
    box_w = max(bar.pixels, text_w) + 2 * margin
    box_h = text_h + thickness + 3 * margin
    x0 = max(0, width - box_w - margin)
    y0 = max(0, height - box_h - margin)
    white: Any = 255 if canvas.mode == "L" else (255, 255, 255)
    black: Any = 0 if canvas.mode == "L" else (0, 0, 0)
    draw.rectangle((x0, y0, x0 + box_w - 1, y0 + box_h - 1), fill=black)
    bar_x = x0 + (box_w - bar.pixels) // 2
    bar_y = y0 + box_h - margin - thickness
    draw.rectangle((bar_x, bar_y, bar_x + bar.pixels - 1, bar_y + thickness - 1), fill=white)
    text_x = x0 + (box_w - text_w) // 2 - left
    draw.text((text_x, y0 + margin - top), bar.label, fill=white, font=font)


# ------------------------------------------------------------------ ROIs


@dataclass(frozen=True)
class Shape:
    """An ROI as drawn: its kind and points in full-resolution pixels."""

    kind: str
    points: Sequence[Sequence[float]]
    name: str = ""


def draw_rois(canvas: PILImage.Image, asked: FigureRequest, shapes: Sequence[Shape]) -> None:
    """The ROIs, mapped from full-resolution pixels into the figure, as gold outlines."""
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(asked.width / 400))
    sx = asked.width / asked.region.w
    sy = asked.height / asked.region.h

    def at(point: Sequence[float]) -> tuple[float, float]:
        return ((point[0] - asked.region.x) * sx, (point[1] - asked.region.y) * sy)

    for shape in shapes:
        points = [at(p) for p in shape.points if len(p) >= 2]
        if not points:
            continue
        if shape.kind == "point" or len(points) == 1:
            x, y = points[0]
            r = 3 * width + 2
            draw.ellipse((x - r, y - r, x + r, y + r), outline=ROI_COLOUR, width=width)
        elif shape.kind in ("rectangle", "ellipse"):
            (xa, ya), (xb, yb) = points[0], points[-1]
            box = (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
            if shape.kind == "rectangle":
                draw.rectangle(box, outline=ROI_COLOUR, width=width)
            else:
                draw.ellipse(box, outline=ROI_COLOUR, width=width)
        elif shape.kind == "polygon":
            draw.line([*points, points[0]], fill=ROI_COLOUR, width=width, joint="curve")
        else:  # line, polyline, angle
            draw.line(points, fill=ROI_COLOUR, width=width, joint="curve")


# ------------------------------------------------------------------ the figure


@dataclass(frozen=True)
class Figure:
    body: bytes
    media_type: str
    scale_bar: ScaleBar | None
    metres_per_pixel: float | None  # of the figure's pixels (x)


def compose(
    pixels: np.ndarray[Any, Any],
    asked: FigureRequest,
    *,
    pixel_size: tuple[float | None, float | None],
    with_scale_bar: bool,
    shapes: Sequence[Shape],
    fmt: str,
    description: dict[str, Any],
) -> Figure:
    """Draw the scale bar and ROIs on a rendered region and encode it with its pixel size."""
    px, py = pixel_size
    mpp_x = px * asked.scale if px else None
    vertical = py or px
    mpp_y = vertical * asked.region.h / asked.height if vertical else None
    bar = scale_bar(mpp_x or 0.0, asked.width) if with_scale_bar else None
    canvas = PILImage.fromarray(np.ascontiguousarray(pixels))
    if shapes:
        canvas = canvas.convert("RGB")
        draw_rois(canvas, asked, shapes)
    if bar is not None:
        draw_scale_bar(canvas, bar)
    about = {**description}
    if mpp_x:
        about["pixel_size_m"] = [mpp_x, mpp_y]
    if bar is not None:
        about["scale_bar"] = {"label": bar.label, "metres": bar.metres, "pixels": bar.pixels}
    if fmt == "tiff":
        body = _tiff(canvas, mpp_x, mpp_y, about)
    else:
        body = _png(canvas, mpp_x, mpp_y, about, bar)
    return Figure(body, FORMATS[fmt], bar, mpp_x)


def _png(
    canvas: PILImage.Image,
    mpp_x: float | None,
    mpp_y: float | None,
    about: dict[str, Any],
    bar: ScaleBar | None,
) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("Description", json.dumps(about, ensure_ascii=False))
    if bar is not None:
        info.add_itxt("Scale bar", bar.label)
    # zlib's fastest level, as for tiles: a report's figure of millions of pixels is sent in
    # seconds, and most of a microscope picture's size is its noise whatever the level.
    options: dict[str, Any] = {"format": "PNG", "compress_level": 1, "pnginfo": info}
    # pHYs holds whole pixels per metre in 32 bits: pixels down to a quarter of a nanometre.
    if mpp_x and mpp_y and 1 / mpp_x < 2**32 and 1 / mpp_y < 2**32:
        options["dpi"] = (0.0254 / mpp_x, 0.0254 / mpp_y)
    buffer = io.BytesIO()
    canvas.save(buffer, **options)
    return buffer.getvalue()


def _tiff(
    canvas: PILImage.Image, mpp_x: float | None, mpp_y: float | None, about: dict[str, Any]
) -> bytes:
    pixels = np.asarray(canvas)
    options: dict[str, Any] = {
        "photometric": "rgb" if pixels.ndim == 3 else "minisblack",
        "compression": "zlib",
        # TIFF strings are 7-bit ASCII: µ and image names in other scripts are escaped.
        "description": json.dumps(about, ensure_ascii=True),
        "metadata": None,
    }
    if mpp_x and mpp_y:
        # Pixels per centimetre, as rationals: exact enough for sub-ångström pixels.
        options["resolution"] = (0.01 / mpp_x, 0.01 / mpp_y)
        options["resolutionunit"] = "CENTIMETER"
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, **options)
    return buffer.getvalue()
