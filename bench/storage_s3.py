"""Storage benchmark: the 16k² SEM pyramid written straight to S3 against the local store (target ≤ 1.3x).

Starts a SeaweedFS S3 server of its own (or uses --endpoint with ALLMICRO_S3_ACCESS_KEY/_SECRET_KEY),
then writes the pyramid with write_pyramid alternately to a LocalStore and to an S3Store, --repeat
times each, and prints the medians: wall time, this process's CPU, the S3 server's CPU, and the
floor their sum sets on a machine whose cores they share. --ngff 0.4,0.5 measures both layouts
(0.5 is sharded: 70 objects instead of 1379). --s3-workers N adds S3 with N pyramid threads.
--alternatives also writes through an fsspec/s3fs object store and reads random chunks back
through zarr over each client, the measurement behind the choice of ZarrObjectStore over S3Store
(docs in deploy/README.md). --replicated adds a second SeaweedFS and writes through
ReplicatedStore(primary, [replica]).
--originals SIZE_MB measures what the server does with a finished upload instead: an original of
SIZE_MB random bytes is received into a spool file (originals.spool: copied and hashed, as the
upload's PATCHes are) and stored (originals.place_original: adopted by rename on the local store,
streamed to S3), and it prints this process's CPU per GB for each step and store, the ratio to the
local store, and the S3 server's CPU per GB separately (issue 20: ours <= 1.15x the local store's).

The SeaweedFS server is `weed server -filer -s3`: master, volume server, filer and S3 gateway in
one process, as the tests start it, with no replication, encryption or debug logging (see
SEAWEED_FLAGS for what its CPU goes to). On a machine of a few cores it takes their CPU from the
converter: the ratio then measures SeaweedFS as much as our client; production runs MinIO on hosts
of its own.

    flock /tmp/bench.lock python bench/storage_s3.py [--ngff 0.4,0.5] [--repeat 3]
    flock /tmp/bench.lock python bench/storage_s3.py --originals 1024 [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BENCH_DATA", "/tmp/bench-data"))
MAKE_INPUTS = REPO.parent / "shared" / "bench" / "make_inputs.py"
WEED = Path(sys.executable).with_name("weed")
ACCESS_KEY, SECRET_KEY = "bench-access-key", "bench-secret-key"
TARGET_RATIO = 1.3
# Our CPU per byte of originals stored to S3 against the local store's (issue 20, point 4).
ORIGINALS_TARGET_RATIO = 1.15


# ---- a SeaweedFS server of our own -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# One process holding master, volume server, filer and S3 gateway, as the tests run it; no
# replication (the master's default 000), no encryption, glog at its quiet default. The volume
# size limit only decides how many volume files there are; 512 MB keeps the bench's few GB in a
# handful. Measured (weed -cpuprofile on the 0.4 pyramid), the server's CPU is MD5 of every byte
# (35-46 %: the S3 ETag, the volume server's needle checksum, once more per chunk), the pwrite
# of the bytes into its volume file (26-30 %) and the S3 -> volume HTTP hop; no flag of
# `weed server` or `weed mini` turns any of them off, so this is as lean as SeaweedFS goes.
SEAWEED_FLAGS = [
    "-filer",
    "-s3",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-master.volumeSizeLimitMB=512",
    "-volume.max=0",
    "-volume.preStopSeconds=0",
    "-master.telemetry=false",
]


class Seaweed:
    """`weed server -s3` on free loopback ports in a temporary directory."""

    def __init__(self, root: Path, extra_flags: list[str] | None = None) -> None:
        self.root = root
        (root / "data").mkdir(parents=True)
        self.ports = {
            n: _free_port()
            for n in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port",
                "s3.port.grpc",
            )
        }
        identity = {
            "name": "bench",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        }
        identity["actions"] = ["Admin", "Read", "List", "Tagging", "Write"]
        (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.flags = [*SEAWEED_FLAGS, *(extra_flags or [])]
        log = (root / "weed.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(WEED),
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={root / 'data'}",
                *(f"-{n}={p}" for n, p in self.ports.items()),
                f"-s3.config={root / 's3.json'}",
                *self.flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.store("ready").put_bytes("ready", b"ok")
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "weed.log").read_text()[-3000:]) from None
                time.sleep(0.2)

    def store(self, prefix: str) -> Any:
        from allmicro_data.storage import S3Store

        return S3Store(f"s3://bench/{prefix}?endpoint={self.endpoint}", ACCESS_KEY, SECRET_KEY)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)
        self.process.wait()


# ---- an fsspec (s3fs) object store, only to compare clients --------------------------------


class FsspecObjects:
    """The ObjectStore surface over s3fs: what zarr's FsspecStore would use underneath."""

    def __init__(self, endpoint: str, bucket: str, prefix: str) -> None:
        import s3fs

        self.fs = s3fs.S3FileSystem(
            key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs={"endpoint_url": endpoint}
        )
        self.root = f"{bucket}/{prefix}"
        self.url = f"s3://{self.root}"

    def put_bytes(self, key: str, data: bytes) -> Any:
        from allmicro_data.storage import StoredObject

        self.fs.pipe_file(f"{self.root}/{key}", data)
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())

    def put(self, key: str, stream: Iterable[bytes]) -> Any:
        return self.put_bytes(key, b"".join(stream))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.root}/{key}")

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.root}/{prefix}"
        try:
            found = self.fs.find(base.rsplit("/", 1)[0] if "/" in prefix else self.root)
        except FileNotFoundError:
            return iter(())
        strip = len(self.root) + 1
        return iter(sorted(k[strip:] for k in found if k.startswith(base)))


