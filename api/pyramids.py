"""Reading pyramids for the viewers: only the chunks a request touches, decoded once and cached.

The metadata is parsed once per pyramid by the format package (allmicro_data.ingest.ngff); the
chunks of the layouts we write (NGFF 0.4 and 0.5, sharded or not) are then fetched straight from
the store and decoded with numcodecs, which is several times faster per tile than going through
zarr-python; any other layout (filters, big-endian, other codecs) is read through zarr-python.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import zarr

from allmicro_data.api.rendering import ChannelDefaults, Window
from allmicro_data.ingest.ngff import (
    StoredArray,
    parse_shard_index,
    read_pyramid_metadata,
    shard_index_bytes,
)
from allmicro_data.ingest.ngff.layout import EMPTY_SHARD_SLOT
from allmicro_data.storage import ObjectNotFound, ObjectStore, read_suffix
from allmicro_data.storage.zarr_adapter import ZarrObjectStore


class ChunkCache:
    """Decoded chunks, least recently used first out, bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray[Any, Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # One lock per item being loaded: the tiles that need it at once wait for one load.
        self._loading: dict[str, threading.Lock] = {}

    def get(self, key: str) -> np.ndarray[Any, Any] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def __contains__(self, key: str) -> bool:
        """Whether key is cached (without making it the most recently used)."""
        with self._lock:
            return key in self._items

    def get_or_load(
        self, key: str, load: Callable[[], np.ndarray[Any, Any]]
    ) -> np.ndarray[Any, Any]:
        """The item under key, loaded (and kept) once however many threads ask for it together.

        A viewer's first tiles arrive together and often need the same chunk or the same
        shard's index: from S3, each of them reading it again made the cold tiles' tail."""
        found = self.get(key)
        if found is not None:
            return found
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        try:
            with loading:
                found = self.get(key)
                if found is None:
                    found = load()
                    self.put(key, found)
                return found
        finally:
            with self._lock:
                if self._loading.get(key) is loading and not loading.locked():
                    del self._loading[key]

    def put(self, key: str, value: np.ndarray[Any, Any]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes


@dataclass
class Level:
    """One resolution level: its stored layout, and where its objects are."""

    stored: StoredArray
    root: str  # object key of the pyramid, which the level's keys are relative to
    array: Any = None  # zarr-python array, for layouts we do not decode ourselves
    tag: str = ""  # distinguishes a re-ingested pyramid's chunks from the old ones in caches

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.stored.chunks

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.stored.dtype

    @property
    def fast(self) -> bool:
        return self.array is None


@dataclass
class OpenPyramid:
    key: str
    axes: str
    levels: list[Level]
    defaults: ChannelDefaults
    scales: list[list[float]]  # coordinateTransformations scale per level, in axes order

    def shape(self, level: int) -> tuple[int, ...]:
        return self.levels[level].shape

    def size(self, axis: str, level: int = 0) -> int:
        return self.levels[level].shape[self.axes.index(axis)] if axis in self.axes else 1

    def read(
        self,
        store: ObjectStore,
        cache: ChunkCache,
        level: int,
        plane: dict[str, int],
        y: tuple[int, int],
        x: tuple[int, int],
    ) -> np.ndarray[Any, Any]:
        """Pixels of rows y and columns x of one (t, z) plane at a level: (c, h, w) or (h, w)."""
        lvl = self.levels[level]
        region = self._region(level, plane, y, x)
        if not lvl.fast:
            return np.asarray(lvl.array[tuple(region)])
        return _read_chunks(store, cache, lvl, region)

    def cached(
        self,
        cache: ChunkCache,
        level: int,
        plane: dict[str, int],
        y: tuple[int, int],
        x: tuple[int, int],
    ) -> bool:
        """Whether every chunk read() needs for this region is decoded in cache already, so
        that reading it touches neither the store nor a codec."""
        lvl = self.levels[level]
        if not lvl.fast:
            return False
        grid = _chunk_grid(lvl, self._region(level, plane, y, x))
        return all(
            _chunk_tag(lvl, *_chunk_address(lvl, index)) in cache for index in product(*grid)
        )

    def _region(
        self, level: int, plane: dict[str, int], y: tuple[int, int], x: tuple[int, int]
    ) -> list[slice | int]:
        region: list[slice | int] = []
        for axis in self.axes:
            if axis in ("t", "z"):
                region.append(plane.get(axis, 0))
            elif axis == "c":
                region.append(slice(0, self.levels[level].shape[self.axes.index("c")]))
            elif axis == "y":
                region.append(slice(*y))
            else:
                region.append(slice(*x))
        return region


def _read_chunks(
    store: ObjectStore, cache: ChunkCache, lvl: Level, region: Sequence[slice | int]
) -> np.ndarray[Any, Any]:
    bounds = _bounds(region)
    out = np.empty([hi - lo for lo, hi in bounds], dtype=lvl.dtype)
    for index in product(*_chunk_grid(lvl, region)):
        chunk = _chunk(store, cache, lvl, index)
        src: list[slice] = []
        dst: list[slice] = []
        for i, ((lo, hi), c) in enumerate(zip(bounds, lvl.chunks, strict=True)):
            start = index[i] * c
            a, b = max(lo, start), min(hi, start + c)
            src.append(slice(a - start, b - start))
            dst.append(slice(a - lo, b - lo))
        out[tuple(dst)] = chunk[tuple(src)]
    squeeze = tuple(i for i, r in enumerate(region) if isinstance(r, int))
    return out.squeeze(axis=squeeze) if squeeze else out


def _bounds(region: Sequence[slice | int]) -> list[tuple[int, int]]:
    return [(r, r + 1) if isinstance(r, int) else (r.start, r.stop) for r in region]


def _chunk_grid(lvl: Level, region: Sequence[slice | int]) -> list[range]:
    """The chunk indices a region covers, per axis."""
    return [
        range(lo // c, (hi - 1) // c + 1)
        for (lo, hi), c in zip(_bounds(region), lvl.chunks, strict=True)
    ]


def _chunk_address(lvl: Level, index: tuple[int, ...]) -> tuple[str, int]:
    """The object holding a chunk, and its slot in that shard (-1: the object is the chunk)."""
    stored = lvl.stored
    slot = stored.shard_slot(index) if stored.shards is not None else -1
    return f"{lvl.root}/{stored.object_key(index)}", slot


def _chunk_tag(lvl: Level, key: str, slot: int) -> str:
    """A chunk's key in the cache: the level's version tag, its object and its shard slot."""
    return f"{lvl.tag}:{key}#{slot}"


def _chunk(
    store: ObjectStore, cache: ChunkCache, lvl: Level, index: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    stored = lvl.stored
    key, slot = _chunk_address(lvl, index)

    def load() -> np.ndarray[Any, Any]:
        raw = _stored_chunk(store, cache, lvl, key, slot)
        if raw is None:
            return np.full(stored.chunks, stored.fill_value or 0, dtype=stored.dtype)
        decoded = stored.decoder.decode(raw) if stored.decoder is not None else raw
        return np.frombuffer(decoded, dtype=stored.dtype).reshape(stored.chunks)

    return cache.get_or_load(_chunk_tag(lvl, key, slot), load)


def _stored_chunk(
    store: ObjectStore, cache: ChunkCache, lvl: Level, key: str, slot: int
) -> bytes | None:
    """The encoded bytes of one chunk: the whole object, or its slot's range of a shard."""
    try:
        if slot < 0:
            return store.get_bytes(key)
        # A shard's index is read once (one request for its last bytes where the store can) and
        # kept with the decoded chunks; then each chunk is one range request, as zarr reads it.
        n_chunks = math.prod(lvl.stored.chunks_per_shard)
        index = cache.get_or_load(
            f"{lvl.tag}:{key}#index",
            lambda: parse_shard_index(
                read_suffix(store, key, shard_index_bytes(n_chunks)), n_chunks
            ),
        )
        offset, length = (int(v) for v in index[slot])
        if offset == EMPTY_SHARD_SLOT:
            return None
        return store.get_bytes(key, offset, offset + length)
    except ObjectNotFound:
        return None


def open_pyramid(store: ObjectStore, key: str, tag: str = "") -> OpenPyramid:
    """The pyramid at key, its metadata parsed once (the tile path then only reads chunks)."""
    meta = read_pyramid_metadata(store, key)
    levels: list[Level] = []
    group: Any = None
    for stored in meta.levels:
        array = None
        if not stored.direct:
            if group is None:
                group = zarr.open_group(
                    ZarrObjectStore(store, key, read_only=True),
                    mode="r",
                    zarr_format=meta.zarr_format,
                    use_consolidated=False,
                )
            array = group[stored.path]
        levels.append(Level(stored=stored, root=key, array=array, tag=tag))
    channels = meta.channels
    defaults = ChannelDefaults(
        windows=[Window(*c.window) for c in channels],
        colours=[c.colour for c in channels],
        labels=[c.label for c in channels],
        ranges=[Window(*c.range) for c in channels],
        rgb=meta.colour_model == "color" and levels[0].dtype == np.uint8,
    )
    return OpenPyramid(
        key=key, axes=meta.axes, levels=levels, defaults=defaults, scales=meta.scales
    )


def level_for_factor(pyramid: OpenPyramid, factor: float) -> int:
    """The coarsest level whose pixels are no larger than `factor` full-resolution pixels."""
    full = pyramid.size("x", 0)
    best = 0
    for level in range(len(pyramid.levels)):
        if full / pyramid.size("x", level) <= factor * (1 + 1e-9):
            best = level
    return best


def level_box(
    pyramid: OpenPyramid, level: int, x: int, y: int, w: int, h: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """A full-resolution box in the coordinates of a level (outward-rounded, clipped)."""
    fx = pyramid.size("x", 0) / pyramid.size("x", level)
    fy = pyramid.size("y", 0) / pyramid.size("y", level)
    x0, x1 = math.floor(x / fx), min(pyramid.size("x", level), math.ceil((x + w) / fx))
    y0, y1 = math.floor(y / fy), min(pyramid.size("y", level), math.ceil((y + h) / fy))
    return (y0, max(y0 + 1, y1)), (x0, max(x0 + 1, x1))


class PyramidCache:
    """Opened pyramids by key, least recently used out; pyramids never change once ready."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[str, OpenPyramid] = OrderedDict()
        self._lock = threading.Lock()
        # One lock per pyramid being opened: the first tiles of a viewer arrive together, and
        # all but one of them wait for its opening instead of each reading the metadata again
        # (from S3, sixteen concurrent openings made the first tiles of a cold server the
        # slowest by a second).
        self._opening: dict[str, threading.Lock] = {}

    def peek(self, key: str, tag: str = "") -> OpenPyramid | None:
        """The pyramid if it is already open (no I/O: safe on the event loop)."""
        with self._lock:
            return self._items.get(f"{tag}:{key}")

    def get(
        self,
        store: ObjectStore,
        key: str,
        tag: str = "",
        prepare: Callable[[OpenPyramid], None] | None = None,
    ) -> OpenPyramid:
        """The pyramid at key; tag (the image's version) tells a rewritten pyramid apart.
        `prepare` adjusts a newly opened pyramid before anyone else can see it."""
        cache_key = f"{tag}:{key}"
        with self._lock:
            found = self._items.get(cache_key)
            if found is not None:
                self._items.move_to_end(cache_key)
                return found
            opening = self._opening.setdefault(cache_key, threading.Lock())
        with opening:
            with self._lock:
                found = self._items.get(cache_key)
            if found is not None:
                return found
            try:
                opened = open_pyramid(store, key, tag)
                if prepare is not None:
                    prepare(opened)
                with self._lock:
                    self._items[cache_key] = opened
                    while len(self._items) > self._size:
                        self._items.popitem(last=False)
            finally:
                # A failed opening is not remembered: the next request tries again.
                with self._lock:
                    self._opening.pop(cache_key, None)
        return opened
