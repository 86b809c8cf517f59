"""Streaming OME-Zarr pyramid writer: reads a series once in bands and writes every chunk of every level once."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allmicro_data.ingest.ngff import (
    GROUP_DOCUMENTS,
    NGFF_VERSIONS,
    ChunkCodec,
    ChunkEncoder,
    LevelLayout,
    NgffVersion,
    assemble_shard,
    chunk_key,
    metadata_documents,
    ngff_attributes,
)
from allmicro_data.ingest.ngff.metadata import preload_in_background
from allmicro_data.ingest.pyramid_downsample import METHODS, Method, downsample
from allmicro_data.ingest.readers.base import Series
from allmicro_data.storage.base import ObjectStore, StoredObject, SupportsDeferredSync

ProgressCallback = Callable[[float], None]
Array = np.ndarray[Any, Any]

MIN_LEVEL_SIDE = 512
CHUNK_2D = 512
# 3D chunks: on the benchmark tomogram 128³ and 64x256x256 compress to the same size (zstd:3
# ratio 1.079, blosc-zstd:1 1.065) at speeds within the machine's noise; 128³ is what the other
# OME-Zarr writers and viewers use, and a cube keeps z-slicing and x/y-slicing equally cheap.
CHUNK_3D = 128
# Pixels sampled per channel for the display window: enough for stable 0.1 % / 99.9 % points.
WINDOW_SAMPLES = 1 << 20
WINDOW_PERCENTILES = (0.1, 99.9)
# Level-0 blocks alive at once (read, queued or being compressed): two, so that reading the next
# overlaps compressing the last, and never more, so memory is bounded by the image width.
MIN_IN_FLIGHT_BYTES = 32 << 20
# glibc's malloc returns freed memory to the system once more than its trim threshold lies free
# at the top of a heap, a threshold that follows the largest block freed (twice it, at most
# 64 MiB). A sharded level frees a whole row of encoded chunks at once, right after its shard is
# written, and the next row then faults as many fresh pages in again: 0.35 s of kernel time on
# the 2 GiB tomogram, in NGFF 0.5. The writer keeps up to this much freed memory for reuse, and
# fixes the size above which a block is mapped on its own where the dynamic threshold ends.
KEEP_FREED_BYTES = 128 << 20
MMAP_THRESHOLD_BYTES = 32 << 20


@dataclass
class PyramidInfo:
    """What was written: enough for the catalogue, the tile server and the fixity manifest."""

    key: str
    ngff_version: str
    axes: str
    level_shapes: list[tuple[int, ...]]
    dtype: str
    windows: list[tuple[float, float]] = field(default_factory=list)
    chunk_shapes: list[tuple[int, ...]] = field(default_factory=list)
    codec: str = ""
    sharded: bool = False
    method: str = "mean"
    # Levels copied from sub-resolutions the file already carried, not recomputed.
    reused_levels: int = 0
    # Every object written under key, sorted by key: the pyramid's checksum manifest.
    objects: list[StoredObject] = field(default_factory=list)


def level_shapes(
    shape: tuple[int, ...], axes: str, *, volume: bool = False
) -> list[tuple[int, ...]]:
    """Shapes of every level: y and x (and z for volumes) halve, rounding up, until the largest
    downsampled side is <= 512."""
    reduced = [axes.index(a) for a in ("zyx" if volume and "z" in axes else "yx")]
    shapes = [tuple(shape)]
    while max(shapes[-1][i] for i in reduced) > MIN_LEVEL_SIDE:
        nxt = list(shapes[-1])
        for i in reduced:
            nxt[i] = -(-nxt[i] // 2)
        shapes.append(tuple(nxt))
    return shapes


def write_pyramid(
    series: Series,
    store: ObjectStore,
    key: str,
    *,
    ome_xml: str | None = None,
    progress: ProgressCallback | None = None,
    ngff: str = "0.4",
    chunk: int | None = None,
    codec: str | None = None,
    workers: int | None = None,
    shard: bool | None = None,
    method: str = "mean",
) -> PyramidInfo:
    """Write the series as an OME-Zarr multiscale image at key in store.

    NGFF 0.4 (zarr v2) by default; 0.5 (zarr v3) is sharded, one shard per chunk-row band of a
    level, unless shard=False. chunk is the chunk side (512 for 2D, 128 for volumes); codec is a
    ChunkCodec spec such as "zstd:3" or "blosc-zstd:1". Volumes (series.is_volume) downsample
    z, y and x; everything else only y and x. method is "mean", or "nearest"/"mode" for labels.

    The image becomes visible last: chunks and array metadata first, then the root group
    metadata that names the multiscale image. Objects under key left from an earlier attempt
    that this run did not write are deleted before that, so a rerun ends in the same state.
    """
    if ngff not in NGFF_VERSIONS:
        raise ValueError(f"NGFF version {ngff!r} is not writable (choose 0.4 or 0.5)")
    if method not in METHODS:
        raise ValueError(f"unknown downsampling method {method!r} (choose {', '.join(METHODS)})")
    if "y" not in series.axes or "x" not in series.axes:
        raise ValueError(f"series axes {series.axes!r} have no y/x plane to make a pyramid of")
    if shard and ngff == "0.4":
        raise ValueError("sharding needs NGFF 0.5 (zarr v3)")
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    version: NgffVersion = "0.4" if ngff == "0.4" else "0.5"
    writer = _PyramidWriter(
        series,
        store,
        key.strip("/"),
        version=version,
        chunk=chunk,
        codec=ChunkCodec.parse(codec),
        workers=workers or os.cpu_count() or 1,
        sharded=version == "0.5" and shard is not False,
        method=method,  # type: ignore[arg-type]
        progress=progress,
    )
    return writer.run(ome_xml)


@dataclass
class _Level:
    """One pyramid level in the engine's internal layout (channels, A, B, X).

    Volumes map z, y, x to A, B, X; 2D planes map y to A, a dummy axis of size 1 to B and x to X,
    so a single streaming loop over A bands serves both.
    """

    index: int
    shape: tuple[int, int, int, int]
    chunks: tuple[int, int, int]
    layout: LevelLayout

    @property
    def n_slabs(self) -> int:
        return -(-self.shape[1] // self.chunks[0])

    def slab_rows(self, k: int) -> tuple[int, int]:
        start = k * self.chunks[0]
        return start, min(self.shape[1], start + self.chunks[0])


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep up to KEEP_FREED_BYTES of freed memory in this process for the
    next allocations (see KEEP_FREED_BYTES); False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    # mallopt's parameters (malloc.h); setting either ends the dynamic thresholds.
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(
        libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES)
        and libc.mallopt(m_trim_threshold, KEEP_FREED_BYTES)
    )


class _ShardCollector:
    """Gathers one block's encoded chunks; the thread that adds the last one writes the shards."""

    def __init__(self, n_channels: int, n_chunks: int, keys: list[str], put: Callable[..., Any]):
        self._slots: list[list[bytes]] = [[b""] * n_chunks for _ in range(n_channels)]
        self._remaining = n_channels * n_chunks
        self._lock = threading.Lock()
        self._keys = keys
        self._put = put

    def add(self, channel: int, index: int, data: bytes) -> None:
        self._slots[channel][index] = data
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            for shard_key, chunks in zip(self._keys, self._slots, strict=True):
                self._put(shard_key, assemble_shard(chunks))
            self._slots = []


