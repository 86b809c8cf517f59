"""A job whose process is killed mid-conversion runs again after a restart: once, and invisibly until done."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tifffile

from tests.api.test_end_to_end import USER_PASSWORD, upload, wait_for_job
from tests.api.test_uploads import new_project
from tests.conftest import LiveServer, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the job process through /proc"
)


def job_processes(server_pid: int) -> list[int]:
    """The server's job-pool processes (not its resource tracker)."""
    # Each thread lists the children it started; the pool is started by the runner thread.
    children = [
        pid
        for task in Path(f"/proc/{server_pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    found = []
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(pid))
    return found


def slow_image(path: Path) -> bytes:
    """An SEM-sized noisy frame: large enough that converting it takes a few seconds."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 65535, size=(6144, 6144), dtype=np.uint16)
    tifffile.imwrite(path, data)
    return path.read_bytes()


class VisibilityWatch:
    """Polls the API through the whole run and notes every image it is shown, with what the
    job and a tile of the image looked like at that moment."""

    def __init__(self, server: LiveServer, dataset_id: str, job_id: str) -> None:
        self.client = server.client("maja@ijs.example", USER_PASSWORD)
        self.dataset_id = dataset_id
        self.job_id = job_id
        self.sightings: list[dict[str, Any]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VisibilityWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                listed = self.client.get(f"/api/datasets/{self.dataset_id}/images").json()
                searched = self.client.get("/api/images").json()
                ids = {i["id"] for i in listed["items"]} | {i["id"] for i in searched["items"]}
                self.polls += 1
                for image_id in ids:
                    job = self.client.get(f"/api/jobs/{self.job_id}").json()
                    tile = self.client.get(f"/api/images/{image_id}/tiles/0/0/0.png")
                    self.sightings.append(
                        {"image": image_id, "job": job["status"], "tile": tile.status_code}
                    )
            except (httpx.HTTPError, ValueError, KeyError):
                continue  # the server is down for its restart


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_killed_job_runs_again_once_and_nothing_partial_is_visible(
    live_server: LiveServer, tmp_path: Path
) -> None:
    _, dataset_id = new_project(live_server, "maja@ijs.example", "Institut Jozef Stefan")
    client = live_server.client("maja@ijs.example", USER_PASSWORD)
    data = slow_image(tmp_path / "montage.tif")
    objects = Path(live_server.env["ALLMICRO_DATA_DIR"]) / "objects"

    uploaded = upload(client, dataset_id, "montage.tif", data)
    job_id = uploaded["job_id"]
    with VisibilityWatch(live_server, dataset_id, job_id) as watch:

        def pyramid_half_written() -> bool:
            chunks = list((objects / "images").glob("*/image.ome.zarr/*/*"))
            return len(chunks) > 0

        wait_until(pyramid_half_written, timeout=60, interval=0.02, what="pyramid chunks")
        assert client.get(f"/api/jobs/{job_id}").json()["status"] == "running"
        assert live_server.process is not None
        server_pid = live_server.process.pid
        workers = job_processes(server_pid)
        assert workers, "no job process found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        live_server.stop(signal.SIGKILL)
        live_server.env["ALLMICRO_LOG_FORMAT"] = "json"
        log_start = live_server.log_path.stat().st_size
        live_server.start()
        client = live_server.client("maja@ijs.example", USER_PASSWORD)
        job = wait_for_job(client, job_id, timeout=120)
        assert job["status"] == "succeeded", job["error"]
        assert watch.polls > 10

    # After the restart everything logs JSON, the job processes too, with the job's id.
    with live_server.log_path.open("rb") as log:
        log.seek(log_start)
        # (The killed server's resource tracker may still add a plain warning of its own.)
        text = log.read().decode()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) > 5
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    assert any(line["process"] != live_server.process.pid for line in job_lines), job_lines
    assert any("images ready" in line["message"] for line in job_lines)

    # The first attempt was the one killed; the second completed it, once.
    assert job["attempts"] == 2
    assert job["progress"] == 100.0
    listed = client.get(f"/api/datasets/{dataset_id}/images").json()
    assert listed["total"] == 1
    assert [i["id"] for i in listed["items"]] == job["image_ids"]
    jobs = client.get(f"/api/datasets/{dataset_id}/jobs").json()
    assert jobs["total"] == 1
    # Whenever an image was shown, its job had succeeded and its pyramid served tiles.
    assert all(s["job"] == "succeeded" and s["tile"] == 200 for s in watch.sightings), [
        s for s in watch.sightings if s["job"] != "succeeded" or s["tile"] != 200
    ][:3]
