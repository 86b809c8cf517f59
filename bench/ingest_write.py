"""The pyramid write of an ingest job, as the server does it: durable, checksummed, atomic.

Run: flock /tmp/bench.lock .venv/bin/python bench/ingest_write.py [--runs 3] [FILE ...]

`allmicro convert` (bench/convert.py) writes like cp: no fsync, no checksums. An ingest job
writes the same pyramid into the server's store with a sha256 of every object (the fixity
manifest), each object atomically, and makes it durable before the image is shown: one sync
at the end. Printed per input (median of --runs): wall and CPU of write_pyramid, and the
seconds of it spent in that final sync, which is what is left for the disk to write then.
The inputs default to bench/convert.py's 16k² SEM and 2 GiB tomogram (BENCH_DATA).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path(os.environ.get("BENCH_DATA", "/tmp/bench-data"))


def one(source: Path, root: Path) -> None:
    """Write source's pyramid into a durable LocalStore at root; print the figures."""
    from allmicro_data.ingest.pyramid import write_pyramid
    from allmicro_data.ingest.readers import open_image_file
    from allmicro_data.storage.local import LocalStore

    class TimedStore(LocalStore):
        synced = 0.0

        def sync(self, keys: Any) -> None:
            started = time.perf_counter()
            super().sync(keys)
            TimedStore.synced += time.perf_counter() - started

    shutil.rmtree(root, ignore_errors=True)
    store = TimedStore(root)
    os.sync()
    started, started_cpu = time.perf_counter(), time.process_time()
    with open_image_file(source) as image_file:
        write_pyramid(image_file.series[0], store, "images/x/image.ome.zarr")
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    print(f"{wall:.3f} {cpu:.3f} {TimedStore.synced:.3f} {os.getloadavg()[0]:.1f}")
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    files = args.files or [DATA / "sem_16k.tif", DATA / "tomo.mrc"]
    root = DATA / "out" / "ingest-write"
    print("| input | MB | wall s | CPU s | of which the final sync s | load |")
    print("| --- | --- | --- | --- | --- | --- |")
    for source in files:
        runs = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "_one", str(source), str(root)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            runs.append([float(v) for v in out])
        wall, cpu, synced, load = (statistics.median(r[i] for r in runs) for i in range(4))
        print(
            f"| {source.name} | {source.stat().st_size / 1e6:.0f} | {wall:.2f} | {cpu:.2f}"
            f" | {synced:.2f} | {load:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        one(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
