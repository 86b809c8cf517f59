"""Upload throughput on loopback: our agent and tuspy against a plain local copy of the same 2 GB file.

Run: .venv/bin/python bench/upload.py [--size-mib 2048] [--keep]
Starts `allmicro serve` on a free port in a temporary directory (SQLite, local store, no job
workers so that ingest does not compete for the two cores), uploads the file with
`allmicro upload` and with tuspy, and prints MB/s for each and the ratio to the copy. Uploads end with the original fsynced in the
store, so the copy is timed both with an fsync (the like-for-like figure) and without.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
ALLMICRO = str(BIN / "allmicro")
ADMIN = ("bench@example.org", "a benchmark password")
MB = 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_file(path: Path, size: int) -> None:
    block = 64 << 20
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            n = min(block, remaining)
            handle.write(os.urandom(n))
            remaining -= n


def timed(label: str, size: int, work: object) -> float:
    # Start each run with no dirty pages left by the one before.
    os.sync()
    start = time.perf_counter()
    work()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    rate = size / MB / seconds
    print(f"{label:<34} {seconds:7.2f} s  {rate:8.1f} MB/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--chunk-mib", type=int, default=64)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--agent-option", action="append", default=[], help="extra option for allmicro upload"
    )
    args = parser.parse_args()
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="allmicro-bench-upload-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLMICRO_")}
    env.update(
        {
            "ALLMICRO_DATA_DIR": str(work / "server"),
            "ALLMICRO_ADMIN_EMAIL": ADMIN[0],
            "ALLMICRO_ADMIN_PASSWORD": ADMIN[1],
            "ALLMICRO_PORT": str(port),
            "ALLMICRO_JOB_WORKERS": "0",
            "ALLMICRO_LOG_LEVEL": "WARNING",
        }
    )
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [ALLMICRO, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        print(f"file: {size / MB:.0f} MB of random bytes in {work}", flush=True)
        first, second = work / "acquisition-1.raw", work / "acquisition-2.raw"
        random_file(first, size)
        cached_rate = timed(
            "plain copy, page cache only", size, lambda: shutil.copyfile(first, second)
        )
        second.unlink()

        def durable_copy() -> None:
            shutil.copyfile(first, second)
            with second.open("rb+") as handle:
                os.fsync(handle.fileno())

        # The server's upload ends with the original on disk (fsync), so this is the match.
        copy_rate = timed("plain copy + fsync (durable)", size, durable_copy)
        # The copy becomes tuspy's file, one byte different so that it is not deduplicated.
        with second.open("r+b") as handle:
            flipped = bytes([handle.read(1)[0] ^ 0xFF])
            handle.seek(0)
            handle.write(flipped)

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

        def cli(*cli_args: str) -> str:
            done = subprocess.run(
                [ALLMICRO, *cli_args], env=env, capture_output=True, text=True, check=True
            )
            return done.stdout.strip()

        project = cli("admin", "create-project", "Upload benchmark")
        dataset = cli("admin", "create-dataset", project, "bench")
        token = httpx.post(
            f"{url}/api/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]}
        ).json()["access_token"]

        agent_env = {**env, "ALLMICRO_TOKEN": token}
        agent_args = [
            ALLMICRO,
            "upload",
            str(first),
            "--server",
            url,
            "--dataset",
            dataset,
            "--state",
            str(work / "agent.sqlite3"),
            "--log-file",
            str(work / "agent.log"),
            "--chunk-size",
            str(args.chunk_mib << 20),
            "--no-progress",
            *args.agent_option,
        ]
        agent_rate = timed(
            "allmicro upload (agent)",
            size,
            lambda: subprocess.run(
                agent_args, env=agent_env, check=True, stdout=subprocess.DEVNULL
            ),
        )

        from tusclient import client as tus_client

        def tuspy_upload() -> None:
            tus = tus_client.TusClient(
                f"{url}/api/uploads/", headers={"Authorization": f"Bearer {token}"}
            )
            uploader = tus.uploader(
                str(second),
                chunk_size=args.chunk_mib << 20,
                metadata={"filename": second.name, "dataset_id": dataset},
            )
            uploader.upload()

        tuspy_rate = timed("tuspy", size, tuspy_upload)
        print()
        print(f"agent / durable copy: {agent_rate / copy_rate:6.1%}")
        print(f"tuspy / durable copy: {tuspy_rate / copy_rate:6.1%}")
        print(f"agent / page-cache copy: {agent_rate / cached_rate:6.1%}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
