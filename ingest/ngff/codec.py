"""Chunk codecs of our pyramids: the spec operators set, how chunks are encoded, and how stored ones decode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numcodecs
import numcodecs.blosc
import numcodecs.zstd
import numpy as np
from numcodecs.abc import Codec

# Measured on the benchmark inputs (python bench/convert.py --codecs): Blosc-zstd level 1 with
# bit-shuffle stores 20 % less than plain zstd level 3 on the SEM image (ratio 1.54 vs 1.23),
# because shuffled 16-bit noise exposes the nearly constant high bits, and compresses faster.
DEFAULT_CODEC = "blosc-zstd:1"
# Blosc splits a chunk into blocks compressed one by one. Its automatic size for zstd level 1
# is small (tens of KiB), and zstd pays a fixed set-up cost per block: with 512 KiB blocks the
# SEM chunks compress 1.6x faster (490 -> 800 MB/s of CPU) and 4 % smaller (1.48 -> 1.54), the
# tomogram's float32 chunks 2.4x faster (600 -> 1430 MB/s) and 3 % smaller (1.065 -> 1.094).
# Readers need nothing: the block size is in every chunk's header (and in the zarr metadata).
BLOSC_BLOCK_BYTES = 512 << 10
CODEC_NAMES = ("zstd", "blosc-zstd", "blosc-lz4")
_DEFAULT_LEVELS = {"zstd": 3, "blosc-zstd": 1, "blosc-lz4": 5}


@dataclass(frozen=True)
class ChunkCodec:
    """One compressor, usable from several threads at once (numcodecs releases the GIL)."""

    name: str
    level: int

    @classmethod
    def parse(cls, spec: str | None) -> ChunkCodec:
        """From "zstd", "zstd:5", "blosc-zstd", "blosc-lz4:5"; None is the default codec."""
        spec = spec or DEFAULT_CODEC
        name, _, level_text = spec.strip().lower().partition(":")
        if name not in CODEC_NAMES:
            raise ValueError(f"unknown codec {spec!r} (choose from {', '.join(CODEC_NAMES)})")
        try:
            level = int(level_text) if level_text else _DEFAULT_LEVELS[name]
        except ValueError:
            raise ValueError(f"codec level in {spec!r} is not a number") from None
        if not 0 <= level <= 22 or (name.startswith("blosc") and level > 9):
            raise ValueError(f"codec level {level} out of range for {name}")
        return cls(name, level)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.level}"

    def numcodec(self) -> Any:
        """The codec as numcodecs has it: the compressor of a zarr v2 array."""
        if self.name == "zstd":
            return numcodecs.Zstd(level=self.level)
        cname = self.name.split("-", 1)[1]
        return numcodecs.Blosc(
            cname=cname,
            clevel=self.level,
            shuffle=numcodecs.Blosc.BITSHUFFLE,
            blocksize=BLOSC_BLOCK_BYTES,
        )

    def zarr_v3(self, dtype: np.dtype[Any]) -> Any:
        """The codec as zarr v3 has it: the compressor of a zarr v3 array (or of its shards' chunks)."""
        from zarr.codecs import BloscCodec, ZstdCodec

        if self.name == "zstd":
            return ZstdCodec(level=self.level)
        cname: Any = self.name.split("-", 1)[1]
        return BloscCodec(
            cname=cname,
            clevel=self.level,
            shuffle="bitshuffle",
            typesize=dtype.itemsize,
            blocksize=BLOSC_BLOCK_BYTES,
        )


class ChunkEncoder:
    """Encodes C-ordered chunk arrays to the bytes zarr stores for them."""

    def __init__(self, codec: ChunkCodec) -> None:
        self.codec = codec
        # The compress functions behind codec.numcodec().encode, called directly: same bytes,
        # without the codec object's per-call buffer checks, which hold the GIL.
        self._cname = codec.name.split("-", 1)[1].encode("ascii") if "-" in codec.name else b""
        if codec.name.startswith("blosc"):
            # Blosc's own thread pool only serves callers on the main thread and would fight our
            # workers for the two cores; the contextual API is thread-safe and releases the GIL.
            numcodecs.blosc.use_threads = False

    def encode(self, chunk: np.ndarray[Any, Any]) -> bytes:
        data = np.ascontiguousarray(chunk)
        if self.codec.name == "zstd":
            return bytes(numcodecs.zstd.compress(data, self.codec.level))
        return bytes(
            numcodecs.blosc.compress(
                data, self._cname, self.codec.level, numcodecs.Blosc.BITSHUFFLE, BLOSC_BLOCK_BYTES
            )
        )


def chunk_decoder(compressor: Any) -> Any:
    """A numcodecs codec that decodes what compressor (numcodecs, or zarr v3's) encoded.

    None when it is none we know: the caller then reads through zarr-python. Blosc and zstd
    frames describe themselves, so the decoder needs none of the compressor's settings.
    """
    if isinstance(compressor, Codec):
        return compressor
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if isinstance(compressor, BloscCodec):
        return numcodecs.Blosc()
    if isinstance(compressor, ZstdCodec):
        return numcodecs.Zstd()
    if isinstance(compressor, GzipCodec):
        return numcodecs.GZip()
    return None
