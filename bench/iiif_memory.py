"""Benchmark: server memory while 40 worst-case IIIF requests (huge upscales, every format) run at once.

Usage: .venv/bin/python bench/iiif_memory.py [--requests 40] [--rounds 1] [--sample PATH]
Starts `allmicro serve` on a free port with a scratch data directory and its default limits,
ingests a small sample (512 x 471 FEI SEM image) through the API, warms every encoder up, and
takes the resident memory of the server and its child processes at idle. Then it resets their
peak (/proc/<pid>/clear_refs) and sends the requests at once from as many threads: upscaled to
the limits and beyond them, full, bitonal, colour maps, PNG, WebP, JPEG, rotated, raw. Afterwards
it reads the peak (VmHWM, per process, summed; a 5 ms sampler of VmRSS backs it up where the
kernel cannot reset the peak) and counts the answers by status.

Goal (issue 14): at most 1 GB above idle, and no 5xx but 503 with Retry-After. Exit status 1 if
either is missed.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from serving import BenchServer, RssSampler, family, total

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "samples" / "fei" / "FEI-Helios-Ebeam-16bits.tif"
GOAL_BYTES = 1024**3

# Worst cases for a small image: each asks for the most pixels some way allows. Sizes beyond
# the default limits are in the mix on purpose: the issue's own request and its kin, each
# just under the 50 million pixels an earlier version allowed.
WORST = [
    "full/^7071,7071/0/bitonal.png",
    "full/^7071,7071/0/color.webp",
    "full/^7071,7071/90/color.png?cmap=viridis",
    "full/^7000,7000/0/gray.jpg",
    "full/^max/0/bitonal.png",
    "full/^max/0/color.png",
    "full/^max/0/color.webp",
    "full/^max/90/color.png",
    "full/^max/!180/gray.jpg",
    "full/^max/0/default.webp?cmap=viridis",
    "full/^max/0/default.png?cmap=fire&gamma=2",
    "full/^max/0/default.png?raw=1",
    "full/^!100000,100000/0/color.webp",
    "full/^pct:800/0/default.png",
    "full/^4096,4096/270/color.webp",
    "full/^8192,2048/0/color.png",
    "0,0,64,471/^max/0/color.webp",
    "0,0,512,32/^max/90/color.png",
    "square/^max/0/color.jpg",
    "full/max/0/color.png",
    "full/^16384,16384/0/default.png",
    "full/^max/0/bitonal.webp",
    "pct:10,10,80,80/^max/0/color.webp?cmap=magma",
]


def reset_peaks(pids: list[int]) -> bool:
    """Set each process's VmHWM back to its VmRSS (Linux >= 4.0); False where refused."""
    done = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            done = False
    return done


def burst(server: BenchServer, headers: dict[str, str], paths: list[str]) -> list[httpx.Response]:
    """Every path at once, one thread and connection each, released by one barrier."""
    start = threading.Barrier(len(paths))
    answers: list[httpx.Response | None] = [None] * len(paths)

    def fetch(i: int) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
            start.wait()
            answers[i] = client.get(paths[i])

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [a for a in answers if a is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40, help="requests sent at once")
    parser.add_argument("--rounds", type=int, default=1, help="bursts, one after the other")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="the image to ingest")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="allmicro-iiif-memory-"))
    server = BenchServer(
        work / "data",
        {"ALLMICRO_JOB_WORKERS": "1", "ALLMICRO_LOG_LEVEL": "WARNING"},
        log=work / "server.log",
    )
    failed = False
    try:
        server.start()
        image = server.ingest(args.sample, "iiif memory", "worst cases", timeout=300)
        with server.client(timeout=60) as client:
            headers = {"Authorization": client.headers["Authorization"]}
            info = client.get(f"/iiif/3/{image}/info.json").json()
            for fmt in ("jpg", "png", "webp"):  # load every encoder before idle is measured
                client.get(f"/iiif/3/{image}/0,0,64,64/64,/0/default.{fmt}").raise_for_status()
        print(
            f"image {info['width']}x{info['height']}; limits maxWidth {info.get('maxWidth')}, "
            f"maxHeight {info.get('maxHeight')}, maxArea {info.get('maxArea')}"
        )
        time.sleep(1.0)  # let the warm-up's garbage go before idle is read
        pids = family(server.pid)
        idle = total(pids, "VmRSS")
        print(f"idle: {idle / 1e6:.0f} MB in {len(pids)} processes")
        for round_ in range(1, args.rounds + 1):
            # A display window of its own makes every request distinct (nothing comes from
            # the tile cache) at the cost of any window: one lookup table per render.
            paths = [
                f"/iiif/3/{image}/{WORST[i % len(WORST)]}"
                + ("&" if "?" in WORST[i % len(WORST)] else "?")
                + f"window=0,{60000 - 1000 * round_ - i}"
                for i in range(args.requests)
            ]
            pids = family(server.pid)
            before = total(pids, "VmRSS")
            exact = reset_peaks(pids)
            sampler = RssSampler(lambda: total(family(server.pid), "VmRSS"), 0.005)
            sampler.start()
            started = time.perf_counter()
            answers = burst(server, headers, paths)
            elapsed = time.perf_counter() - started
            sampler.stop.set()
            sampler.join()
            peak = max(total(family(server.pid), "VmHWM") if exact else 0, sampler.peak)
            counts = collections.Counter(a.status_code for a in answers)
            bad = [
                a
                for a in answers
                if a.status_code >= 500
                and not (a.status_code == 503 and a.headers.get("retry-after"))
            ]
            above = peak - idle
            print(
                f"round {round_}: {len(answers)} requests in {elapsed:.1f} s; statuses "
                + ", ".join(f"{code}: {n}" for code, n in sorted(counts.items()))
            )
            print(
                f"  RSS before {before / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB "
                f"({'VmHWM' if exact else 'sampled'}), {above / 1e6:.0f} MB above idle "
                f"(goal <= {GOAL_BYTES / 1e6:.0f} MB); after {total(pids, 'VmRSS') / 1e6:.0f} MB"
            )
            for answer in bad:
                print(f"  {answer.status_code} {answer.request.url.path}: {answer.text[:200]}")
            failed |= bool(bad) or above > GOAL_BYTES
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
