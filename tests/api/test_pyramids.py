"""Reading pyramids for the tile path: every layout we write reads back the same pixels, without zarr-python."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr

from allmicro_data.api.iiif import parse_request
from allmicro_data.api.pyramids import ChunkCache, open_pyramid
from allmicro_data.api.rendering import parse_settings
from allmicro_data.api.routers.iiif import _renders_at_once
from allmicro_data.ingest.pyramid import write_pyramid
from allmicro_data.ingest.readers.array import ArraySeries
from allmicro_data.storage.base import ObjectStore
from allmicro_data.storage.local import LocalStore
from tests.ingest.test_pyramid import KEY, sem_like

LAYOUTS = {"v04": ("0.4", None), "v05-sharded": ("0.5", True), "v05": ("0.5", False)}
# Boxes (y0, y1, x0, x1) that start, end and cross chunk and shard borders (chunks are 64).
BOXES = [(0, 64, 0, 64), (30, 200, 50, 333), (100, 260, 0, 390), (255, 260, 383, 390)]


class CountingStore:
    """A LocalStore that counts requests, to show what the tile path fetches."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _count(self) -> None:
        self.requests += 1

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._count()
        return self.inner.get_bytes(key, start, end)

    def size(self, key: str) -> int:
        self._count()
        return self.inner.size(key)


class SuffixCountingStore(CountingStore):
    """A counting store that reads an object's last bytes in one request, as S3 does."""

    def get_suffix(self, key: str, length: int) -> bytes:
        self._count()
        size = self.inner.size(key)
        return self.inner.get_bytes(key, max(0, size - length), size)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, np.ndarray[Any, Any]]:
    store = LocalStore(tmp_path_factory.mktemp("pyramids"))
    data = sem_like((260, 390), seed=3)
    for name, (ngff, shard) in LAYOUTS.items():
        write_pyramid(
            ArraySeries(data, "yx"), store, f"{name}/{KEY}", ngff=ngff, chunk=64, shard=shard
        )
    return store, data


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_is_read_directly_and_equals_what_zarr_reads(
    written: tuple[LocalStore, np.ndarray[Any, Any]], layout: str
) -> None:
    store, data = written
    key = f"{layout}/{KEY}"
    pyramid = open_pyramid(store, key)
    assert all(level.fast for level in pyramid.levels), "fell back to zarr-python"
    cache = ChunkCache(1 << 30)
    for level in range(len(pyramid.levels)):
        expected = np.asarray(zarr.open_array(str(store.root / key / str(level)), mode="r")[:])
        if level == 0:
            np.testing.assert_array_equal(expected, data)
        h, w = expected.shape
        for y0, y1, x0, x1 in BOXES:
            y, x = (min(y0, h - 1), min(y1, h)), (min(x0, w - 1), min(x1, w))
            got = pyramid.read(store, cache, level, {}, y, x)
            np.testing.assert_array_equal(got, expected[y[0] : y[1], x[0] : x[1]])


@pytest.mark.parametrize(
    ("kind", "index_requests"),
    [(CountingStore, 2), (SuffixCountingStore, 1)],  # size and index; or the last bytes
)
def test_a_shards_index_is_read_once_then_each_chunk_is_one_range_request(
    written: tuple[LocalStore, np.ndarray[Any, Any]], kind: type[CountingStore], index_requests: int
) -> None:
    store, _ = written
    counting = kind(store)
    pyramid = open_pyramid(counting, f"v05-sharded/{KEY}")  # type: ignore[arg-type]
    counting.requests = 0
    cache = ChunkCache(1 << 30)
    # Four chunks of the first chunk row: one shard.
    pyramid.read(counting, cache, 0, {}, (0, 64), (0, 256))  # type: ignore[arg-type]
    assert counting.requests == index_requests + 4  # then one range per chunk
    pyramid.read(counting, cache, 0, {}, (0, 64), (256, 390))  # type: ignore[arg-type]
    assert counting.requests == index_requests + 4 + 3  # the index is kept: only new chunks


