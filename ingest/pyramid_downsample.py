"""2x downsampling kernels for pyramid levels: block mean for intensities, nearest or mode for labels."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Method = Literal["mean", "nearest", "mode"]
METHODS: tuple[Method, ...] = ("mean", "nearest", "mode")

Array = np.ndarray[Any, Any]


def accumulator_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype block sums are taken in: exact for small integers, float for the rest.

    Sums of up to eight 8- or 16-bit integers fit a 32-bit integer exactly, which is both exact
    and faster than float; wider integers go through float64, floats keep their own precision.
    """
    if dtype.kind in "ub" and dtype.itemsize <= 2:
        return np.dtype("uint32")
    if dtype.kind == "i" and dtype.itemsize <= 2:
        return np.dtype("int32")
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype("float32")
    return np.dtype("float64")


def _pad_odd(block: Array, factors: tuple[int, ...]) -> Array:
    # Repeating the last row/column makes a 2-block at an odd edge average only the pixels that
    # exist: (a + a) / 2 == a, (a + b + a + b) / 4 == (a + b) / 2.
    pads = [(0, n % 2 if f == 2 else 0) for n, f in zip(block.shape, factors, strict=True)]
    if any(p for _, p in pads):
        return np.pad(block, pads, mode="edge")
    return block


def _pairs(block: Array, axis: int) -> tuple[Array, Array]:
    first: list[slice] = [slice(None)] * block.ndim
    second: list[slice] = [slice(None)] * block.ndim
    first[axis] = slice(0, None, 2)
    second[axis] = slice(1, None, 2)
    return block[tuple(first)], block[tuple(second)]


def downsample(
    block: Array, factors: tuple[int, ...], method: Method = "mean", out: Array | None = None
) -> Array:
    """Reduce block by 2 along every axis whose factor is 2 (factors are 1 or 2).

    Output sides are ceil(n / 2); at odd edges the result is the mean (or mode) of the pixels
    that exist. Integer means are rounded half up and clipped to the dtype. With out (an array,
    or a view into a larger one, of the output's shape and the block's dtype) the result is
    written there, which spares the pyramid writer a temporary and a copy per chunk.
    """
    if method == "nearest":
        return _deliver(block[tuple(slice(0, None, f) for f in factors)], out)
    data = _pad_odd(block, factors)
    if method == "mode":
        return _deliver(_mode(data, factors), out)
    acc_dtype = accumulator_dtype(block.dtype)
    total: Array | None = None
    count = 1
    for axis, factor in enumerate(factors):
        if factor == 1:
            continue
        count *= 2
        if total is None:
            # The first pair sum widens to the accumulator in the same pass.
            total = np.add(*_pairs(data, axis), dtype=acc_dtype)
        else:
            total = np.add(*_pairs(total, axis))
    if total is None:
        return _deliver(block, out)
    return _mean_from_sum(total, count, block.dtype, out)


def _deliver(result: Array, out: Array | None) -> Array:
    if out is None:
        return np.array(result, copy=True, order="C")
    np.copyto(out, result, casting="unsafe")
    return out


def _mean_from_sum(total: Array, count: int, dtype: np.dtype[Any], out: Array | None) -> Array:
    if dtype.kind in "uib":
        if total.dtype.kind in "ui":
            # floor((sum + count/2) / count) is round-half-up of the exact mean; count is a
            # power of two, and an (arithmetic) right shift is floor division by it, also for
            # negative sums.
            total += count // 2
            np.right_shift(total, count.bit_length() - 1, out=total)
        else:
            total *= 1.0 / count
            np.rint(total, out=total)
            info = np.iinfo(dtype)
            np.clip(total, info.min, info.max, out=total)
        if out is None:
            return total.astype(dtype)
        np.copyto(out, total, casting="unsafe")
        return out
    if out is not None and out.dtype == total.dtype:
        return np.multiply(total, 1.0 / count, out=out)
    total *= 1.0 / count
    if out is None:
        return total.astype(dtype, copy=False)
    np.copyto(out, total, casting="unsafe")
    return out


def _mode(data: Array, factors: tuple[int, ...]) -> Array:
    # Gather the 2..8 values of every block as views, then count equal neighbours pairwise; the
    # first value with the highest count wins, so ties resolve to the top-left-front pixel.
    values = [data]
    for axis, factor in enumerate(factors):
        if factor == 2:
            values = [half for v in values for half in _pairs(v, axis)]
    best = values[0].copy()
    best_count = np.zeros(best.shape, dtype=np.uint8)
    for candidate in values:
        count = np.zeros(best.shape, dtype=np.uint8)
        for other in values:
            count += candidate == other
        better = count > best_count
        best[better] = candidate[better]
        best_count[better] = count[better]
    return best
