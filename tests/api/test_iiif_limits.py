"""IIIF size limits (maxWidth, maxHeight, maxArea) and the render memory budget behind them."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image as PILImage

from allmicro_data.api.iiif import IIIFError, Region, SizeLimits, parse_size
from allmicro_data.api.render_budget import RenderBudget, RenderBusy
from tests.api.test_end_to_end import FEI, upload, wait_for_job
from tests.conftest import TLS, LiveServer, _running_server, _server_env

# FEI-Helios-Ebeam-16bits.tif is 512 x 471: narrower limits than the image in one direction,
# and room for an upscaled strip of ~7 million pixels (a render of a few tenths of a second).
MAX_WIDTH, MAX_HEIGHT, MAX_AREA = 500, 16_000, 7_000_000
LIMITS = SizeLimits(MAX_WIDTH, MAX_HEIGHT, MAX_AREA)
FULL = Region(0, 0, 512, 471)
STRIP = Region(0, 0, 16, 471)


@pytest.mark.parametrize(
    ("size", "region", "expected"),
    [
        ("max", FULL, (500, 460)),  # shrunk to maxWidth, not refused
        ("^max", FULL, (500, 460)),
        # Upscaled to maxArea: 30.48 x rounds to 488 x 14355, over the area, so rounds down.
        ("^max", STRIP, (487, 14354)),
        ("!1000,1000", FULL, (500, 460)),
        ("^!100000,100000", STRIP, (487, 14354)),
        ("^500,14000", STRIP, (500, 14000)),
    ],
)
def test_sizes_that_shrink_to_the_limits(
    size: str, region: Region, expected: tuple[int, int]
) -> None:
    w, h = parse_size(size, region, LIMITS)
    assert (w, h) == expected
    assert w <= MAX_WIDTH and h <= MAX_HEIGHT and w * h <= MAX_AREA


@pytest.mark.parametrize("size", ["^501,", "^,16001", "^500,14001", "^pct:4000", "501,10"])
def test_sizes_beyond_the_limits_are_refused(size: str) -> None:
    with pytest.raises(IIIFError):
        parse_size(size, STRIP if size.startswith("^") else FULL, LIMITS)


class Limited:
    """One server for the module, with narrow limits and a render budget that lets one
    render run at a time and nobody wait."""

    def __init__(self, server: LiveServer) -> None:
        self.client = server.client()
        project = self.client.post("/api/projects", json={"name": "iiif limits"}).json()["id"]
        dataset = self.client.post(
            f"/api/projects/{project}/datasets", json={"name": "limits"}
        ).json()["id"]
        job = wait_for_job(
            self.client, upload(self.client, dataset, FEI.name, FEI.read_bytes())["job_id"]
        )
        assert job["status"] == "succeeded", job
        self.image: str = job["image_ids"][0]

    def get(self, path: str) -> httpx.Response:
        return self.client.get(f"/iiif/3/{self.image}/{path}")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    directory = tmp_path_factory.mktemp("iiif-limits")
    env = _server_env(directory / "server-data", f"sqlite:///{directory / 'catalogue.sqlite3'}")
    env.update(
        {
            "ALLMICRO_IIIF_MAX_WIDTH": str(MAX_WIDTH),
            "ALLMICRO_IIIF_MAX_HEIGHT": str(MAX_HEIGHT),
            "ALLMICRO_IIIF_MAX_AREA": str(MAX_AREA),
            "ALLMICRO_RENDER_MEMORY_MB": "1",
            "ALLMICRO_RENDER_WAIT_SECONDS": "0",
        }
    )
    server = _running_server(env, directory / "server.log")
    try:
        yield Limited(server)
    finally:
        server.stop()


def picture_size(response: httpx.Response) -> tuple[int, int]:
    assert response.status_code == 200, response.text
    size: tuple[int, int] = PILImage.open(io.BytesIO(response.content)).size
    return size


def test_info_json_advertises_the_limits_and_lists_only_sizes_within_them(
    limited: Limited,
) -> None:
    info = limited.get("info.json").json()
    assert (info["maxWidth"], info["maxHeight"], info["maxArea"]) == (
        MAX_WIDTH,
        MAX_HEIGHT,
        MAX_AREA,
    )
    assert "sizeUpscaling" in info["extraFeatures"]
    # The full 512 px level is wider than maxWidth: the largest size allowed stands for it.
    assert info["sizes"][-1] == {"width": 500, "height": 460}
    assert all(s["width"] <= MAX_WIDTH for s in info["sizes"])


def test_requests_follow_the_limits(limited: Limited) -> None:
    assert picture_size(limited.get("full/max/0/default.png")) == (500, 460)
    assert picture_size(limited.get("0,0,16,471/^max/0/default.jpg")) == (487, 14354)
    assert picture_size(limited.get("full/!1000,1000/0/default.png")) == (500, 460)
    for path in (
        "0,0,16,471/^501,/0/default.png",  # upscaled beyond maxWidth
        "0,0,16,471/^,16001/0/default.png",  # beyond maxHeight
        "0,0,16,471/^500,14001/0/default.png",  # beyond maxArea
        "full/501,400/0/default.png",
    ):
        response = limited.get(path)
        assert response.status_code == 400, path
        assert response.headers["content-type"] == "application/problem+json"
        assert "exceeds the limits" in response.json()["detail"]


def test_renders_beyond_the_budget_answer_503_with_retry_after(limited: Limited) -> None:
    limited.get("info.json").raise_for_status()  # caller, image and pyramid now cached
    # Six different strips (nothing served from the tile cache), each ~0.3 s of rendering,
    # sent at once; the budget admits one render at a time and lets nobody wait.
    paths = [f"{x},0,16,471/^max/0/color.webp" for x in range(0, 60, 10)]
    start = threading.Barrier(len(paths))
    responses: dict[str, httpx.Response] = {}

    def fetch(path: str) -> None:
        with httpx.Client(headers=dict(limited.client.headers), timeout=60, verify=TLS) as client:
            start.wait()
            responses[path] = client.get(f"{limited.client.base_url}/iiif/3/{limited.image}/{path}")

    threads = [threading.Thread(target=fetch, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in responses.values())
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    for response in responses.values():
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["content-type"] == "application/problem+json"
    # Busy was momentary: the same request succeeds once the others are done.
    refused = next(p for p, r in responses.items() if r.status_code == 503)
    assert picture_size(limited.get(refused)) == (487, 14354)


def test_render_budget_bounds_what_runs_at_once() -> None:
    async def scenario() -> None:
        budget = RenderBudget(capacity=1600, wait_seconds=0)
        async with budget.hold(1000):
            # Large renders may share three quarters (1200): a second large one is refused.
            with pytest.raises(RenderBusy) as refused:
                async with budget.hold(300):
                    pass
            assert refused.value.retry_after >= 1
            # A tile-sized render (at most a sixteenth) still has the quarter kept for it.
            async with budget.hold(100):
                assert budget.used == 1100
        assert budget.used == 0 and budget.used_large == 0
        # More than the whole share: clamped, runs alone.
        async with budget.hold(10**12):
            assert budget.used == 1200

        waiting = RenderBudget(capacity=1600, wait_seconds=30)
        first_may_finish = asyncio.Event()
        order: list[str] = []

        async def render(name: str, cost: int, until: asyncio.Event | None = None) -> None:
            async with waiting.hold(cost):
                order.append(f"{name} starts")
                if until is not None:
                    await until.wait()
                order.append(f"{name} ends")

        first = asyncio.create_task(render("first", 1000, first_may_finish))
        second = asyncio.create_task(render("second", 1000))
        for _ in range(100):  # a few turns of the loop: the first runs, the second waits
            if waiting._waiters:
                break
            await asyncio.sleep(0)
        assert order == ["first starts"] and len(waiting._waiters) == 1
        first_may_finish.set()
        await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
        assert order == ["first starts", "first ends", "second starts", "second ends"]
        assert waiting.used == 0 and not waiting._waiters

    # In a thread of its own: a browser test of the same test process may have left Playwright's
    # loop marked as running in this one (its sync API runs on greenlets of the main thread).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result(timeout=60)
