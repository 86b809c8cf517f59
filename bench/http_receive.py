"""The ceiling for uploads on this machine: how fast the HTTP server alone takes a request body in.

Run: .venv/bin/python bench/http_receive.py [--size-mib 2048] [--repeat 3]

Starts uvicorn (uvloop) with an ASGI app that only counts the body's bytes, and sends it one
body of --size-mib from a cached file with sendfile, the cheapest client there is: once with
stock uvicorn's httptools protocol, once with the protocol `allmicro serve` runs
(allmicro_data.api.http_server), and once more with that and the app hashing the body with
sha256 as it arrives, in the event loop (the upload endpoint hashes in a thread of its own).
Prints MB/s (median of --repeat) beside a plain copy of the same file with fsync, as
bench/upload.py does: an upload cannot be faster than what this measures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MB = 1e6


async def counting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body (hashing it when HASH is set) and answers with its length."""
    if scope["type"] != "http":
        return
    digest = hashlib.sha256() if os.environ.get("HASH") else None
    size = 0
    while True:
        message = await receive()
        body = message.get("body", b"")
        size += len(body)
        if digest is not None:
            digest.update(body)
        if not message.get("more_body"):
            break
    answer = str(size).encode()
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, path: Path) -> float:
    """Send the file as one POST body with sendfile; seconds until the answer."""
    size = path.stat().st_size
    with socket.create_connection(("127.0.0.1", port)) as sock, path.open("rb") as source:
        started = time.perf_counter()
        head = f"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: {size}\r\n\r\n"
        sock.sendall(head.encode())
        sock.sendfile(source)
        answer = b""
        while not answer.endswith(str(size).encode()):
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"connection closed; got {answer!r}")
            answer += chunk
        return time.perf_counter() - started


LAUNCH = """
import sys, uvicorn
from allmicro_data.api.http_server import LargeBodyHttpToolsProtocol
http = LargeBodyHttpToolsProtocol if sys.argv[2] == "allmicro" else "httptools"
uvicorn.run("http_receive:counting_app", port=int(sys.argv[1]), http=http, loop="uvloop",
            log_level="warning", lifespan="off")
"""


def serve(port: int, protocol: str, hashing: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    if hashing:
        env["HASH"] = "1"
    command = [sys.executable, "-c", LAUNCH, str(port), protocol]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("uvicorn did not start")


def copy_with_fsync(source: Path, target: Path) -> float:
    started = time.perf_counter()
    shutil.copyfile(source, target)
    with target.open("rb") as handle:
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="allmicro-receive-", dir=Path.cwd()) as tmp:
        source = Path(tmp) / "source.bin"
        with source.open("wb") as handle:
            for _ in range(size >> 26):
                handle.write(os.urandom(64 << 20))
        copy_with_fsync(source, Path(tmp) / "warm-up.bin")
        figures = {
            "plain copy + fsync": [
                copy_with_fsync(source, Path(tmp) / "copy.bin") for _ in range(args.repeat)
            ]
        }
        runs = (
            ("uvicorn receive", "httptools", False),
            ("allmicro protocol receive", "allmicro", False),
            ("allmicro receive + sha256", "allmicro", True),
        )
        for label, protocol, hashing in runs:
            port = free_port()
            process = serve(port, protocol, hashing)
            try:
                post(port, source)  # warm-up
                figures[label] = [post(port, source) for _ in range(args.repeat)]
            finally:
                process.terminate()
                process.wait(timeout=10)
    copy_rate = size / statistics.median(figures["plain copy + fsync"]) / MB
    print(f"{args.size_mib} MiB, load average {os.getloadavg()[0]:.2f}")
    for label, seconds in figures.items():
        rate = size / statistics.median(seconds) / MB
        print(f"{label:<28} {rate:8.0f} MB/s  {100 * rate / copy_rate:5.1f} % of the copy")


if __name__ == "__main__":
    main()