class GatedStore(SuffixCountingStore):
    """Holds the first request until released, to let other readers arrive meanwhile."""

    def __init__(self, inner: LocalStore) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.first_waiting = threading.Event()
        self.release = threading.Event()

    def _count(self) -> None:
        with self.lock:
            self.requests += 1
            first = self.requests == 1
        if first:
            self.first_waiting.set()
            assert self.release.wait(30)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tiles_that_need_the_same_chunk_at_once_read_it_once(
    written: tuple[LocalStore, np.ndarray[Any, Any]], layout: str
) -> None:
    store, data = written
    gated = GatedStore(store)
    pyramid = open_pyramid(store, f"{layout}/{KEY}")
    cache = ChunkCache(1 << 30)
    with ThreadPoolExecutor(8) as pool:
        reads = [pool.submit(pyramid.read, gated, cache, 0, {}, (0, 64), (0, 64)) for _ in range(8)]
        assert gated.first_waiting.wait(30)
        # The other seven have arrived and must wait for that read: none of them may request
        # anything in the meantime (given half a second to do it wrongly).
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and gated.requests == 1:
            time.sleep(0.01)
        gated.release.set()
        for read in reads:
            np.testing.assert_array_equal(read.result(), data[:64, :64])
    # One chunk; a shard's index first.
    assert gated.requests == (2 if layout == "v05-sharded" else 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_region_is_cached_once_every_chunk_it_needs_is_decoded(
    written: tuple[LocalStore, np.ndarray[Any, Any]], layout: str
) -> None:
    """What lets a tile render on the event loop: all its chunks decoded, no request needed."""
    store, _ = written
    counting = CountingStore(store)
    pyramid = open_pyramid(counting, f"{layout}/{KEY}")  # type: ignore[arg-type]
    cache = ChunkCache(1 << 30)
    inside, across = ((10, 60), (70, 120)), ((10, 60), (100, 140))  # one chunk; two
    assert not pyramid.cached(cache, 0, {}, *inside)
    pyramid.read(counting, cache, 0, {}, *inside)  # type: ignore[arg-type]
    assert pyramid.cached(cache, 0, {}, *inside)
    assert not pyramid.cached(cache, 0, {}, *across)  # its second chunk is not there
    pyramid.read(counting, cache, 0, {}, *across)  # type: ignore[arg-type]
    counting.requests = 0
    assert pyramid.cached(cache, 0, {}, *across)
    pyramid.read(counting, cache, 0, {}, *across)  # type: ignore[arg-type]
    assert counting.requests == 0


def test_a_tile_renders_on_the_event_loop_only_when_small_and_cached(
    written: tuple[LocalStore, np.ndarray[Any, Any]],
) -> None:
    """The IIIF route's choice: the thread pool for a tile that must read or decode a chunk,
    or that is large; the event loop for a small one whose chunks are all decoded."""
    store, _ = written
    pyramid = open_pyramid(store, f"v04/{KEY}")
    state = SimpleNamespace(chunks=ChunkCache(1 << 30))
    tile = parse_request("0,0,64,64", "64,", "0", "default.jpg", 390, 260)
    upscaled = parse_request("0,0,64,64", "^1000,", "0", "default.jpg", 390, 260)
    plane = parse_settings()
    assert not _renders_at_once(state, pyramid, tile, plane)  # type: ignore[arg-type]
    pyramid.read(store, state.chunks, 0, {}, (0, 64), (0, 64))
    assert _renders_at_once(state, pyramid, tile, plane)  # type: ignore[arg-type]
    assert not _renders_at_once(state, pyramid, upscaled, plane)  # type: ignore[arg-type]
    beyond = parse_settings(z=3)  # the pool's render answers what is wrong with it
    assert not _renders_at_once(state, pyramid, tile, beyond)  # type: ignore[arg-type]


def test_a_layout_we_do_not_decode_is_read_through_zarr(tmp_path: Path) -> None:
    store: ObjectStore = LocalStore(tmp_path)
    data = sem_like((100, 120), seed=4)
    write_pyramid(ArraySeries(data, "yx"), store, KEY, ngff="0.4", chunk=64)
    # Same pixels, but with a filter the direct reader does not apply.
    level0 = str(tmp_path / KEY / "0")
    zarr.create_array(
        level0,
        shape=data.shape,
        chunks=(64, 64),
        dtype=data.dtype,
        filters=[numcodecs.Delta(dtype="u2")],
        zarr_format=2,
        overwrite=True,
    )[:] = data

    pyramid = open_pyramid(store, KEY)

    assert not pyramid.levels[0].fast and pyramid.levels[0].stored.direct is False
    got = pyramid.read(store, ChunkCache(1 << 20), 0, {}, (10, 90), (5, 115))
    np.testing.assert_array_equal(got, data[10:90, 5:115])
