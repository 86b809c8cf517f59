"""Upload throughput on loopback: our agent and tuspy against a plain local copy of the same 2 GB file.

Run: .venv/bin/python bench/upload.py [--size-mib 2048] [--repeat 3] [--cold] [--keep]
Starts `allmicro serve` on a free port in a temporary directory (SQLite, local store on the same
disk, no job workers so that ingest does not compete for the two cores), then times, each
--repeat times (the median is reported):

- a plain copy of the file on the same disk (shutil.copyfile, which Linux does in the kernel),
  with an fsync of the copy: uploads end with the original fsynced in the store, so this is the
  like-for-like figure; the copy without fsync is printed beside it;
- `allmicro upload` (the agent, as a user runs it: its process start, its sha256 of the whole
  file, the upload and the server's verification and storing of the original);
- tuspy, the reference tus client, declaring no sha256 (the server still computes one).

Beside each time it prints the CPU seconds the server and the client used in that run: on a
2-core machine with both on it, an upload is bound by their sum (both hash every byte).

Every run reads the same source file and writes a file of the same size, and what it wrote is
deleted before the next run, so all runs meet the same page cache. Warm (the default): the
source file is in the page cache for every run. --cold (root only): caches are dropped before
every run, so the copy and the uploads alike read the source from the disk.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from serving import BenchServer

BIN = Path(sys.executable).parent
ALLMICRO = str(BIN / "allmicro")
ADMIN = ("bench@example.org", "a benchmark password")
MB = 1e6


def random_file(path: Path, size: int) -> None:
    block = 64 << 20
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            n = min(block, remaining)
            handle.write(os.urandom(n))
            remaining -= n


def make_distinct(path: Path, run: int) -> None:
    """Change the first bytes, so that each upload is new to the server (no deduplication)."""
    with path.open("r+b") as handle:
        handle.write(f"run {run:06d} ".encode())


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """Times each run; also the CPU the server used in it, and the run's own (the agent's
    process, or tuspy in this one), which tell where an upload's time goes."""

    def __init__(self, size: int, cold: bool, server_pid: int) -> None:
        self.size = size
        self.cold = cold
        self.server_pid = server_pid
        self.rates: dict[str, list[float]] = {}

    def run(self, label: str, work: Callable[[], object], after: Callable[[], object]) -> None:
        # No dirty pages left by the run before; with --cold, nothing cached either.
        if self.cold:
            drop_caches()
        else:
            os.sync()
        server_cpu, children_cpu = cpu_seconds(self.server_pid), children_cpu_seconds()
        own_cpu = time.process_time()
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        server_cpu = cpu_seconds(self.server_pid) - server_cpu
        client_cpu = children_cpu_seconds() - children_cpu + time.process_time() - own_cpu
        after()
        rate = self.size / MB / seconds
        self.rates.setdefault(label, []).append(rate)
        print(
            f"  {label:<30} {seconds:7.2f} s  {rate:8.1f} MB/s"
            f"   CPU: server {server_cpu:5.2f} s, client {client_cpu:5.2f} s",
            flush=True,
        )

    def median(self, label: str) -> float:
        return statistics.median(self.rates[label])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop caches before every run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--tuspy-chunk-mib", type=int, default=64)
    parser.add_argument(
        "--agent-option", action="append", default=[], help="extra option for allmicro upload"
    )
    args = parser.parse_args()
    if args.cold and os.geteuid() != 0:
        raise SystemExit("--cold drops the page cache, which needs root")
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="allmicro-bench-upload-"))
    server = BenchServer(
        work / "server",
        {"ALLMICRO_JOB_WORKERS": "0", "ALLMICRO_LOG_LEVEL": "WARNING"},
        admin=ADMIN,
    )
    url, env = server.url, server.env
    try:
        source, copy = work / "acquisition.raw", work / "copy.raw"
        print(f"file: {size / MB:.0f} MB of random bytes in {work}", flush=True)
        random_file(source, size)
        # The first touch of memory in a fresh VM is slow: let a copy nobody times pay for it.
        shutil.copyfile(source, copy)
        copy.unlink()

        server.start(timeout=60)

        def cli(*cli_args: str) -> str:
            done = subprocess.run(
                [ALLMICRO, *cli_args], env=env, capture_output=True, text=True, check=True
            )
            return done.stdout.strip()

        project = cli("admin", "create-project", "Upload benchmark")
        dataset = cli("admin", "create-dataset", project, "bench")
        token = server.token()
        raw = work / "server" / "objects" / "raw"

        def drop_stored() -> None:
            # Each upload leaves one new original; remove it like the copy is removed.
            for stored in raw.iterdir() if raw.is_dir() else []:
                stored.unlink()

        def durable_copy() -> None:
            shutil.copyfile(source, copy)
            with copy.open("rb+") as handle:
                os.fsync(handle.fileno())

        def agent_upload(run: int) -> Callable[[], object]:
            command = [
                ALLMICRO,
                "upload",
                str(source),
                "--server",
                url,
                "--dataset",
                dataset,
                "--state",
                str(work / f"agent-{run}.sqlite3"),
                "--log-file",
                str(work / "agent.log"),
                "--no-progress",
                *args.agent_option,
            ]
            agent_env = {**env, "ALLMICRO_TOKEN": token}
            return lambda: subprocess.run(
                command, env=agent_env, check=True, stdout=subprocess.DEVNULL
            )

        def tuspy_upload() -> None:
            from tusclient import client as tus_client

            tus = tus_client.TusClient(
                f"{url}/api/uploads/", headers={"Authorization": f"Bearer {token}"}
            )
            uploader = tus.uploader(
                str(source),
                chunk_size=args.tuspy_chunk_mib << 20,
                metadata={"filename": source.name, "dataset_id": dataset},
            )
            uploader.upload()

        timer = Timer(size, args.cold, server.pid)
        cache = "cold: caches dropped before each run" if args.cold else "warm: source cached"
        print(f"{args.repeat} runs each, {cache}", flush=True)
        run = 0
        for _ in range(args.repeat):
            timer.run("plain copy + fsync", durable_copy, copy.unlink)
            timer.run("plain copy, no fsync", lambda: shutil.copyfile(source, copy), copy.unlink)
            run += 1
            make_distinct(source, run)
            timer.run("allmicro upload (agent)", agent_upload(run), drop_stored)
            run += 1
            make_distinct(source, run)
            timer.run("tuspy", tuspy_upload, drop_stored)

        copy_rate = timer.median("plain copy + fsync")
        print(
            f"\nmedians of {args.repeat} ({cache}), load average {Path('/proc/loadavg').read_text().strip()}"
        )
        for label in timer.rates:
            rate = timer.median(label)
            print(f"  {label:<30} {rate:8.1f} MB/s  {rate / copy_rate:6.1%} of the durable copy")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
