"""Series over pixels already in memory or in a raw file region: for tests, benchmarks and raw formats."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from allmicro_data.ingest.readers.base import AXIS_ORDER, PixelSize, Series


def _check_axes(axes: str, ndim: int) -> None:
    if len(axes) != ndim or "".join(a for a in AXIS_ORDER if a in axes) != axes:
        raise ValueError(
            f"axes {axes!r} must be {ndim} distinct letters of {AXIS_ORDER!r} in order"
        )


class ArraySeries(Series):
    """A series over a numpy array (or np.memmap); reads return copies of the region."""

    def __init__(
        self,
        array: np.ndarray[Any, Any],
        axes: str,
        *,
        name: str = "",
        pixel_size: PixelSize | None = None,
        is_volume: bool = False,
        rgb: bool = False,
        levels: Sequence[ArraySeries] = (),
    ) -> None:
        super().__init__()
        _check_axes(axes, array.ndim)
        self.array = array
        self.name = name
        self.axes = axes
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.pixel_size = pixel_size or PixelSize()
        self.is_volume = is_volume
        self.rgb = rgb
        self._levels = list(levels)

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        return np.array(self.array[self.normalise_region(region)])

    def levels(self) -> list[Series]:
        return list(self._levels)


class RawFileSeries(Series):
    """A C-ordered array stored uncompressed at an offset in a file (MRC, raw dumps).

    Regions are read with positioned reads into a fresh buffer: unlike a memmap, nothing of the
    file stays mapped into the process, so reading a 2 GiB volume band by band keeps memory at
    one band.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        shape: tuple[int, ...],
        dtype: np.dtype[Any] | str,
        axes: str,
        *,
        name: str = "",
        pixel_size: PixelSize | None = None,
        is_volume: bool = False,
    ) -> None:
        super().__init__()
        _check_axes(axes, len(shape))
        self.path = Path(path)
        self.offset = offset
        self.name = name or self.path.name
        self.axes = axes
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.pixel_size = pixel_size or PixelSize()
        self.is_volume = is_volume
        self._fd = os.open(self.path, os.O_RDONLY)
        needed = offset + int(np.prod(self.shape)) * self.dtype.itemsize
        if os.fstat(self._fd).st_size < needed:
            os.close(self._fd)
            raise ValueError(f"{self.path.name} is shorter than its {self.shape} pixels need")

    def close(self) -> None:
        os.close(self._fd)

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        sl = self.normalise_region(region)
        out = np.empty(tuple(s.stop - s.start for s in sl), dtype=self.dtype)
        self.read_into(sl, out)
        return out

    def read_into(self, region: Sequence[slice] | None, out: np.ndarray[Any, Any]) -> None:
        """Read region into out (C-contiguous, of the region's shape and the series' dtype).

        The pyramid writer uses this, when a series has it, to recycle its band buffers.
        """
        sl = self.normalise_region(region)
        out_shape = tuple(s.stop - s.start for s in sl)
        if out.shape != out_shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"read_into needs a C-ordered {self.dtype} array of {out_shape}")
        if out.size == 0:
            return
        # The trailing axes read whole make one contiguous run per index of the leading ones.
        split = len(sl)
        while split > 0 and sl[split - 1] == slice(0, self.shape[split - 1]):
            split -= 1
        if split == 0:
            split = 1
        run_shape = out_shape[split - 1 :]
        strides = [int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape))]
        run_items = int(np.prod(run_shape))
        flat = out.reshape(-1, run_items)
        leading = [range(s.start, s.stop) for s in sl[: split - 1]]
        for row, index in enumerate(np.ndindex(*[len(r) for r in leading])):
            start = sum((leading[i][n]) * strides[i] for i, n in enumerate(index))
            start += sl[split - 1].start * strides[split - 1]
            self._read_into(memoryview(flat[row]).cast("B"), start * self.dtype.itemsize)

    def _read_into(self, view: memoryview, position: int) -> None:
        # One read returns at most ~2 GiB on Linux, and any read may return less than asked.
        done = 0
        while done < view.nbytes:
            got = os.preadv(self._fd, [view[done:]], self.offset + position + done)
            if got <= 0:
                raise OSError(f"{self.path.name} ended before its pixels did")
            done += got
