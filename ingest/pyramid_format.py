"""On-store layout of an OME-Zarr pyramid: codecs, zarr v2/v3 metadata, chunk and shard keys, NGFF attributes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import google_crc32c
import numcodecs
import numcodecs.blosc
import numcodecs.zstd
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.storage import MemoryStore

from allmicro_data.ingest.readers.base import PixelSize

NgffVersion = Literal["0.4", "0.5"]
NGFF_VERSIONS: tuple[NgffVersion, ...] = ("0.4", "0.5")

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
_CODEC_NAMES = ("zstd", "blosc-zstd", "blosc-lz4")
_DEFAULT_LEVELS = {"zstd": 3, "blosc-zstd": 1, "blosc-lz4": 5}

_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_SPACE_UNIT = "micrometer"
_EMPTY_SHARD_SLOT = 2**64 - 1


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
        if name not in _CODEC_NAMES:
            raise ValueError(f"unknown codec {spec!r} (choose from {', '.join(_CODEC_NAMES)})")
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


@dataclass(frozen=True)
class LevelLayout:
    """Shape, chunking and (optionally) sharding of one level, in the series' axis order."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None


def chunk_key(version: NgffVersion, level: str, index: tuple[int, ...]) -> str:
    """The object key (below the image) of a chunk, or of a shard when the level is sharded."""
    joined = "/".join(str(i) for i in index)
    return f"{level}/{joined}" if version == "0.4" else f"{level}/c/{joined}"


def assemble_shard(chunks: list[bytes]) -> list[bytes]:
    """The parts of a sharding_indexed object: inner chunks in C order, then index and crc32c."""
    index = np.empty((len(chunks), 2), dtype="<u8")
    offset = 0
    for i, data in enumerate(chunks):
        index[i] = (offset, len(data)) if data else (_EMPTY_SHARD_SLOT, _EMPTY_SHARD_SLOT)
        offset += len(data)
    index_bytes = index.tobytes()
    crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
    return [*chunks, index_bytes + crc]


def metadata_documents(
    version: NgffVersion,
    levels: list[LevelLayout],
    dtype: np.dtype[Any],
    axes: str,
    codec: ChunkCodec,
    group_attributes: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(array documents, group documents), each key relative to the image root.

    zarr-python writes them into memory, so they are exactly what zarr itself would write; the
    caller stores arrays first and the group last, making the image visible only when complete.
    """
    memory = MemoryStore()
    zarr_format: Literal[2, 3] = 2 if version == "0.4" else 3
    for level in levels:
        if zarr_format == 2:
            zarr.create_array(
                memory,
                name=level.path,
                shape=level.shape,
                chunks=level.chunks,
                dtype=dtype,
                compressors=codec.numcodec(),
                fill_value=0,
                zarr_format=2,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
        else:
            zarr.create_array(
                memory,
                name=level.path,
                shape=level.shape,
                chunks=level.chunks,
                shards=level.shards,
                dtype=dtype,
                compressors=codec.zarr_v3(dtype),
                fill_value=0,
                zarr_format=3,
                dimension_names=list(axes),
            )
    group_store = MemoryStore()
    zarr.create_group(group_store, zarr_format=zarr_format, attributes=group_attributes)
    groups = {key: bytes(buf.to_bytes()) for key, buf in group_store._store_dict.items()}
    # Creating an array also makes an empty root group; the real one is written last.
    arrays = {
        key: bytes(buf.to_bytes())
        for key, buf in memory._store_dict.items()
        if key not in groups and "/" in key
    }
    return arrays, groups


def ngff_attributes(
    version: NgffVersion,
    *,
    name: str,
    axes: str,
    pixel_size: PixelSize,
    shapes: list[tuple[int, ...]],
    method: str,
    windows: list[tuple[float, float]],
    ranges: list[tuple[float, float]],
    rgb: bool,
) -> dict[str, Any]:
    """The group attributes: multiscales (axes, per-level scale) and the omero display block."""
    axes_meta: list[dict[str, Any]] = []
    for a in axes:
        entry: dict[str, Any] = {"name": a, "type": _AXIS_TYPES[a]}
        # A unit is claimed only where the file gave a calibration; otherwise scales are pixels.
        if a in "zyx" and pixel_size.for_axis(a):
            entry["unit"] = _SPACE_UNIT
        axes_meta.append(entry)
    datasets = []
    base = shapes[0]
    for level, shape in enumerate(shapes):
        scale = []
        for i, a in enumerate(axes):
            if a in "zyx":
                size_m = pixel_size.for_axis(a)
                unit_size = size_m * 1e6 if size_m else 1.0
                scale.append(unit_size * _factor(base[i], shape[i]))
            else:
                scale.append(1.0)
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": axes_meta,
        "datasets": datasets,
        "type": method,
    }
    colours = ["FF0000", "00FF00", "0000FF"] if rgb else ["FFFFFF"]
    channels = [
        {
            "active": True,
            "color": colours[i % len(colours)],
            "label": f"channel {i}",
            "window": {"start": lo, "end": hi, "min": rmin, "max": rmax},
            "coefficient": 1,
            "family": "linear",
            "inverted": False,
        }
        for i, ((lo, hi), (rmin, rmax)) in enumerate(zip(windows, ranges, strict=True))
    ]
    omero: dict[str, Any] = {
        "name": name,
        "channels": channels,
        "rdefs": {"model": "color" if rgb else "greyscale"},
    }
    if version == "0.4":
        multiscale["version"] = "0.4"
        omero["version"] = "0.4"
        return {"multiscales": [multiscale], "omero": omero}
    return {"ome": {"version": "0.5", "multiscales": [multiscale], "omero": omero}}


def _factor(full: int, reduced: int) -> float:
    # Levels made here halve with rounding up, so ceil(n / 2**k) == reduced gives exactly 2**k;
    # reused levels from a file may follow another rule, so fall back to the plain ratio.
    if reduced == full:
        return 1.0
    k = round(math.log2(full / reduced))
    if k >= 1 and -(-full // 2**k) == reduced:
        return float(2**k)
    return full / reduced
