"""OME-Zarr (NGFF 0.4) pyramid writer: reads a series in bands and writes 2x block-mean levels."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numcodecs
import numpy as np
import zarr
from allmicro_data.ingest.readers.base import Series
from allmicro_data.storage.base import ObjectStore
from allmicro_data.storage.zarr_adapter import ZarrObjectStore

ProgressCallback = Callable[[float], None]

MIN_LEVEL_SIDE = 512
CHUNK_2D = 512
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


@dataclass
class PyramidInfo:
    """What was written: enough for the catalogue and the tile server."""

    key: str
    ngff_version: str
    axes: str
    level_shapes: list[tuple[int, ...]]
    dtype: str
    windows: list[tuple[float, float]] = field(default_factory=list)


def level_shapes(shape: tuple[int, ...], axes: str) -> list[tuple[int, ...]]:
    """Shapes of every level: y and x halve (rounding up) until the largest side is <= 512."""
    shapes = [shape]
    yi, xi = axes.index("y"), axes.index("x")
    while max(shapes[-1][yi], shapes[-1][xi]) > MIN_LEVEL_SIDE:
        nxt = list(shapes[-1])
        nxt[yi] = math.ceil(nxt[yi] / 2)
        nxt[xi] = math.ceil(nxt[xi] / 2)
        shapes.append(tuple(nxt))
    return shapes


def downsample_yx(block: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """2x2 block mean over the last two axes; odd edges average the pixels that exist."""
    h, w = block.shape[-2:]
    ph, pw = h % 2, w % 2
    data = block.astype(np.float64)
    if ph or pw:
        pad = [(0, 0)] * (data.ndim - 2) + [(0, ph), (0, pw)]
        data = np.pad(data, pad, mode="edge")
    lead = data.shape[:-2]
    summed = data.reshape(*lead, data.shape[-2] // 2, 2, data.shape[-1] // 2, 2).mean(axis=(-3, -1))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(summed), info.min, info.max).astype(dtype)
    return summed.astype(dtype)


def _chunks(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    return tuple(min(CHUNK_2D, n) if a in "yx" else 1 for a, n in zip(axes, shape, strict=True))


def _window(sample: np.ndarray[Any, Any]) -> tuple[float, float]:
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [0.1, 99.9])
    if hi <= lo:
        hi = lo + 1
    return (float(lo), float(hi))


def write_pyramid(
    series: Series,
    store: ObjectStore,
    key: str,
    *,
    ome_xml: str | None = None,
    progress: ProgressCallback | None = None,
) -> PyramidInfo:
    """Write the series as an NGFF 0.4 multiscale image at key in store."""
    axes = series.axes
    shapes = level_shapes(series.shape, axes)
    root = zarr.open_group(ZarrObjectStore(store, key), mode="w", zarr_format=2)
    compressor = numcodecs.Zstd(level=3)
    arrays = [
        root.create_array(
            str(i),
            shape=s,
            dtype=series.dtype,
            chunks=_chunks(s, axes),
            compressors=compressor,
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=0,
        )
        for i, s in enumerate(shapes)
    ]
    yi = axes.index("y")
    band = CHUNK_2D * 2 ** (len(shapes) - 1)
    height = series.shape[yi]
    n_channels = series.shape[axes.index("c")] if "c" in axes else 1
    samples: list[list[np.ndarray[Any, Any]]] = [[] for _ in range(n_channels)]
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        region = [slice(None)] * len(axes)
        region[yi] = slice(y0, y1)
        data = series.read(region)
        for level, arr in enumerate(arrays):
            if level:
                data = downsample_yx(data, series.dtype)
            scale = 2**level
            sel: list[slice] = [slice(None)] * len(axes)
            sel[yi] = slice(y0 // scale, y0 // scale + data.shape[yi])
            arr[tuple(sel)] = data
        for c in range(n_channels):
            plane = np.take(data, c, axis=axes.index("c")) if "c" in axes else data
            samples[c].append(plane.ravel()[:: max(1, plane.size // 65536)])
        if progress is not None:
            progress(y1 / height)
    windows = [_window(np.concatenate(s)) for s in samples]
    root.attrs.update(_ngff_attrs(series, shapes, windows))
    if ome_xml is not None:
        store.put_bytes(_join(key, "OME/METADATA.ome.xml"), ome_xml.encode("utf-8"))
    return PyramidInfo(
        key=key,
        ngff_version="0.4",
        axes=axes,
        level_shapes=shapes,
        dtype=str(series.dtype),
        windows=windows,
    )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


def _ngff_attrs(
    series: Series, shapes: list[tuple[int, ...]], windows: list[tuple[float, float]]
) -> dict[str, Any]:
    axes = series.axes
    axes_meta: list[dict[str, Any]] = []
    for a in axes:
        entry: dict[str, Any] = {"name": a, "type": _AXIS_TYPES[a]}
        if a in "zyx":
            entry["unit"] = "micrometer"
        axes_meta.append(entry)
    datasets = []
    for level, shape in enumerate(shapes):
        scale = []
        for i, a in enumerate(axes):
            if a in "zyx":
                size_m = series.pixel_size.for_axis(a)
                base = size_m * 1e6 if size_m else 1.0
                factor = series.shape[i] / shape[i] if a in "yx" else 1.0
                scale.append(base * factor)
            else:
                scale.append(1.0)
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    colours = ["FF0000", "00FF00", "0000FF"] if series.rgb else ["FFFFFF"]
    channels = [
        {
            "active": True,
            "color": colours[i % len(colours)],
            "label": f"channel {i}",
            "window": {"start": lo, "end": hi, "min": lo, "max": hi},
            "coefficient": 1,
            "family": "linear",
            "inverted": False,
        }
        for i, (lo, hi) in enumerate(windows)
    ]
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": series.name,
                "axes": axes_meta,
                "datasets": datasets,
                "type": "mean",
            }
        ],
        "omero": {
            "version": "0.4",
            "name": series.name,
            "channels": channels,
            "rdefs": {"model": "color" if series.rgb else "greyscale"},
        },
    }