class _PyramidWriter:
    def __init__(
        self,
        series: Series,
        store: ObjectStore,
        key: str,
        *,
        version: NgffVersion,
        chunk: int | None,
        codec: ChunkCodec,
        workers: int,
        sharded: bool,
        method: Method,
        progress: ProgressCallback | None,
    ) -> None:
        self.series = series
        self.store = store
        # Per-chunk fsync costs more than compressing the chunk: a store that can defer it gets
        # the chunks through its unsynced view (still atomic per object) and one sync at the end.
        self.chunk_store: ObjectStore = store
        if isinstance(store, SupportsDeferredSync):
            self.chunk_store = store.unsynced()
        self.key = key
        self.version = version
        self.codec = codec
        self.encoder = ChunkEncoder(codec)
        self.workers = workers
        self.sharded = sharded
        self.method = method
        self.progress = progress
        self.axes = series.axes
        self.volume = bool(getattr(series, "is_volume", False)) and "z" in self.axes
        if chunk is None:
            chunk = CHUNK_3D if self.volume else CHUNK_2D
        if chunk < 2 or chunk % 2:
            raise ValueError(f"chunk side must be an even number of pixels >= 2, not {chunk}")
        self.chunk = chunk
        self.factors = (1, 2, 2 if self.volume else 1, 2)
        self.sources = self._sources()
        self.levels = self._plan_levels()
        self.objects: list[StoredObject] = []
        self._objects_lock = threading.Lock()
        self._done_chunks = 0
        self._total_chunks = self._count_chunks()
        n_channels = self.levels[0].shape[0]
        self.samples: list[list[Array]] = [[] for _ in range(n_channels)]
        self.sample_step = self._sample_step()
        self.pool: ThreadPoolExecutor | None = None
        self._last_report = 0.0

    # ---- planning -------------------------------------------------------------------------

    def _sources(self) -> list[Series]:
        """The series and the sub-resolutions it carries that can be copied as levels."""
        sources = [self.series]
        try:
            extra = self.series.levels()
        except Exception:
            extra = []
        spatial = [i for i, a in enumerate(self.axes) if a in "zyx"]
        for level in extra:
            prev = sources[-1]
            usable = (
                level.axes == self.axes
                and level.dtype == self.series.dtype
                and all(
                    n == m
                    for i, (n, m) in enumerate(zip(level.shape, prev.shape, strict=True))
                    if i not in spatial
                )
                and all(0 < level.shape[i] <= prev.shape[i] for i in spatial)
                and any(level.shape[i] < prev.shape[i] for i in spatial)
            )
            if not usable:
                break
            sources.append(level)
        return sources

    def _internal_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        size = dict(zip(self.axes, shape, strict=True))
        channels = size.get("c", 1)
        if self.volume:
            return (channels, size["z"], size["y"], size["x"])
        return (channels, size["y"], 1, size["x"])

    def _series_shape(self, internal: tuple[int, ...]) -> tuple[int, ...]:
        _, a, b, x = internal
        full = dict(zip(self.axes, self.series.shape, strict=True))
        if self.volume:
            full.update(z=a, y=b, x=x)
        else:
            full.update(y=a, x=x)
        return tuple(full[ax] for ax in self.axes)

    def _series_index(
        self, outer: dict[str, int], channel: int, ka: int, kb: int, kx: int
    ) -> tuple[int, ...]:
        index = dict(outer, c=channel, x=kx)
        if self.volume:
            index.update(z=ka, y=kb)
        else:
            index.update(y=ka)
        return tuple(index[a] for a in self.axes)

    def _plan_levels(self) -> list[_Level]:
        shapes = [self._internal_shape(s.shape) for s in self.sources]
        reduced = (1, 2, 3) if self.volume else (1, 3)
        while max(shapes[-1][i] for i in reduced) > MIN_LEVEL_SIDE:
            c, a, b, x = shapes[-1]
            shapes.append((c, -(-a // 2), -(-b // self.factors[2]), -(-x // 2)))
        levels = []
        for index, shape in enumerate(shapes):
            chunk_b = self.chunk if self.volume else 1
            chunks = (min(self.chunk, shape[1]), min(chunk_b, shape[2]), min(self.chunk, shape[3]))
            series_chunks = self._series_chunks(chunks)
            shards = None
            if self.sharded:
                n_x = -(-shape[3] // chunks[2])
                shards = (*series_chunks[:-1], n_x * chunks[2])
            layout = LevelLayout(str(index), self._series_shape(shape), series_chunks, shards)
            levels.append(_Level(index, shape, chunks, layout))
        return levels

    def _series_chunks(self, chunks: tuple[int, int, int]) -> tuple[int, ...]:
        a, b, x = chunks
        sizes = dict.fromkeys(self.axes, 1)
        sizes["x"] = x
        if self.volume:
            sizes.update(z=a, y=b)
        else:
            sizes["y"] = a
        return tuple(sizes[ax] for ax in self.axes)

    def _outer_planes(self) -> list[dict[str, int]]:
        """Index sets over the axes that are neither channels nor downsampled (t, and z of stacks)."""
        outer_axes = [a for a in self.axes if a == "t" or (a == "z" and not self.volume)]
        size = dict(zip(self.axes, self.series.shape, strict=True))
        planes: list[dict[str, int]] = [{}]
        for a in outer_axes:
            planes = [dict(p, **{a: i}) for p in planes for i in range(size[a])]
        return planes

    def _count_chunks(self) -> int:
        per_plane = 0
        for level in self.levels:
            c, a, b, x = level.shape
            ca, cb, cx = level.chunks
            per_plane += c * -(-a // ca) * -(-b // cb) * -(-x // cx)
        return per_plane * len(self._outer_planes())

    def _sample_step(self) -> int:
        _c, a, b, x = self.levels[0].shape
        per_channel = a * b * x * len(self._outer_planes())
        return max(1, math.isqrt(per_channel // WINDOW_SAMPLES))

    # ---- running ----------------------------------------------------------------------------

    def run(self, ome_xml: str | None) -> PyramidInfo:
        keep_freed_memory()
        if "zarr" not in sys.modules:
            # The documents written last need zarr-python: loaded while the chunks are made.
            preload_in_background()
        for name in GROUP_DOCUMENTS:
            # An earlier image at this key stops being visible before any of it is replaced.
            self.store.delete(self._full(name))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="pyramid") as pool:
            self.pool = pool
            try:
                for outer in self._outer_planes():
                    self._run_plane(outer)
            except BaseException:
                # Queued chunks of a failed run are never needed: do not wait for them.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            finally:
                self.pool = None
        windows, ranges = self._windows()
        arrays, groups = metadata_documents(
            self.version,
            [level.layout for level in self.levels],
            self.series.dtype,
            self.axes,
            self.codec,
            ngff_attributes(
                self.version,
                name=self.series.name,
                axes=self.axes,
                pixel_size=self.series.pixel_size,
                shapes=[level.layout.shape for level in self.levels],
                method=self.method,
                windows=windows,
                ranges=ranges,
                rgb=self.series.rgb,
                channels=self.series.acquisition.channels,
            ),
        )
        for rel, data in sorted(arrays.items()):
            self._put(rel, data)
        if ome_xml is not None:
            self._put("OME/METADATA.ome.xml", ome_xml.encode("utf-8"))
        self._make_durable()
        self._delete_stale(set(groups))
        for rel, data in sorted(groups.items()):
            self.objects.append(self.store.put_bytes(self._full(rel), data))
        if self.progress is not None:
            self.progress(1.0)
        return PyramidInfo(
            key=self.key,
            ngff_version=self.version,
            axes=self.axes,
            level_shapes=[level.layout.shape for level in self.levels],
            dtype=str(self.series.dtype),
            windows=windows,
            chunk_shapes=[level.layout.chunks for level in self.levels],
            codec=self.codec.label,
            sharded=self.sharded,
            method=self.method,
            reused_levels=len(self.sources) - 1,
            objects=sorted(self.objects, key=lambda o: o.key),
        )

    def _full(self, rel: str) -> str:
        return f"{self.key}/{rel}" if self.key else rel

    def _put(self, rel: str, data: bytes) -> None:
        stored = self.chunk_store.put_bytes(self._full(rel), data)
        with self._objects_lock:
            self.objects.append(stored)

    def _make_durable(self) -> None:
        if isinstance(self.store, SupportsDeferredSync):
            self.store.sync(obj.key for obj in self.objects)

    def _delete_stale(self, keep: set[str]) -> None:
        written = {obj.key for obj in self.objects} | {self._full(k) for k in keep}
        prefix = f"{self.key}/" if self.key else ""
        for existing in list(self.store.list(prefix)):
            if existing not in written:
                self.store.delete(existing)

    # ---- streaming one plane ----------------------------------------------------------------

    def _run_plane(self, outer: dict[str, int]) -> None:
        # Levels that the file carries are copied one by one; the last of them also feeds the
        # levels computed here.
        for source_index, source in enumerate(self.sources):
            last = source_index == len(self.sources) - 1
            stop = len(self.levels) if last else source_index + 1
            _PlaneStream(self, outer, source, source_index, stop).run()

    def note_chunk_done(self) -> None:
        with self._objects_lock:
            self._done_chunks += 1

    def report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_report > 0.2:
            self._last_report = now
            self.progress(min(0.999, self._done_chunks / max(1, self._total_chunks)))

    def _windows(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        dtype = self.series.dtype
        windows: list[tuple[float, float]] = []
        ranges: list[tuple[float, float]] = []
        for parts in self.samples:
            values = np.concatenate([p.ravel() for p in parts]) if parts else np.zeros(0, dtype)
            if dtype.kind == "f":
                values = values[np.isfinite(values)]
            if values.size == 0:
                lo, hi = 0.0, 1.0
                vmin, vmax = 0.0, 1.0
            else:
                lo, hi = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
                vmin, vmax = float(values.min()), float(values.max())
            if hi <= lo:
                hi = lo + 1
            if dtype.kind in "ui":
                info = np.iinfo(dtype)
                vmin, vmax = float(info.min), float(info.max)
            windows.append((lo, hi))
            ranges.append((min(vmin, lo), max(vmax, hi)))
        return windows, ranges


class _PlaneStream:
    """One plane (one t, one z of a stack) of one source, streamed through levels [first, stop)."""

    def __init__(
        self,
        writer: _PyramidWriter,
        outer: dict[str, int],
        source: Series,
        first: int,
        stop: int,
    ) -> None:
        self.w = writer
        self.outer = outer
        self.source = source
        self.first = first
        self.stop = stop
        self.slabs: dict[tuple[int, int], Array] = {}
        self.writers: dict[tuple[int, int], list[Future[None]]] = {}
        self.pending: deque[tuple[int, int]] = deque()
        self.in_flight: deque[tuple[int, list[Future[None]], Array | None]] = deque()
        # Level-0 block buffers, reused once their chunks are done, for sources that can read
        # into a given array: fresh pages cost more than the read itself on some VMs.
        self.spare_buffers: dict[tuple[int, ...], list[Array]] = {}
        self.read_into: Callable[[list[slice], Array], None] | None = getattr(
            source, "read_into", None
        )
        self.in_flight_bytes = 0
        level0 = writer.levels[first]
        c, _, _, x = level0.shape
        block_bytes = c * level0.chunks[0] * level0.chunks[1] * x * writer.series.dtype.itemsize
        self.block_bytes = block_bytes
        self.budget = max(MIN_IN_FLIGHT_BYTES, 2 * block_bytes)

    def run(self) -> None:
        level = self.w.levels[self.first]
        n_blocks = -(-level.shape[2] // level.chunks[1])
        for k in range(level.n_slabs):
            for j in range(n_blocks):
                self._throttle()
                block, buffer = self._read_block(level, k, j)
                self._submit_block(level, k, j, block, buffer)
                self._service_pending(block=False)
                self.w.report()
            self._slab_submitted(level, k)
        while self.pending:
            self._service_pending(block=True)
        self._drain()

    def _read_block(self, level: _Level, k: int, j: int) -> tuple[Array, Array | None]:
        a0, a1 = level.slab_rows(k)
        b0 = j * level.chunks[1]
        b1 = min(level.shape[2], b0 + level.chunks[1])
        region: list[slice] = []
        for axis in self.w.axes:
            if axis in self.outer:
                region.append(slice(self.outer[axis], self.outer[axis] + 1))
            elif axis == "c" or axis == "x":
                region.append(slice(None))
            elif self.w.volume:
                region.append(slice(a0, a1) if axis == "z" else slice(b0, b1))
            else:
                region.append(slice(a0, a1))
        shape = (level.shape[0], a1 - a0, b1 - b0, level.shape[3])
        if self.read_into is None:
            return np.reshape(self.source.read(region), shape), None
        spares = self.spare_buffers.get(shape)
        buffer = spares.pop() if spares else np.empty(shape, dtype=self.w.series.dtype)
        region_shape = tuple(
            (sl.stop - sl.start) if sl.stop is not None else n
            for sl, n in zip(region, self.source.shape, strict=True)
        )
        self.read_into(region, buffer.reshape(region_shape))
        return buffer, buffer

    def _submit_block(
        self, level: _Level, k: int, j: int, block: Array, buffer: Array | None = None
    ) -> None:
        pool = self.w.pool
        assert pool is not None
        has_next = level.index + 1 < self.stop
        target_slab: Array | None = None
        target_key = (0, 0)
        a_offset = 0
        if has_next:
            nxt = self.w.levels[level.index + 1]
            a0 = k * level.chunks[0] // 2
            kt = a0 // nxt.chunks[0]
            target_key = (nxt.index, kt)
            target_slab = self.slabs.get(target_key)
            if target_slab is None:
                t0, t1 = nxt.slab_rows(kt)
                c, _, b, x = nxt.shape
                target_slab = np.empty((c, t1 - t0, b, x), dtype=block.dtype)
                self.slabs[target_key] = target_slab
            a_offset = a0 - kt * nxt.chunks[0]
        _ca, cb, cx = level.chunks
        n_x = -(-level.shape[3] // cx)
        collector = None
        if self.w.sharded:
            keys = [
                self.w._full(
                    chunk_key(
                        self.w.version,
                        str(level.index),
                        self.w._series_index(self.outer, ch, k, j, 0),
                    )
                )
                for ch in range(level.shape[0])
            ]
            collector = _ShardCollector(level.shape[0], n_x, keys, self._put_full)
        futures: list[Future[None]] = []
        b_offset = j * cb // 2
        for i in range(n_x):
            x0 = i * cx
            piece = block[:, :, :, x0 : x0 + cx]
            target = None
            if target_slab is not None:
                _, a, b, w = piece.shape
                target = target_slab[
                    :,
                    a_offset : a_offset + -(-a // 2),
                    b_offset : b_offset + -(-b // self.w.factors[2]),
                    x0 // 2 : x0 // 2 + -(-w // 2),
                ]
            futures.append(
                pool.submit(self._chunk_task, level, (k, j, i), piece, target, collector)
            )
        if has_next:
            self.writers.setdefault(target_key, []).extend(futures)
        self.in_flight.append((block.nbytes, futures, buffer))
        self.in_flight_bytes += block.nbytes

    def _put_full(self, full_key: str, data: bytes | list[bytes]) -> None:
        if isinstance(data, list):
            # A shard goes out as its parts: joining them would copy the whole shard again.
            stored = self.w.chunk_store.put(full_key, data)
        else:
            stored = self.w.chunk_store.put_bytes(full_key, data)
        with self.w._objects_lock:
            self.w.objects.append(stored)

    def _chunk_task(
        self,
        level: _Level,
        index: tuple[int, int, int],
        piece: Array,
        target: Array | None,
        collector: _ShardCollector | None,
    ) -> None:
        k, j, i = index
        w = self.w
        full_chunk = level.chunks
        # One C-ordered copy serves both the encoder, which needs one, and the downsampling,
        # which runs about twice as fast on it as on the strided view into the block.
        piece = np.ascontiguousarray(piece)
        for channel in range(piece.shape[0]):
            data = piece[channel]
            if data.shape != full_chunk:
                # zarr stores edge chunks at full size; zero padding keeps the bytes reproducible.
                padded = np.zeros(full_chunk, dtype=data.dtype)
                padded[: data.shape[0], : data.shape[1], : data.shape[2]] = data
                data = padded
            encoded = w.encoder.encode(data)
            if collector is not None:
                collector.add(channel, i, encoded)
            else:
                rel = chunk_key(
                    w.version, str(level.index), w._series_index(self.outer, channel, k, j, i)
                )
                self._put_full(w._full(rel), encoded)
            w.note_chunk_done()
        if target is not None:
            downsample(piece, w.factors, w.method, out=target)
        if level.index == 0:
            step = w.sample_step
            sample = piece[:, :, ::step, ::step] if w.volume else piece[:, ::step, :, ::step]
            for channel in range(piece.shape[0]):
                w.samples[channel].append(sample[channel].copy())

    def _slab_submitted(self, level: _Level, k: int) -> None:
        """All chunks of slab k of level are handed out; queue the next level's slab if full."""
        if level.index + 1 >= self.stop:
            return
        nxt = self.w.levels[level.index + 1]
        kt = (k * level.chunks[0] // 2) // nxt.chunks[0]
        _t0, t1 = nxt.slab_rows(kt)
        last_source_row = min(level.shape[1], 2 * t1) - 1
        if k == last_source_row // level.chunks[0]:
            self.pending.append((nxt.index, kt))

    def _service_pending(self, *, block: bool) -> None:
        while self.pending:
            key = self.pending[0]
            futures = self.writers.get(key, [])
            if block:
                self._wait(futures)
            elif not all(f.done() for f in futures):
                return
            for f in futures:
                f.result()
            self.pending.popleft()
            self.writers.pop(key, None)
            slab = self.slabs.pop(key)
            level = self.w.levels[key[0]]
            n_blocks = -(-level.shape[2] // level.chunks[1])
            for j in range(n_blocks):
                b0 = j * level.chunks[1]
                self._submit_block(level, key[1], j, slab[:, :, b0 : b0 + level.chunks[1]])
            self._slab_submitted(level, key[1])

    def _throttle(self) -> None:
        # The block about to be read counts too: two blocks at most, one read while one is
        # compressed, which keeps both cores busy since reading is the faster of the two.
        while self.in_flight and self.in_flight_bytes + self.block_bytes > self.budget:
            self._retire(wait_for_it=True)
        # Also let go of finished work at the front without waiting.
        while self.in_flight and all(f.done() for f in self.in_flight[0][1]):
            self._retire(wait_for_it=False)

    def _retire(self, *, wait_for_it: bool) -> None:
        nbytes, futures, buffer = self.in_flight.popleft()
        if wait_for_it:
            self._wait(futures)
        for f in futures:
            f.result()
        self.in_flight_bytes -= nbytes
        if buffer is not None:
            self.spare_buffers.setdefault(buffer.shape, []).append(buffer)

    def _drain(self) -> None:
        while self.in_flight:
            self._retire(wait_for_it=True)
        self.spare_buffers.clear()

    def _wait(self, futures: list[Future[None]]) -> None:
        remaining = [f for f in futures if not f.done()]
        while remaining:
            done, not_done = wait(remaining, timeout=0.25, return_when=FIRST_EXCEPTION)
            for f in done:
                f.result()
            remaining = list(not_done)
            self.w.report()
