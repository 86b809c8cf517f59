"""The viewers' pyramid cache opens each pyramid once, however many tiles ask for it at once;
a tile crosses into a thread once."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from allmicro_data.api.app import create_app
from allmicro_data.api.pyramids import PyramidCache
from allmicro_data.ingest.pyramid import write_pyramid
from allmicro_data.ingest.readers.array import ArraySeries
from allmicro_data.settings import Settings
from allmicro_data.storage.local import LocalStore


class CountingStore(LocalStore):
    """A local store that counts whole-object reads and can hold them until released."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0
        self.release = threading.Event()
        self.release.set()
        self._count = threading.Lock()

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with self._count:
            self.reads += 1
        self.release.wait(timeout=30)
        return super().get_bytes(key, start, end)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    data = np.arange(1024 * 1024, dtype=np.uint16).reshape(1024, 1024)
    counting = CountingStore(tmp_path / "objects")
    write_pyramid(ArraySeries(data, "yx"), counting, "images/a")
    return counting


def test_concurrent_first_tiles_open_the_pyramid_once(store: CountingStore) -> None:
    single = PyramidCache()
    single.get(store, "images/a", "1")
    reads_of_one_opening = store.reads
    assert reads_of_one_opening > 0

    store.reads = 0
    store.release.clear()  # the opening's reads wait, so every caller arrives during it
    cache = PyramidCache()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.get, store, "images/a", "1") for _ in range(8)]
        while store.reads == 0:
            threading.Event().wait(0.01)
        threading.Event().wait(0.2)
        store.release.set()
        opened = {id(f.result(timeout=30)) for f in futures}
    assert len(opened) == 1
    assert store.reads == reads_of_one_opening


def test_a_failed_opening_is_tried_again(store: CountingStore) -> None:
    cache = PyramidCache()
    with pytest.raises(Exception):  # noqa: B017 - whatever the metadata reader raises
        cache.get(store, "images/missing", "1")
    assert cache.peek("images/missing", "1") is None
    assert cache.get(store, "images/a", "1") is cache.get(store, "images/a", "1")


def test_a_tile_goes_to_the_thread_pool_once_for_its_rendering(tmp_path: Path) -> None:
    """Every dependency of the routes that render pixels is a coroutine: FastAPI runs a plain
    function dependency in its thread pool, a second trip there and back for each tile, and
    on a busy server such a trip costs more than the rendering does."""
    app = create_app(Settings(data_dir=tmp_path))
    routes = [context.original_route for context in iter_route_contexts(app.routes)]
    rendering = [
        route
        for route in routes
        if isinstance(route, APIRoute)
        and route.path.endswith("/{region}/{size}/{rotation}/{quality_format}")
    ]
    # By bearer token, by image and dataset capability, on a share page; GET and HEAD.
    assert len(rendering) >= 7

    def plain_functions(dependant: Dependant) -> list[str]:
        call = dependant.call
        found = [] if call is None or inspect.iscoroutinefunction(call) else [call.__name__]
        for sub in dependant.dependencies:
            found += plain_functions(sub)
        return found

    offenders = {route.path: plain_functions(route.dependant) for route in rendering}
    assert {path: names for path, names in offenders.items() if names} == {}


WARM_UP = """
import asyncio, sys, time
from pathlib import Path
from fastapi.routing import _IncludedRouter
from allmicro_data.api.app import create_app
from allmicro_data.ingest.ngff.metadata import NGFF_MODEL_MODULES
from allmicro_data.settings import Settings

data = Path(sys.argv[1])
app = create_app(Settings(data_dir=data, database_url=f"sqlite:///{data / 'c.sqlite3'}",
                          admin_email="admin@example.org", admin_password="a long admin password",
                          job_workers=0, argon2_time_cost=1, argon2_memory_kib=1024,
                          argon2_parallelism=1))
routers = [r for r in app.routes if isinstance(r, _IncludedRouter)]
assert routers, "no included routers: FastAPI builds route contexts differently now"

def built() -> bool:
    return all(
        r._effective_candidates_version == r.original_router._get_routes_version()
        for r in routers
    )

assert not any(m in sys.modules for m in NGFF_MODEL_MODULES), "imported before start-up"
assert not built(), "route contexts built before start-up"

async def serve() -> None:
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 60
        while not (all(m in sys.modules for m in NGFF_MODEL_MODULES) and built()):
            assert time.monotonic() < deadline, "start-up did not warm the tile path"
            await asyncio.sleep(0.02)

asyncio.run(serve())
print("warm")
"""


def test_start_up_loads_what_the_first_tile_would_load_on_its_way(tmp_path: Path) -> None:
    """The NGFF models and FastAPI's route contexts are loaded beside start-up, so the first
    viewer of a fresh server does not wait for them (bench/tiles.py --s3: its first tile took
    half a second, and the first second's tiles the cold run's tail)."""
    done = subprocess.run(
        [sys.executable, "-c", WARM_UP, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("warm")
