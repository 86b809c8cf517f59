"""Where a pyramid's chunks live: NGFF versions, level shapes and chunking, chunk and shard keys, shard indexes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import google_crc32c
import numpy as np

NgffVersion = Literal["0.4", "0.5"]
NGFF_VERSIONS: tuple[NgffVersion, ...] = ("0.4", "0.5")

# sharding_indexed: an inner chunk that was never written has offset and length 2**64 - 1.
EMPTY_SHARD_SLOT = 2**64 - 1
_CRC_BYTES = 4


@dataclass(frozen=True)
class LevelLayout:
    """Shape, chunking and (optionally) sharding of one level, in the series' axis order."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None


def chunk_key(version: NgffVersion, level: str, index: tuple[int, ...]) -> str:
    """The object key (below the image) of a chunk we write, or of a shard when the level is sharded.

    NGFF 0.4 levels use zarr v2's "/" separator; 0.5 levels zarr v3's default encoding.
    """
    joined = "/".join(str(i) for i in index)
    return f"{level}/{joined}" if version == "0.4" else f"{level}/c/{joined}"


def assemble_shard(chunks: list[bytes]) -> list[bytes]:
    """The parts of a sharding_indexed object: inner chunks in C order, then index and crc32c."""
    index = np.empty((len(chunks), 2), dtype="<u8")
    offset = 0
    for i, data in enumerate(chunks):
        index[i] = (offset, len(data)) if data else (EMPTY_SHARD_SLOT, EMPTY_SHARD_SLOT)
        offset += len(data)
    index_bytes = index.tobytes()
    crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
    return [*chunks, index_bytes + crc]


def shard_index_bytes(n_chunks: int) -> int:
    """Length of the index (with its crc32c) at the end of a shard of n_chunks inner chunks."""
    return n_chunks * 16 + _CRC_BYTES


def parse_shard_index(data: bytes, n_chunks: int) -> np.ndarray[Any, Any]:
    """(offset, length) of each inner chunk, C order, from a shard's trailing index.

    Raises ValueError when the checksum does not match: a torn or foreign object.
    """
    if len(data) != shard_index_bytes(n_chunks):
        raise ValueError(
            f"shard index of {len(data)} bytes, expected {shard_index_bytes(n_chunks)}"
        )
    body, crc = data[:-_CRC_BYTES], data[-_CRC_BYTES:]
    if google_crc32c.value(body) != int.from_bytes(crc, "little"):
        raise ValueError("shard index checksum mismatch")
    return np.frombuffer(body, dtype="<u8").reshape(n_chunks, 2)