class ObstoreObjects:
    """The ObjectStore surface over obstore (Rust object_store): what zarr's ObjectStore uses."""

    def __init__(self, endpoint: str, bucket: str, prefix: str) -> None:
        self.store = obstore_s3(endpoint, bucket, prefix)
        self.url = f"s3://{bucket}/{prefix}"

    def put_bytes(self, key: str, data: bytes) -> Any:
        import obstore

        from allmicro_data.storage import StoredObject

        obstore.put(self.store, key, data)
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())

    def put(self, key: str, stream: Iterable[bytes]) -> Any:
        return self.put_bytes(key, b"".join(stream))

    def delete(self, key: str) -> None:
        import obstore

        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self.store, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        import obstore

        keys = [o["path"] for batch in obstore.list(self.store, prefix=prefix) for o in batch]
        return iter(sorted(keys))


def obstore_s3(endpoint: str, bucket: str, prefix: str) -> Any:
    from obstore.store import S3Store as ObstoreS3

    return ObstoreS3(
        bucket,
        prefix=prefix,
        config={
            "endpoint": endpoint,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "region": "us-east-1",
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )


# ---- measuring -----------------------------------------------------------------------------


def write_seconds(
    series: Any, store: Any, key: str, ngff: str, workers: int | None = None
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process (all threads), objects written."""
    from allmicro_data.ingest.pyramid import write_pyramid

    cpu, started = _process_cpu(), time.perf_counter()
    info = write_pyramid(series, store, key, ngff=ngff, workers=workers)
    return time.perf_counter() - started, _process_cpu() - cpu, len(info.objects)


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(servers: list[Seaweed]) -> float:
    """CPU seconds the S3 servers have used: on this machine they share our two cores."""
    total = 0.0
    for server in servers:
        fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def read_chunks(open_array: Callable[[], Any], n: int, seed: int = 7) -> tuple[float, float]:
    """Median and 95th percentile milliseconds to read one random level-0 chunk through zarr."""
    array = open_array()
    chunk = array.chunks
    rng = random.Random(seed)
    rows, cols = -(-array.shape[-2] // chunk[-2]), -(-array.shape[-1] // chunk[-1])
    times = []
    for _ in range(n):
        y, x = rng.randrange(rows) * chunk[-2], rng.randrange(cols) * chunk[-1]
        started = time.perf_counter()
        array[..., y : y + chunk[-2], x : x + chunk[-1]]
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DATA / "sem_16k.tif")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--endpoint", help="use this S3 endpoint instead of starting SeaweedFS")
    parser.add_argument("--alternatives", action="store_true", help="also s3fs, and reads")
    parser.add_argument("--replicated", action="store_true", help="also S3 primary + S3 replica")
    parser.add_argument(
        "--ngff", default="0.4", help="0.4, 0.5 (sharded) or both as 0.4,0.5 (one table each)"
    )
    parser.add_argument(
        "--s3-workers", type=int, default=0, help="also S3 with this many pyramid threads"
    )
    parser.add_argument(
        "--originals",
        type=int,
        metavar="SIZE_MB",
        help="store an original of SIZE_MB as the server does, instead of the pyramid",
    )
    args = parser.parse_args()
    versions = args.ngff.split(",")
    if any(v not in ("0.4", "0.5") for v in versions):
        parser.error("--ngff takes 0.4, 0.5 or 0.4,0.5")

    if not args.originals and not args.input.exists():
        print(f"making the inputs with {MAKE_INPUTS} (a few minutes, once)")
        subprocess.run([sys.executable, str(MAKE_INPUTS), "--only", "sem"], check=True)
    from allmicro_data.ingest.readers import open_image_file
    from allmicro_data.storage import LocalStore, ReplicatedStore, S3Store

    scratch = Path(tempfile.mkdtemp(prefix="allmicro-bench-s3-"))
    servers: list[Seaweed] = []
    try:
        if args.endpoint:
            endpoint = args.endpoint

            def s3(prefix: str) -> Any:
                return S3Store(f"s3://allmicro-bench/{prefix}?endpoint={endpoint}")

        else:
            servers.append(Seaweed(scratch / "seaweed"))
            endpoint = servers[0].endpoint
            s3 = servers[0].store
        variants: dict[str, tuple[Callable[[str], Any], int | None]] = {
            "local": (lambda run: LocalStore(scratch / "local" / run), None),
            "s3": (s3, None),
        }
        if args.s3_workers:
            variants[f"s3 {args.s3_workers} thr"] = (s3, args.s3_workers)
        if args.replicated:
            servers.append(Seaweed(scratch / "seaweed-replica"))
            replica = servers[-1]
            variants["s3+replica"] = (
                lambda run: ReplicatedStore(s3(run), [replica.store(run)]),
                None,
            )
        if args.originals:
            print(f"load average before: {_loadavg()}")
            stores = {name: make for name, (make, _) in variants.items()}
            measure_originals(args.originals, scratch, servers, stores, args.repeat)
            print(f"load average after: {_loadavg()}")
            return
        if args.alternatives:
            variants["s3fs"] = (lambda run: FsspecObjects(endpoint, "bench", run), None)
            if importlib.util.find_spec("obstore"):
                variants["obstore"] = (lambda run: ObstoreObjects(endpoint, "bench", run), None)

        series = open_image_file(args.input).series[0]
        print(f"{args.input.name}: {series.shape} {series.dtype}; {args.repeat} runs per store")
        print(f"load average before: {_loadavg()}")
        if servers:
            print(f"S3 server: weed {' '.join(servers[0].flags)}")
        last_run: dict[str, str] = {}
        medians: dict[str, dict[str, float]] = {}
        for ngff in versions:
            medians[ngff], last_run = measure(series, scratch, servers, variants, ngff, args.repeat)
        if len(medians) == 2:
            # What a per-store layout would give: S3 sharded against the local default.
            cross = medians["0.5"]["s3"] / medians["0.4"]["local"]
            print(f"\nS3 in NGFF 0.5 sharded / local in NGFF 0.4 = {cross:.2f}x")
        print(f"load average after: {_loadavg()}")

        if args.alternatives:
            read_alternatives(endpoint, last_run["s3"], s3)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def measure(
    series: Any,
    scratch: Path,
    servers: list[Seaweed],
    variants: dict[str, tuple[Callable[[str], Any], int | None]],
    ngff: str,
    repeat: int,
) -> tuple[dict[str, float], dict[str, str]]:
    """Write the pyramid repeat times per store, alternating; print the runs and the medians.

    Returns the median seconds of the local store and of S3, and each store's last run."""
    layout = "NGFF 0.5, sharded" if ngff == "0.5" else "NGFF 0.4"
    print(f"\n{layout}")
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    server_cpu: dict[str, list[float]] = {name: [] for name in variants}
    last_run: dict[str, str] = {}
    for index in range(repeat):
        # Alternating keeps slow phases of a busy machine from landing on one side only.
        for name, (make, workers) in variants.items():
            run = f"r{ngff}-{index}-{uuid.uuid4().hex[:6]}"
            shutil.rmtree(scratch / "local", ignore_errors=True)
            store = make(run)
            before = _server_cpu(servers)
            took, used, objects = write_seconds(series, store, "image.ome.zarr", ngff, workers)
            seconds[name].append(took)
            cpu[name].append(used)
            server_cpu[name].append(_server_cpu(servers) - before)
            last_run[name] = run
            print(
                f"  {name:<11} run {index + 1}: {took:6.2f} s  ({objects} objects, "
                f"CPU {used:.1f} s here + {server_cpu[name][-1]:.1f} s in the S3 server)"
            )
    base = statistics.median(seconds["local"])
    base_cpu = statistics.median(cpu["local"])
    cores = os.cpu_count() or 1
    # Both programs share this machine's cores: the wall time cannot be below their CPU / cores.
    print(
        "store        median    min   ratio to local   our CPU (ratio)   S3 server CPU"
        f"   CPU floor on {cores} cores"
    )
    for name, values in seconds.items():
        median = statistics.median(values)
        ours = statistics.median(cpu[name])
        server = statistics.median(server_cpu[name])
        print(
            f"{name:<11} {median:6.2f} s {min(values):6.2f} s   {median / base:5.2f}x"
            f"          {ours:5.1f} s ({ours / base_cpu:4.2f}x)"
            f"   {server:5.1f} s          {(ours + server) / cores:5.2f} s"
        )
    ratio = statistics.median(seconds["s3"]) / base
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"{layout}: S3 / local = {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    return {"local": base, "s3": statistics.median(seconds["s3"])}, last_run


def measure_originals(
    size_mb: int,
    scratch: Path,
    servers: list[Seaweed],
    stores: dict[str, Callable[[str], Any]],
    repeat: int,
) -> None:
    """Receive and store an original of size_mb repeat times per store, alternating; print our
    CPU per GB for each step, the ratio of the total to the local store's, and the S3 servers'."""
    from allmicro_data.originals import place_original, spool

    source = scratch / "original.bin"
    digest = hashlib.sha256()
    with source.open("wb") as handle:
        left = size_mb << 20
        while left:
            block = random.randbytes(min(left, 16 << 20))
            digest.update(block)
            handle.write(block)
            left -= len(block)
    sha256, gb = digest.hexdigest(), (size_mb << 20) / 1e9
    spool_dir = scratch / "spool"
    print(f"original: {size_mb} MB of random bytes; {repeat} runs per store")
    steps = ("receive", "store", "S3 server")
    cpu: dict[str, dict[str, list[float]]] = {n: {s: [] for s in steps} for n in stores}
    walls: dict[str, list[float]] = {name: [] for name in stores}
    for index in range(repeat):
        for name, make in stores.items():
            shutil.rmtree(scratch / "local", ignore_errors=True)
            store = make(f"originals-{index}-{uuid.uuid4().hex[:6]}")
            # What the upload's PATCHes do to the bytes, the same for every store.
            started = _process_cpu()
            with source.open("rb") as stream:
                path, received, _ = spool(stream, spool_dir, 1 << 50)
            assert received == sha256
            before, server_before = _process_cpu(), _server_cpu(servers)
            wall = time.perf_counter()
            assert place_original(store, path, sha256, source.name)
            walls[name].append(time.perf_counter() - wall)
            cpu[name]["store"].append(_process_cpu() - before)
            cpu[name]["receive"].append(before - started)
            cpu[name]["S3 server"].append(_server_cpu(servers) - server_before)
            path.unlink(missing_ok=True)
            print(
                f"  {name:<11} run {index + 1}: store {walls[name][-1]:5.2f} s wall, CPU per GB "
                + ", ".join(f"{s} {cpu[name][s][-1] / gb:.2f} s" for s in steps)
            )
    print("CPU s/GB (medians)  receive   store   ours   ours/local   S3 server   store wall")
    base = statistics.median(cpu["local"]["receive"]) + statistics.median(cpu["local"]["store"])
    for name in stores:
        receive, store_cpu, server = (statistics.median(cpu[name][s]) / gb for s in steps)
        ours = receive + store_cpu
        print(
            f"{name:<18} {receive:7.2f} {store_cpu:7.2f} {ours:6.2f}   {ours / (base / gb):8.2f}x"
            f"   {server:9.2f}   {statistics.median(walls[name]):6.2f} s"
        )
    s3_ratio = (
        statistics.median(cpu["s3"]["receive"]) + statistics.median(cpu["s3"]["store"])
    ) / base
    verdict = "meets" if s3_ratio <= ORIGINALS_TARGET_RATIO else "misses"
    print(
        f"originals: our CPU on S3 / local = {s3_ratio:.2f}x ({verdict} the {ORIGINALS_TARGET_RATIO}x target)"
    )


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def read_alternatives(endpoint: str, run: str, s3: Callable[[str], Any]) -> None:
    """Random level-0 chunk reads through zarr: our adapter over S3Store against FsspecStore."""
    import zarr
    from zarr.storage import FsspecStore

    from allmicro_data.storage.zarr_adapter import ZarrObjectStore

    ours = ZarrObjectStore(s3(run), "image.ome.zarr/0", read_only=True)
    fsspec = FsspecStore.from_url(
        f"s3://bench/{run}/image.ome.zarr/0",
        storage_options={
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": endpoint},
        },
        read_only=True,
    )
    stores: list[tuple[str, Any]] = [
        ("ZarrObjectStore(S3Store)", ours),
        ("zarr FsspecStore (s3fs)", fsspec),
    ]
    if importlib.util.find_spec("obstore"):
        from zarr.storage import ObjectStore as ZarrObstore

        native = obstore_s3(endpoint, "bench", f"{run}/image.ome.zarr/0")
        stores.append(("zarr ObjectStore (obstore)", ZarrObstore(native, read_only=True)))
    print("\nzarr chunk reads (level 0, 200 random chunks)   p50      p95")
    for name, store in stores:
        p50, p95 = read_chunks(lambda store=store: zarr.open_array(store, mode="r"), 200)
        print(f"  {name:<44} {p50:6.1f} ms {p95:6.1f} ms")


if __name__ == "__main__":
    main()
