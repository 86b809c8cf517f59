"""IIIF Image API 3.0 request parsing and planning: region, size, rotation, quality, format, level."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from allmicro_data.errors import DomainError

FORMATS = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
QUALITIES = ("default", "color", "gray", "bitonal")
_NUMBER = r"\d+(?:\.\d+)?"
_REGION_PX = re.compile(r"^(\d+),(\d+),(\d+),(\d+)$")
_REGION_PCT = re.compile(rf"^pct:({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})$")
_SIZE_WH = re.compile(r"^(\d*),(\d*)$")
_SIZE_PCT = re.compile(rf"^pct:({_NUMBER})$")


class IIIFError(DomainError):
    """A request the IIIF specification says is bad syntax or impossible: 400."""

    status = 400
    title = "Bad IIIF request"


@dataclass(frozen=True)
class SizeLimits:
    """The largest picture one request may produce (info.json's maxWidth, maxHeight, maxArea):
    what bounds the memory of a render, since `^` sizes upscale a small region at will."""

    max_width: int = 8192
    max_height: int = 8192
    max_area: int = 4096 * 4096

    def admit(self, width: int, height: int) -> bool:
        return (
            width <= self.max_width
            and height <= self.max_height
            and width * height <= self.max_area
        )

    def fit_scale(self, width: int, height: int) -> float:
        """The largest scale at which a width x height picture stays within the limits."""
        return min(
            self.max_width / width,
            self.max_height / height,
            math.sqrt(self.max_area / (width * height)),
        )

    def scaled(self, width: int, height: int, scale: float) -> tuple[int, int]:
        """width x height scaled, rounded, and brought within the limits if rounding left them."""
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        if not self.admit(w, h):
            scale = min(scale, self.fit_scale(width, height))
            # Rounding down keeps both sides, and so the area, within the limits.
            w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
        return w, h


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class ImageRequest:
    region: Region
    width: int  # output size before rotation
    height: int
    rotation: int  # 0, 90, 180, 270
    mirror: bool
    quality: str
    format: str

    @property
    def canonical(self) -> str:
        """The canonical request path (IIIF 3.0 §4.7), used in cache keys and ETags."""
        r = self.region
        rotation = f"{'!' if self.mirror else ''}{self.rotation}"
        return f"{r.x},{r.y},{r.w},{r.h}/{self.width},{self.height}/{rotation}/{self.quality}.{self.format}"


def parse_region(text: str, width: int, height: int) -> Region:
    if text == "full":
        return Region(0, 0, width, height)
    if text == "square":
        side = min(width, height)
        return Region((width - side) // 2, (height - side) // 2, side, side)
    match = _REGION_PX.match(text)
    if match:
        x, y, w, h = (int(v) for v in match.groups())
    else:
        match = _REGION_PCT.match(text)
        if not match:
            raise IIIFError(f"invalid region {text!r}")
        px, py, pw, ph = (float(v) for v in match.groups())
        x, y = round(px * width / 100), round(py * height / 100)
        w, h = round(pw * width / 100), round(ph * height / 100)
    if w <= 0 or h <= 0:
        raise IIIFError("the region has no area")
    if x >= width or y >= height:
        raise IIIFError("the region lies outside the image")
    return Region(x, y, min(w, width - x), min(h, height - y))


def parse_size(text: str, region: Region, limits: SizeLimits = SizeLimits()) -> tuple[int, int]:
    """The output size of a request (IIIF 3.0 §4.2): `max`, `!w,h` and `^!w,h` shrink to the
    server's limits; any other size beyond them is a 400, as the specification says."""
    upscale = text.startswith("^")
    spec = text[1:] if upscale else text
    rw, rh = region.w, region.h
    if spec == "max":
        scale = limits.fit_scale(rw, rh)
        w, h = limits.scaled(rw, rh, scale if upscale else min(1.0, scale))
    elif spec.startswith("pct:"):
        match = _SIZE_PCT.match(spec)
        if not match:
            raise IIIFError(f"invalid size {text!r}")
        pct = float(match.group(1))
        w, h = round(rw * pct / 100), round(rh * pct / 100)
        if pct > 100 and not upscale:
            raise IIIFError("sizes above 100% need the ^ prefix")
    else:
        confined = spec.startswith("!")
        match = _SIZE_WH.match(spec[1:] if confined else spec)
        if not match or (not match.group(1) and not match.group(2)):
            raise IIIFError(f"invalid size {text!r}")
        sw = int(match.group(1)) if match.group(1) else None
        sh = int(match.group(2)) if match.group(2) else None
        if confined:
            if sw is None or sh is None:
                raise IIIFError("!w,h needs both width and height")
            scale = min(sw / rw, sh / rh)
            if scale > 1 and not upscale:
                scale = 1.0
            w, h = limits.scaled(rw, rh, min(scale, limits.fit_scale(rw, rh)))
        elif sw is not None and sh is not None:
            w, h = sw, sh
        elif sw is not None:
            w, h = sw, max(1, round(rh * sw / rw))
        else:
            assert sh is not None
            w, h = max(1, round(rw * sh / rh)), sh
    if w <= 0 or h <= 0:
        raise IIIFError("the requested size is empty")
    if not upscale and (w > rw or h > rh):
        raise IIIFError("sizes larger than the region need the ^ prefix")
    if not limits.admit(w, h):
        raise IIIFError(
            f"the requested size {w}x{h} exceeds the limits of this server (maxWidth "
            f"{limits.max_width}, maxHeight {limits.max_height}, maxArea {limits.max_area})"
        )
    return w, h


def parse_rotation(text: str) -> tuple[int, bool]:
    mirror = text.startswith("!")
    spec = text[1:] if mirror else text
    try:
        degrees = float(spec)
    except ValueError:
        raise IIIFError(f"invalid rotation {text!r}") from None
    if degrees not in (0.0, 90.0, 180.0, 270.0):
        raise IIIFError("rotation must be 0, 90, 180 or 270 degrees")
    return int(degrees), mirror


def parse_request(
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    width: int,
    height: int,
    limits: SizeLimits = SizeLimits(),
) -> ImageRequest:
    quality, dot, fmt = quality_format.rpartition(".")
    if not dot or quality not in QUALITIES:
        raise IIIFError(f"invalid quality {quality or quality_format!r}")
    if fmt not in FORMATS:
        raise IIIFError(f"unsupported format {fmt!r}")
    parsed_region = parse_region(region, width, height)
    w, h = parse_size(size, parsed_region, limits)
    degrees, mirror = parse_rotation(rotation)
    return ImageRequest(parsed_region, w, h, degrees, mirror, quality, fmt)


def choose_level(level_widths: list[int], region_w: int, out_w: int) -> int:
    """The smallest pyramid level that still has at least as many pixels as the output needs."""
    best = 0
    full = level_widths[0]
    for level, width in enumerate(level_widths):
        if region_w * width / full >= out_w:
            best = level
    return best


def scale_factors(level_widths: list[int]) -> list[int]:
    full = level_widths[0]
    return [max(1, round(full / w)) for w in level_widths]
