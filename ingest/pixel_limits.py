"""Decompression bombs: an original may not declare far more pixels than its bytes can hold.

A header costs nothing to write: a 1 MB TIFF of compressed zeros can declare 10^5 x 10^5 pixels,
and converting it would keep a worker busy and fill the store with a pyramid of nothing. Real
microscopy data compresses a few times at most (the sample corpus: at most 1.2 times), so the
pixels a file declares, at their size uncompressed, must fit in a generous multiple of the
bytes actually stored; a fixed allowance lets small files declare small images whatever their
compression, and an absolute cap bounds everything. The check reads only what the readers
already parsed (shapes and types), so a bomb fails in milliseconds, before any pixel is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from allmicro_data.ingest.readers.base import ReadError, Series

# Any original may declare this many bytes of pixels, however small it is: converting them
# costs seconds, and thumbnails or blank frames of a few bytes each stay ingestible.
ALWAYS_ALLOWED_BYTES = 256 * 1024**2


class PixelBomb(ReadError):
    """The file declares more pixels than its size or the server's cap allows."""


def check_declared_pixels(
    name: str,
    series: Sequence[Series],
    original_bytes: int,
    *,
    max_pixels: int,
    max_ratio: float,
) -> None:
    """Raise PixelBomb when the series that become images declare too many pixels.

    original_bytes is the size of every file read together (the original and its companions).
    """
    shown = [s for s in series if s.viewable and not s.preview]
    declared_bytes = 0
    for index, s in enumerate(shown):
        samples = math.prod(s.shape)
        if samples > max_pixels:
            raise PixelBomb(
                f"{name}: series {index} declares {_shape(s)} = {samples:,} pixels, more than "
                f"the server accepts in one image ({max_pixels:,}, ALLMICRO_MAX_IMAGE_PIXELS)"
            )
        declared_bytes += samples * s.dtype.itemsize
    allowed = max(ALWAYS_ALLOWED_BYTES, int(original_bytes * max_ratio))
    if declared_bytes > allowed:
        ratio = declared_bytes / max(original_bytes, 1)
        raise PixelBomb(
            f"{name}: declares {', '.join(_shape(s) for s in shown)} pixels, "
            f"{declared_bytes:,} bytes uncompressed from a file of {original_bytes:,} bytes "
            f"({ratio:,.0f} times its size; at most {max_ratio:g} is accepted): the header "
            "claims far more pixels than the file holds, so it is not converted"
        )


def _shape(series: Series) -> str:
    return f"{' x '.join(str(n) for n in series.shape)} ({series.axes})"
