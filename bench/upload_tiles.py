"""Tiles while the day's files are uploaded and no job runs: what the upload path alone costs viewers.

Run: flock /tmp/bench.lock .venv/bin/python bench/upload_tiles.py [--runs 3] [--agent-nice 19]

bench/day.py measures a whole day, where uploads, ingest jobs and tiles share the machine, and
its figures move with all three. This one leaves the jobs out. It ingests the viewers' images
once (sem_16k.tif and sem_4k.tif, as bench/day.py), then, for each run, starts `allmicro serve`
on a copy of that data directory with ALLMICRO_JOB_WORKERS=0; 16 viewer processes browse for
--idle-seconds (after a third as long to warm the caches), then the 4 agents upload bench/day.py's
40 files at once. Printed per run: the uploads' wall time, tile p50/p99 idle and during the
uploads as the viewers saw them, and the server's own time per tile during the uploads (its mean,
and the share under 5, 10, 25 and 50 ms, from its request histogram).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from day import (
    AGENTS,
    Acquisition,
    Viewers,
    build_mix,
    instrument_datasets,
    percentile,
    server_tile_seconds,
    start_agents,
    viewer_images,
)
from serving import BenchServer


def prepare(root: Path, viewing: list[Path]) -> list[str]:
    """A data directory holding the viewers' images; their ids."""
    server = BenchServer(root, {"ALLMICRO_LOG_LEVEL": "WARNING"}, log=root.parent / "prepare.log")
    server.start(timeout=120)
    try:
        return [server.ingest(path, f"viewing {path.name}", "viewing") for path in viewing]
    finally:
        server.stop()


def one_run(
    prepared: Path, ids: list[str], mix: list[Acquisition], args: argparse.Namespace
) -> str:
    work = prepared.parent / "run"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(prepared, work)
    settings = {"ALLMICRO_LOG_LEVEL": "WARNING", "ALLMICRO_JOB_WORKERS": "0"}
    server = BenchServer(work, settings, log=prepared.parent / "run.log")
    server.start(timeout=120)
    try:
        client = server.client()
        images = viewer_images(client, ids)
        datasets = instrument_datasets(client)
        token = server.token()
        viewers = Viewers(server.url, token, images, args.think)
        viewers.start()
        time.sleep(args.idle_seconds / 3)
        viewers.phase = "idle"
        time.sleep(args.idle_seconds)
        viewers.phase = "day"
        before = server_tile_seconds(client)
        started = time.perf_counter()
        agents = start_agents(server, token, datasets, mix, work, args.agent_nice)
        for process in agents:
            if process.wait() != 0:
                raise SystemExit("an agent failed")
        uploads = time.perf_counter() - started
        after = server_tile_seconds(client)
        viewers.phase = "after"
        viewers.stop()
    finally:
        server.stop()
    idle, day = viewers.latencies.get("idle", []), viewers.latencies.get("day", [])
    count = max(1.0, after[0] - before[0])
    mean = (after[1] - before[1]) / count * 1000
    shares = " ".join(
        f"≤{edge * 1000:g} ms {(after[2][edge] - before[2].get(edge, 0.0)) / count:.1%}"
        for edge in sorted(after[2])
        if edge in (0.005, 0.01, 0.025, 0.05)
    )
    return (
        f"uploads {uploads:.1f} s | idle p50 {percentile(idle, 0.5):.1f} p99"
        f" {percentile(idle, 0.99):.1f} ms | uploading p50 {percentile(day, 0.5):.1f} p99"
        f" {percentile(day, 0.99):.1f} max {max(day, default=float('nan')):.1f} ms"
        f" ({len(day)} tiles) | in the server: mean {mean:.1f} ms, {shares}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=8.0)
    parser.add_argument("--think", type=float, default=0.1, help="seconds between a viewer's tiles")
    parser.add_argument(
        "--agent-nice",
        type=int,
        default=19,
        help="niceness of the agents, each in a session of its own (default 19: instrument PCs"
        " are other machines; 0 lets them compete with the server for the CPU)",
    )
    args = parser.parse_args()
    mix, viewing = build_mix(quick=False)
    scratch = Path(tempfile.mkdtemp(prefix="allmicro-bench-upload-tiles-"))
    try:
        print(f"{len(mix)} files, {sum(a.size for a in mix) / 1e9:.2f} GB, {AGENTS} agents")
        ids = prepare(scratch / "prepared", viewing)
        for run in range(1, args.runs + 1):
            print(f"run {run}: {one_run(scratch / 'prepared', ids, mix, args)}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
