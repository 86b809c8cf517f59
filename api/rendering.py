"""Turning pyramid pixels into pictures: windows, channel colours, colour maps, gamma, encoding."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image as PILImage

from allmicro_data.errors import Invalid


@dataclass(frozen=True)
class Window:
    """Intensities mapped linearly onto 0..255; values outside are clipped."""

    start: float
    end: float


# Anchor colours of common perceptually uniform maps at 0, 1/4, 1/2, 3/4 and 1; the LUT
# interpolates between them.
_COLOUR_MAP_ANCHORS = {
    "viridis": ("440154", "3b528b", "21918c", "5ec962", "fde725"),
    "magma": ("000004", "51127c", "b73779", "fc8961", "fcfdbf"),
    "inferno": ("000004", "56106e", "bb3754", "f98e09", "fcffa4"),
    "fire": ("000000", "7f0000", "ff4000", "ffbf00", "ffffff"),
}
COLOUR_MAPS = ("gray", *_COLOUR_MAP_ANCHORS)
DEFAULT_COLOURS = ("FFFFFF",)
MULTI_COLOURS = ("00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00")


@dataclass(frozen=True)
class RenderSettings:
    """How to turn channels into a picture; every field has a default from the pyramid."""

    channels: tuple[int, ...] | None = None  # visible channels; None: all (or the first few)
    windows: tuple[Window | None, ...] = ()  # per channel, None: the stored default
    colours: tuple[str | None, ...] = ()  # per channel RRGGBB, None: the stored default
    gamma: float = 1.0
    colour_map: str | None = None
    raw: bool = False
    z: int = 0
    t: int = 0
    invert: bool = False  # dark for bright, after gamma (before a colour map)
    log: bool = False  # logarithmic intensities within the window (diffraction patterns)

    @property
    def key(self) -> str:
        """A canonical text of the settings, for cache keys and ETags."""
        windows = ";".join("" if w is None else f"{w.start:g},{w.end:g}" for w in self.windows)
        colours = ",".join(c or "" for c in self.colours)
        chans = "" if self.channels is None else ",".join(map(str, self.channels))
        key = f"z{self.z}t{self.t}c{chans}w{windows}k{colours}g{self.gamma:g}m{self.colour_map}r{int(self.raw)}"
        # Only when set, so the tiles cached and ETags given before these existed stay valid.
        return key + ("i" if self.invert else "") + ("l" if self.log else "")


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def parse_colour(text: str) -> str:
    text = text.strip().lstrip("#").upper()
    if len(text) != 6 or any(ch not in "0123456789ABCDEF" for ch in text):
        raise Invalid(f"invalid colour {text!r} (expected RRGGBB)")
    return text


def parse_settings(
    *,
    z: int = 0,
    t: int = 0,
    c: str | None = None,
    window: str | None = None,
    colors: str | None = None,
    gamma: float | None = None,
    cmap: str | None = None,
    raw: bool = False,
    invert: bool = False,
    log: bool = False,
) -> RenderSettings:
    """Settings from the query parameters viewers may pass (see the IIIF router)."""
    channels = None
    if c:
        try:
            channels = tuple(int(v) for v in c.split(",") if v.strip() != "")
        except ValueError:
            raise Invalid("c must be a comma-separated list of channel numbers") from None
        if any(v < 0 for v in channels) or len(channels) > 64:
            raise Invalid("invalid channel list")
    windows: list[Window | None] = []
    for part in (window or "").split(";") if window else []:
        if not part.strip():
            windows.append(None)
            continue
        try:
            lo, hi = (float(v) for v in part.split(","))
        except ValueError:
            raise Invalid("window must be lo,hi pairs separated by ';'") from None
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            raise Invalid("a window needs finite lo < hi")
        windows.append(Window(lo, hi))
    colours = (
        tuple(parse_colour(v) if v.strip() else None for v in colors.split(",")) if colors else ()
    )
    if gamma is not None and not (0.05 <= gamma <= 20):
        raise Invalid("gamma must be between 0.05 and 20")
    if cmap is not None and cmap not in COLOUR_MAPS:
        raise Invalid(f"unknown colour map {cmap!r}; one of {', '.join(COLOUR_MAPS)}")
    return RenderSettings(
        channels=channels,
        windows=tuple(windows),
        colours=colours,
        gamma=gamma if gamma is not None else 1.0,
        colour_map=cmap,
        raw=raw,
        z=z,
        t=t,
        invert=invert,
        log=log,
    )


def to_uint8(
    plane: np.ndarray[Any, Any], window: Window, log: bool = False
) -> np.ndarray[Any, Any]:
    """Map a plane of any dtype through a window onto uint8 (NaN becomes 0); with `log`, on a
    logarithmic scale (see log_scale)."""
    if plane.dtype in (np.uint8, np.uint16, np.int8, np.int16):
        return _window_lut(plane.dtype.str, window.start, window.end, log)[_lut_index(plane)]
    lo, hi = float(window.start), float(window.end)
    span = hi - lo if hi > lo else 1.0
    if log:
        scaled = (plane.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / span)
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(scaled, 0, 1, out=scaled)
        scaled = log_scale(scaled, span) * np.float32(255.0)
        return np.rint(scaled).astype(np.uint8)
    scaled = (plane.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / span)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def log_scale(fraction: np.ndarray[Any, Any], span: float) -> np.ndarray[Any, Any]:
    """Positions 0..1 within a window to 0..1 on a log scale: log(1 + k·x) / log(1 + k) with
    k the window's width in data units (at least 1000, three decades): one count above the
    window's start is visible in a diffraction pattern, and data scaled to 0..1 still gets
    three decades."""
    k = max(float(span), 1000.0)
    if fraction.dtype == np.float32:  # the tile path's planes: no float64 copy
        return np.log1p(fraction * np.float32(k)) / np.float32(np.log1p(k))
    return np.log1p(fraction * k) / np.log1p(k)


def _lut_index(plane: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # Signed data index the LUT by their two's-complement bit pattern.
    if plane.dtype == np.int8:
        return plane.view(np.uint8)
    if plane.dtype == np.int16:
        return plane.view(np.uint16)
    return plane


@lru_cache(maxsize=256)
def _window_lut(dtype: str, start: float, end: float, log: bool = False) -> np.ndarray[Any, Any]:
    """uint8 output for every possible input value of a small integer dtype."""
    kind = np.dtype(dtype)
    bits = kind.itemsize * 8
    values = np.arange(2**bits, dtype=np.int64)
    if kind.kind == "i":
        values = np.where(values >= 2 ** (bits - 1), values - 2**bits, values)
    span = end - start if end > start else 1.0
    if log:
        fraction = np.clip((values.astype(np.float64) - start) / span, 0.0, 1.0)
        return np.rint(255.0 * log_scale(fraction, span)).astype(np.uint8)
    scaled = (values.astype(np.float64) - start) * (255.0 / span)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@lru_cache(maxsize=32)
def _tone_lut(gamma: float, invert: bool = False) -> np.ndarray[Any, Any]:
    x = np.arange(256, dtype=np.float64) / 255.0
    lut = np.clip(np.rint(255.0 * x ** (1.0 / gamma)), 0, 255).astype(np.uint8)
    return 255 - lut if invert else lut


@lru_cache(maxsize=16)
def colour_map_lut(name: str) -> np.ndarray[Any, Any]:
    """(256, 3) uint8 RGB for each grey level."""
    if name == "gray":
        grey = np.arange(256, dtype=np.uint8)
        return np.stack([grey, grey, grey], axis=1)
    anchors = np.array([_hex_rgb(c) for c in _COLOUR_MAP_ANCHORS[name]], dtype=np.float64)
    at = np.linspace(0, 255, len(anchors))
    x = np.arange(256)
    return (
        np.stack([np.interp(x, at, anchors[:, i]) for i in range(3)], axis=1)
        .round()
        .astype(np.uint8)
    )


@dataclass
class ChannelDefaults:
    """The stored display defaults of a pyramid (its omero block)."""

    windows: list[Window] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    ranges: list[Window] = field(default_factory=list)  # the data's min and max per channel
    rgb: bool = False


def render(
    data: np.ndarray[Any, Any],
    has_channels: bool,
    defaults: ChannelDefaults,
    settings: RenderSettings,
) -> np.ndarray[Any, Any]:
    """(c, y, x) or (y, x) pixels to an 8-bit (y, x) grey or (y, x, 3) RGB picture."""
    planes = data if has_channels else data[np.newaxis]
    n = planes.shape[0]
    visible = settings.channels
    if visible is None:
        visible = tuple(range(n)) if (defaults.rgb or n <= len(MULTI_COLOURS)) else (0,)
    if any(c >= n for c in visible):
        raise Invalid(f"channels run from 0 to {n - 1}")
    if defaults.rgb and settings.channels is None and not settings.windows and not settings.colours:
        picture = np.moveaxis(planes[:3], 0, -1).astype(np.uint8)
        return _apply_tone(picture, settings)

    def window_of(c: int) -> Window:
        if c < len(settings.windows) and settings.windows[c] is not None:
            return settings.windows[c]  # type: ignore[return-value]
        if c < len(defaults.windows):
            return defaults.windows[c]
        info = np.iinfo(planes.dtype) if planes.dtype.kind in "iu" else None
        return Window(float(info.min), float(info.max)) if info else Window(0.0, 1.0)

    if len(visible) == 1:
        c = visible[0]
        grey = _apply_tone(to_uint8(planes[c], window_of(c), settings.log), settings)
        if settings.colour_map and settings.colour_map != "gray":
            return colour_map_lut(settings.colour_map)[grey]
        colour = _colour_of(c, n, defaults, settings)
        return grey if colour == "FFFFFF" else _tint(grey, colour)
    picture = np.zeros((*planes.shape[1:], 3), dtype=np.uint16)
    for c in visible:
        grey = _apply_tone(to_uint8(planes[c], window_of(c), settings.log), settings)
        picture += _tint(grey, _colour_of(c, n, defaults, settings))
    return np.minimum(picture, 255).astype(np.uint8)


def render_bytes(
    *,
    source_pixels: int,
    source_channels: int,
    dtype: np.dtype[Any],
    output_pixels: int,
    defaults: ChannelDefaults,
    settings: RenderSettings,
    quality: str,
    fmt: str,
) -> int:
    """A generous estimate of the peak memory of one render (read, render, resize, quality,
    rotate, encode), for the render budget. Measured per pixel on this pipeline; keep it in
    step with render() and the steps after it."""
    read = source_pixels * source_channels * dtype.itemsize
    if settings.raw:
        # Nearest resampling, a byte-order copy, the PNG and its copy out of the buffer.
        return read + output_pixels * (4 * dtype.itemsize + 2)
    mixed, rgb = _picture_kind(source_channels, defaults, settings)
    mapped = settings.colour_map is not None and settings.colour_map != "gray"
    if mixed == 0:
        per_source = 3 + 4  # the stored RGB as one array; Pillow's RGBA copy
    elif mixed > 1:
        per_source = 21 + 4  # uint16 sum, a channel's tint temporaries; Pillow's RGBA copy
    elif mapped:
        per_source = 6 + 4  # the 8-bit plane, its colours; Pillow's RGBA copy
    elif rgb:
        per_source = 15 + 4  # a tint's uint16 temporaries; Pillow's RGBA copy
    else:
        per_source = 2  # the 8-bit plane, and its gamma-corrected copy
    if dtype.kind == "f":
        per_source += 16 if settings.log else 12  # a channel's float32 windowing temporaries
    # Resized, as an array, rotated, Pillow's copy, encoded; measured about 3 and 7 bytes.
    per_output = 10 if rgb or quality == "color" else 4
    if fmt == "webp":
        per_output += 8  # libwebp's ARGB and YUV pictures (measured 7)
    return read + source_pixels * per_source + output_pixels * per_output


def _picture_kind(n: int, defaults: ChannelDefaults, settings: RenderSettings) -> tuple[int, bool]:
    """How many channels render() mixes (0: stored RGB shown as is) and whether its picture
    is RGB, as render() decides."""
    visible = settings.channels
    if visible is None:
        visible = tuple(range(n)) if (defaults.rgb or n <= len(MULTI_COLOURS)) else (0,)
    if defaults.rgb and settings.channels is None and not settings.windows and not settings.colours:
        return 0, True
    if len(visible) == 1:
        if settings.colour_map and settings.colour_map != "gray":
            return 1, True
        return 1, _colour_of(visible[0], n, defaults, settings) != "FFFFFF"
    return len(visible), True


def _colour_of(c: int, n: int, defaults: ChannelDefaults, settings: RenderSettings) -> str:
    if c < len(settings.colours) and settings.colours[c]:
        return settings.colours[c]  # type: ignore[return-value]
    if c < len(defaults.colours) and defaults.colours[c]:
        return defaults.colours[c]
    return "FFFFFF" if n == 1 else MULTI_COLOURS[c % len(MULTI_COLOURS)]


def _tint(grey: np.ndarray[Any, Any], colour: str) -> np.ndarray[Any, Any]:
    r, g, b = _hex_rgb(colour)
    scale = np.array([r, g, b], dtype=np.uint16)
    return ((grey[..., np.newaxis].astype(np.uint16) * scale) // 255).astype(np.uint8)


def _apply_tone(pixels: np.ndarray[Any, Any], settings: RenderSettings) -> np.ndarray[Any, Any]:
    """Gamma and inversion of 8-bit pixels, as one table look-up (none when neither is set)."""
    if settings.gamma == 1.0 and not settings.invert:
        return pixels
    return _tone_lut(settings.gamma, settings.invert)[pixels]


def apply_quality(pixels: np.ndarray[Any, Any], quality: str) -> np.ndarray[Any, Any]:
    """IIIF qualities: default keeps the picture; color is RGB; gray is luma; bitonal is 0/255."""
    if quality == "color":
        return pixels if pixels.ndim == 3 else np.repeat(pixels[..., np.newaxis], 3, axis=2)
    if quality in ("gray", "bitonal"):
        grey = _luma(pixels) if pixels.ndim == 3 else pixels
        if quality == "bitonal":
            # uint8 operands: a plain 255/0 would make an int64 picture, 8 bytes a pixel.
            return np.where(grey >= 128, np.uint8(255), np.uint8(0))
        return grey
    return pixels


def _luma(pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """ITU-R 601 luma of an RGB picture, in bands of rows: the wide integer sums then take
    a band's memory, not 8 bytes for every pixel of a picture that may have millions."""
    weights = np.array([299, 587, 114], dtype=np.uint32)
    grey = np.empty(pixels.shape[:2], dtype=np.uint8)
    for y in range(0, pixels.shape[0], 256):
        band = pixels[y : y + 256].astype(np.uint32)
        grey[y : y + 256] = (band * weights).sum(axis=2) // 1000
    return grey


