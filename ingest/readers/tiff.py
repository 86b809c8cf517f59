"""TIFF family reader (tifffile): series, axes, lazy region reads through tifffile's zarr view."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from allmicro_data.ingest.readers.base import (
    AXIS_ORDER,
    ImageFile,
    PixelSize,
    Reader,
    ReadError,
    Series,
)

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# tifffile axis letters onto ours. S (samples, e.g. RGB) and C both become channels; I and Q
# (generic image/sequence index) become z, which downsamples in y/x only by default.
_AXIS_MAP = {"T": "t", "C": "c", "S": "c", "Z": "z", "I": "z", "Q": "z", "Y": "y", "X": "x"}

# Resolution units in metres.
_RESOLUTION_UNIT_M = {2: 0.0254, 3: 0.01}

# Refuse rasters whose declared size is absurd before anything is allocated.
MAX_PIXELS_PER_SERIES = 2**40


class TiffSeries(Series):
    def __init__(self, tiff: tifffile.TiffFile, index: int) -> None:
        super().__init__()
        tseries = tiff.series[index]
        self._tseries = tseries
        self.name = tseries.name or f"series {index}"
        src_axes = tseries.axes.upper()
        ours: list[str] = []
        for letter in src_axes:
            mapped = _AXIS_MAP.get(letter)
            if mapped is None:
                raise ReadError(f"unsupported TIFF axis {letter!r} in series {index}")
            if mapped in ours:
                # Two source axes onto one of ours (e.g. C and S): not representable as-is.
                raise ReadError(
                    f"TIFF series {index} has axes {src_axes!r}, which map twice to {mapped!r}"
                )
            ours.append(mapped)
        self.axes = "".join(a for a in AXIS_ORDER if a in ours)
        # Permutation from the file's axis order to ours.
        self._perm = tuple(ours.index(a) for a in self.axes)
        self.shape = tuple(int(tseries.shape[i]) for i in self._perm)
        self.dtype = np.dtype(tseries.dtype)
        self.rgb = "S" in src_axes and self.shape[self.axes.index("c")] in (3, 4)
        if int(np.prod(self.shape, dtype=np.float64)) > MAX_PIXELS_PER_SERIES:
            raise ReadError(
                f"TIFF series {index} declares {self.shape} pixels, beyond any real image"
            )
        self._array: Any = None
        self.pixel_size = _resolution_pixel_size(tseries.pages[0] if tseries.pages else None)

    def _zarr(self) -> Any:
        if self._array is None:
            self._array = zarr.open(self._tseries.aszarr(level=0), mode="r")
        return self._array

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        ours = self.normalise_region(region)
        src_region: list[slice] = [slice(None)] * len(ours)
        for our_index, src_index in enumerate(self._perm):
            src_region[src_index] = ours[our_index]
        try:
            data = np.asarray(self._zarr()[tuple(src_region)])
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(f"cannot decode TIFF pixels: {exc}") from exc
        return np.transpose(data, self._perm) if self._perm != tuple(range(len(ours))) else data


def _resolution_pixel_size(page: Any) -> PixelSize:
    """Pixel size from the standard resolution tags, only when a physical unit is declared."""
    if page is None:
        return PixelSize()
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    metres = _RESOLUTION_UNIT_M.get(unit)
    if metres is None:
        return PixelSize()

    def size(name: str) -> float | None:
        tag = tags.get(name)
        if tag is None:
            return None
        num, den = tag.value
        if not num or not den:
            return None
        return float(metres * den / num)

    x, y = size("XResolution"), size("YResolution")
    # 72 or 96 dpi with the default unit is what image libraries write when nobody calibrated.
    if unit_tag is None or (x is not None and round(0.0254 / x) in (72, 96, 300)):
        return PixelSize()
    return PixelSize(x=x, y=y)


class TiffImageFile(ImageFile):
    format = "TIFF"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._tiff = tifffile.TiffFile(path)
            n_series = len(self._tiff.series)
        except Exception as exc:
            raise ReadError(f"{path.name}: not a readable TIFF ({exc})") from exc
        if n_series == 0:
            raise ReadError(f"{path.name}: TIFF holds no images")
        try:
            self.series = [TiffSeries(self._tiff, i) for i in range(n_series)]
        except Exception:
            self._tiff.close()
            raise

    def close(self) -> None:
        self._tiff.close()


class TiffReader(Reader):
    name = "tiff"

    def sniff(self, head: bytes, path: Path) -> bool:
        return head[:4] in TIFF_MAGICS

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        return TiffImageFile(path)
