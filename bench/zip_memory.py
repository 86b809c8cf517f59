"""Benchmark: stream a 2 GB dataset as a ZIP from a live server; report server memory and verify SHA256SUMS.

Usage: .venv/bin/python bench/zip_memory.py [--gigabytes 2] [--files 8]
Starts `allmicro serve` on a free port with a scratch data directory, uploads the files through
the API, downloads /api/datasets/{id}/download.zip while sampling the server's resident memory,
then checks every member of the archive against the manifest inside it.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from serving import BenchServer, RssSampler, status_bytes


def make_file(path: Path, size: int, seed: int) -> None:
    block = hashlib.sha256(str(seed).encode()).digest() * (1024 * 1024 // 32)
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            out.write(piece)
            written += len(piece)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    total = int(args.gigabytes * 1024**3)
    work = Path(tempfile.mkdtemp(prefix="allmicro-zip-bench-"))
    server = BenchServer(work / "data", {"ALLMICRO_JOB_WORKERS": "0"}, inherit=True)
    try:
        server.start(timeout=60)
        client = server.client()
        project = client.post("/api/projects", json={"name": "zip bench"}).json()["id"]
        dataset = client.post(
            f"/api/projects/{project}/datasets", json={"name": "two gigabytes"}
        ).json()["id"]
        size = total // args.files
        for i in range(args.files):
            path = work / f"acquisition-{i:02d}.raw"
            make_file(path, size, i)
            with path.open("rb") as handle:
                response = client.post(
                    f"/api/datasets/{dataset}/files", files={"file": (path.name, handle)}
                )
            response.raise_for_status()
            path.unlink()

        baseline = status_bytes(server.pid, "VmRSS")
        sampler = RssSampler(lambda: status_bytes(server.pid, "VmRSS"), 0.02)
        sampler.start()
        archive_path = work / "download.zip"
        started = time.perf_counter()
        with (
            client.stream("GET", f"/api/datasets/{dataset}/download.zip") as response,
            archive_path.open("wb") as out,
        ):
            response.raise_for_status()
            for chunk in response.iter_bytes(1024 * 1024):
                out.write(chunk)
        elapsed = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()

        with zipfile.ZipFile(archive_path) as archive:
            manifest = archive.read("SHA256SUMS").decode().splitlines()
            bad = 0
            for line in manifest:
                digest, name = line.split("  ", 1)
                h = hashlib.sha256()
                with archive.open(name) as member:
                    while block := member.read(8 * 1024 * 1024):
                        h.update(block)
                bad += h.hexdigest() != digest
        archive_size = archive_path.stat().st_size
        print(
            f"archive: {archive_size / 1e9:.2f} GB, {len(manifest)} files, streamed in {elapsed:.1f} s "
            f"({archive_size / elapsed / 1e6:.0f} MB/s)"
        )
        print(
            f"server RSS: baseline {baseline / 1e6:.0f} MB, peak {sampler.peak / 1e6:.0f} MB, "
            f"extra {(sampler.peak - baseline) / 1e6:.0f} MB (target < 200 MB)"
        )
        print(f"manifest: {len(manifest) - bad}/{len(manifest)} members verify")
        if bad or sampler.peak - baseline >= 200e6:
            sys.exit(1)
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