def orient(pixels: np.ndarray[Any, Any], rotation: int, mirror: bool) -> np.ndarray[Any, Any]:
    """IIIF rotation: mirror horizontally first, then rotate clockwise."""
    if mirror:
        pixels = pixels[:, ::-1]
    if rotation:
        pixels = np.rot90(pixels, k=-(rotation // 90), axes=(0, 1))
    return np.ascontiguousarray(pixels)


def resize(pixels: np.ndarray[Any, Any], width: int, height: int) -> np.ndarray[Any, Any]:
    """Resample an 8-bit picture (box filter down, bilinear up)."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    image = PILImage.fromarray(pixels)
    down = width <= pixels.shape[1] and height <= pixels.shape[0]
    method = PILImage.Resampling.BOX if down else PILImage.Resampling.BILINEAR
    return np.asarray(image.resize((width, height), method))


def resize_nearest(data: np.ndarray[Any, Any], width: int, height: int) -> np.ndarray[Any, Any]:
    """Nearest-neighbour resampling of the last two axes, for raw values that must not blend."""
    if data.shape[-1] == width and data.shape[-2] == height:
        return data
    rows = (np.arange(height) * data.shape[-2] // height).astype(np.intp)
    cols = (np.arange(width) * data.shape[-1] // width).astype(np.intp)
    return data[..., rows[:, np.newaxis], cols]


def encode(pixels: np.ndarray[Any, Any], fmt: str, *, bitonal: bool = False) -> bytes:
    """JPEG through libjpeg-turbo (simplejpeg); PNG and WebP through Pillow."""
    pixels = np.ascontiguousarray(pixels)
    if fmt == "jpg":
        if pixels.ndim == 2:
            return simplejpeg.encode_jpeg(pixels[..., np.newaxis], quality=90, colorspace="GRAY")
        return simplejpeg.encode_jpeg(pixels, quality=90, colorspace="RGB")
    image = PILImage.fromarray(pixels)
    if bitonal and fmt == "png":
        image = image.convert("1")
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="WEBP", quality=90, method=0)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray[Any, Any]) -> bytes:
    return encode(pixels, "png")


def encode_raw_png(data: np.ndarray[Any, Any]) -> bytes:
    """The stored values of one plane as an 8- or 16-bit greyscale PNG, for analysis."""
    if data.dtype in (np.uint8, np.uint16):
        # Pillow picks "L" for uint8 and "I;16" for little-endian uint16.
        image = PILImage.fromarray(np.ascontiguousarray(data.astype(data.dtype.newbyteorder("<"))))
    else:
        raise Invalid(f"raw PNG holds 8- or 16-bit unsigned data; this image is {data.dtype}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
