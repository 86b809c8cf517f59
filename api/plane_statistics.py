"""Statistics of one plane for the display controls (histogram, percentiles, default windows),
read from a pyramid level small enough to be fast and without the instrument's data bar."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from allmicro_data.api.pyramids import ChunkCache, OpenPyramid, level_box
from allmicro_data.api.rendering import ChannelDefaults, Window
from allmicro_data.storage import ObjectStore

# The finest level with at most this many pixels a plane is read: about 1024 x 1024, enough for
# percentiles to one grey level, and a few milliseconds of chunks.
STATISTICS_PIXELS = 1 << 20
# Auto-contrast and the default window: the same saturation as the ingest's default window.
AUTO_PERCENTILES = (0.1, 99.9)
REPORTED_PERCENTILES = (0.1, 0.5, 1.0, 2.0, 98.0, 99.0, 99.5, 99.9)

Region = tuple[int, int, int, int]  # y0, y1, x0, x1 in full-resolution pixels


def statistics_level(pyramid: OpenPyramid) -> int:
    """The finest level whose plane has at most STATISTICS_PIXELS (else the coarsest)."""
    for level in range(len(pyramid.levels)):
        if pyramid.size("y", level) * pyramid.size("x", level) <= STATISTICS_PIXELS:
            return level
    return len(pyramid.levels) - 1


def sample_region(region: Region | None, pyramid: OpenPyramid) -> Region:
    """The part of the frame that is the sample: the image region if it is a sensible box
    inside the frame, else the whole frame."""
    height, width = pyramid.size("y"), pyramid.size("x")
    if region is not None:
        y0, y1, x0, x1 = (int(v) for v in region)
        y0, x0 = max(0, y0), max(0, x0)
        y1, x1 = min(height, y1), min(width, x1)
        if y1 > y0 and x1 > x0:
            return y0, y1, x0, x1
    return 0, height, 0, width


def plane_values(
    store: ObjectStore,
    cache: ChunkCache,
    pyramid: OpenPyramid,
    region: Region | None,
    *,
    z: int,
    t: int,
) -> np.ndarray[Any, Any]:
    """(c, n) values of one plane at the statistics level, inside the image region. The box
    is rounded inward at that level, so no row of a data bar leaks in."""
    level = statistics_level(pyramid)
    y0, y1, x0, x1 = sample_region(region, pyramid)
    fy = pyramid.size("y") / pyramid.size("y", level)
    fx = pyramid.size("x") / pyramid.size("x", level)
    ly0, lx0 = int(np.ceil(y0 / fy)), int(np.ceil(x0 / fx))
    ly1, lx1 = int(np.floor(y1 / fy)), int(np.floor(x1 / fx))
    if ly1 <= ly0 or lx1 <= lx0:  # a region thinner than a pixel of this level
        (ly0, ly1), (lx0, lx1) = level_box(pyramid, level, x0, y0, x1 - x0, y1 - y0)
    data = pyramid.read(store, cache, level, {"z": z, "t": t}, (ly0, ly1), (lx0, lx1))
    planes = data if "c" in pyramid.axes else data[np.newaxis]
    return planes.reshape(planes.shape[0], -1)


def finite(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return values[np.isfinite(values)] if values.dtype.kind == "f" else values


@dataclass(frozen=True)
class Histogram:
    """Counts of a channel's values in equal bins from `start` to `end` (the data's range)."""

    start: float
    end: float
    highest: float
    counts: list[int]
    percentiles: dict[str, float]
    auto: Window
    pixels: int
    level: int


def histogram(values: np.ndarray[Any, Any], bins: int, level: int) -> Histogram:
    """A channel's histogram and percentiles. Integer data with a range narrower than the
    bins get one bin per value, so a bin never straddles two grey levels unevenly."""
    values = finite(values)
    if values.size == 0:
        return Histogram(0.0, 1.0, 0.0, [0] * bins, {}, Window(0.0, 1.0), 0, level)
    lo, hi = float(values.min()), float(values.max())
    if values.dtype.kind in "iu":
        bins = min(bins, int(hi - lo) + 1)
        edges_end = lo + bins * max(1.0, np.ceil((hi - lo + 1) / bins))
        counts, _ = np.histogram(values, bins=bins, range=(lo, edges_end))
        end = edges_end
    else:
        end = hi if hi > lo else lo + 1.0
        counts, _ = np.histogram(values, bins=bins, range=(lo, end))
    found = np.percentile(values, REPORTED_PERCENTILES)
    percentiles = {f"{p:g}": float(v) for p, v in zip(REPORTED_PERCENTILES, found, strict=True)}
    counted = [int(n) for n in counts]
    auto = auto_window(values) or Window(0.0, 1.0)
    return Histogram(lo, float(end), hi, counted, percentiles, auto, int(values.size), level)


def auto_window(values: np.ndarray[Any, Any]) -> Window | None:
    """The window auto-contrast picks: the AUTO_PERCENTILES of the values."""
    values = finite(values)
    if values.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(values, AUTO_PERCENTILES))
    return Window(lo, hi if hi > lo else lo + 1.0)


def sample_defaults(
    store: ObjectStore, cache: ChunkCache, pyramid: OpenPyramid, region: Region
) -> ChannelDefaults:
    """The pyramid's display defaults with each channel's window taken from the sample alone
    (the middle plane, as the thumbnail): a bright data bar under a dark 16-bit SEM image
    otherwise stretches the window until the picture is near black."""
    values = plane_values(store, cache, pyramid, region, z=pyramid.size("z") // 2, t=0)
    windows = list(pyramid.defaults.windows)
    for c in range(min(len(windows), values.shape[0])):
        window = auto_window(values[c])
        if window is not None:
            windows[c] = window
    return replace(pyramid.defaults, windows=windows)
