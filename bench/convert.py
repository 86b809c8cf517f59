"""Conversion benchmark: allmicro convert against ngff-zarr, ome-zarr-py and the physical floor, in one run."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = Path(os.environ.get("BENCH_SHARED", REPO.parent / "shared" / "bench"))
DATA = Path(os.environ.get("BENCH_DATA", "/tmp/bench-data"))
# Where the tools write (--out): beside the inputs by default.
OUT = DATA / "out"
PYTHON = sys.executable
ALLMICRO = str(Path(PYTHON).with_name("allmicro"))
MIB = 1 << 20

# What the peers are run with (shared/bench/peers/common.py): zstd level 3, NGFF 0.5.
PEER_CODEC = "zstd:3"
PEER_NGFF = "0.5"
STARTUP_IMPORTS = (
    "import allmicro_data.cli, allmicro_data.ingest.convert, allmicro_data.ingest.readers"
)


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mb: float
    size_mb: float = 0.0
    objects: int = 0
    inner: float | None = None  # seconds reported by the process itself, without start-up
    inner_cpu: float | None = None  # CPU seconds (all threads) reported likewise
    load: float = 0.0  # 1-minute load average when the process ended


# ---- inputs -----------------------------------------------------------------------------------


def make_inputs(want_big: bool) -> None:
    """The shared generator writes sem_16k*.tif and tomo.mrc; the 64k² TIFF is ours."""
    DATA.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_DATA"] = str(DATA)
    sys.path.insert(0, str(SHARED_BENCH))
    import make_inputs as shared  # type: ignore[import-not-found]

    shared.DATA = str(DATA)
    shared.write_sem()
    shared.write_tomo()
    if want_big:
        write_big_tiff(DATA / "sem_64k.tif", DATA / "sem_16k.tif")


def write_big_tiff(path: Path, source: Path, side: int = 65536, tile: int = 512) -> None:
    """65536² uint16 tiled TIFF (8 GiB), written tile by tile from the 16k² SEM image's tiles so
    that no more than one tile row is ever in memory."""
    if path.exists():
        print(f"{path.name} exists, skipping")
        return
    import tifffile

    with tifffile.TiffFile(source) as src:
        page = src.pages[0]
        offsets, counts = list(page.dataoffsets), list(page.databytecounts)
        n_src = page.imagewidth // tile
    fd = os.open(source, os.O_RDONLY)

    def tiles() -> Any:
        # The source is uncompressed, so a tile is its bytes; the order is varied so the image
        # is not one 16k² block repeated.
        for ty in range(side // tile):
            for tx in range(side // tile):
                index = ((ty * 7 + tx * 3) % n_src) * n_src + (tx * 5 + ty) % n_src
                data = os.pread(fd, counts[index], offsets[index])
                yield np.frombuffer(data, "<u2").reshape(tile, tile)

    started = time.perf_counter()
    tmp = path.with_suffix(".tmp.tif")
    try:
        tifffile.imwrite(
            tmp,
            tiles(),
            shape=(side, side),
            dtype="uint16",
            tile=(tile, tile),
            compression=None,
            photometric="minisblack",
            bigtiff=True,
        )
    finally:
        os.close(fd)
    tmp.rename(path)
    print(f"  {path.name} written in {time.perf_counter() - started:.0f}s")


# ---- running one tool -------------------------------------------------------------------------


def run_measured(cmd: list[str], out: Path | None) -> Measure:
    """Run cmd, returning wall, CPU (user+sys of the process tree's waited-for children) and
    peak RSS of the largest process."""
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    inner = inner_cpu = None
    for line in stdout.splitlines():
        if line.startswith("inner-seconds "):
            inner = float(line.split()[1])
        elif line.startswith("inner-cpu "):
            inner_cpu = float(line.split()[1])
    measure = Measure(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        inner=inner,
        inner_cpu=inner_cpu,
        load=os.getloadavg()[0],
    )
    if out is not None and out.exists():
        sizes = [p.stat().st_size for p in out.rglob("*") if p.is_file()]
        measure.size_mb, measure.objects = sum(sizes) / 1e6, len(sizes)
    return measure


def ours_command(
    src: Path, out: Path, ngff: str, codec: str | None, chunk: int | None
) -> list[str]:
    extra = ["--ngff", ngff]
    if codec:
        extra += ["--codec", codec]
    if chunk:
        extra += ["--chunk", str(chunk)]
    return [ALLMICRO, "convert", str(src), str(out), *extra]


def peer_command(name: str, src: Path, out: Path) -> list[str]:
    script = {"ngff-zarr": "ngff_zarr_convert.py", "ome-zarr-py": "omezarr_convert.py"}[name]
    return [PYTHON, str(SHARED_BENCH / "peers" / script), str(src), str(out)]


# ---- helper entry points run in their own process ---------------------------------------------


def open_series(src: Path) -> Any:
    """The series the engine converts, through the registered reader, as `allmicro convert`."""
    from allmicro_data.ingest.readers import open_image_file

    return open_image_file(src).series[0]


def floor(args: argparse.Namespace) -> None:
    """Read the input once, band by band, and compress as many bytes as the pyramid's chunks
    hold on all cores, writing nothing: what no converter can beat on this machine.

    With an output directory (the `floor+write` rows), each compressed chunk is also written
    as a file of its own there, as an NGFF 0.4 pyramid stores it: what no converter of that
    layout can beat, since it has to write them too (on this VM, creating a file and its page
    cache costs as much CPU as compressing it).
    """
    from allmicro_data.ingest.ngff import ChunkCodec, ChunkEncoder

    series = open_series(Path(args.input))
    encoder = ChunkEncoder(ChunkCodec.parse(args.codec))
    volume = bool(getattr(series, "is_volume", False))
    chunk = args.chunk or (128 if volume else 512)
    n_levels = len(_level_sides(max(series.shape), volume))
    read_into = getattr(series, "read_into", None)
    # Like the engine, recycle band buffers when the series can read into one.
    ring: list[tuple[np.ndarray[Any, Any] | None, list[Any]]] = [(None, []) for _ in range(3)]
    out = Path(args.output) if args.output else None
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    started_cpu = time.process_time()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for band_index, a0 in enumerate(range(0, series.shape[0], chunk)):
            region = [slice(a0, min(series.shape[0], a0 + chunk))]
            region += [slice(0, n) for n in series.shape[1:]]
            buffer, futures = ring[band_index % len(ring)]
            for f in futures:
                f.result()
            shape = tuple(sl.stop - sl.start for sl in region)
            if read_into is None:
                band = series.read(region)
            else:
                if buffer is None or buffer.shape != shape:
                    buffer = np.empty(shape, series.dtype)
                read_into(region, buffer)
                band = buffer
            futures = []
            for level in range(n_levels):
                step = 2**level
                view = band[::step] if volume else band
                view = view[..., ::step, ::step]
                target = None
                if out is not None:
                    target = out / str(level) / str(band_index >> level)
                futures.append(pool.submit(_compress_pieces, encoder, view, chunk, target))
            ring[band_index % len(ring)] = (buffer, futures)
        for _, futures in ring:
            for f in futures:
                f.result()
    print(f"inner-seconds {time.perf_counter() - started:.3f}")
    print(f"inner-cpu {time.process_time() - started_cpu:.3f}")
    if out is not None:
        print(f"files {sum(1 for p in out.rglob('*') if p.is_file())}")
        shutil.rmtree(out, ignore_errors=True)


def _compress_pieces(
    encoder: Any, view: np.ndarray[Any, Any], chunk: int, target: Path | None = None
) -> int:
    total = 0
    h, w = view.shape[-2:]
    for y in range(0, h, chunk):
        for x in range(0, w, chunk):
            data = encoder.encode(np.ascontiguousarray(view[..., y : y + chunk, x : x + chunk]))
            total += len(data)
            if target is not None:
                # A band holds 1 / 2**level of a chunk row of a coarser level: its pieces are
                # appended to the files of the chunks they belong to, so there are as many
                # files, holding as many bytes, as the pyramid's chunks.
                target.mkdir(parents=True, exist_ok=True)
                name = target / f"{y // chunk}.{x // chunk}"
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
    return total


def _level_sides(side: int, volume: bool) -> list[int]:
    sides = [side]
    while sides[-1] > 512:
        sides.append(-(-sides[-1] // 2))
    return sides


def compare_codecs(args: argparse.Namespace) -> None:
    """Size and single/dual-thread speed of candidate codecs on real chunks of an input."""
    from allmicro_data.ingest.ngff import ChunkCodec, ChunkEncoder

    series = open_series(Path(args.input))
    volume = bool(getattr(series, "is_volume", False))
    chunk = 128 if volume else 512
    if volume:
        block = series.read([slice(192, 192 + chunk), slice(256, 768), slice(0, 1024)])
        pieces = [
            np.ascontiguousarray(block[:, y : y + chunk, x : x + chunk])
            for y in range(0, 512, chunk)
            for x in range(0, 1024, chunk)
        ]
    else:
        block = series.read([slice(4096, 4096 + 4 * chunk), slice(None)])
        pieces = [
            np.ascontiguousarray(block[y : y + chunk, x : x + chunk])
            for y in range(0, block.shape[0], chunk)
            for x in range(0, block.shape[1], 2 * chunk)
        ]
    raw = sum(p.nbytes for p in pieces)
    print(f"{Path(args.input).name}: {len(pieces)} chunks, {raw / MIB:.0f} MiB")
    for spec in ("zstd:1", "zstd:3", "blosc-zstd:1", "blosc-zstd:3", "blosc-lz4:5"):
        encoder = ChunkEncoder(ChunkCodec.parse(spec))
        started = time.perf_counter()
        size = sum(len(encoder.encode(p)) for p in pieces)
        one = time.perf_counter() - started
        with ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            list(pool.map(encoder.encode, pieces))
            two = time.perf_counter() - started
        print(
            f"  {spec:14s} ratio {raw / size:5.2f}  1 thread {raw / one / MIB:5.0f} MiB/s"
            f"  2 threads {raw / two / MIB:5.0f} MiB/s"
        )


# ---- the comparison ---------------------------------------------------------------------------


def page_cache_write_speeds(directory: Path, size_mib: int = 2048) -> tuple[float, float]:
    """MB/s of writing a file into memory that was freed a moment ago, and into memory freed
    long enough ago (10 s) for a VM's free page reporting to have handed it back to its host.

    A host that takes freed guest memory back (virtio-balloon free page reporting, after about
    2 s) backs each page again at its next touch. Every tool's written output lands in the page
    cache, so on such a machine each one pays the gap between the two speeds for what it
    writes: the same seconds for every tool of the same output, a larger share of a faster one.
    """
    block = np.ones(1 << 20, np.uint8).tobytes()

    def write(name: str) -> float:
        path = directory / name
        started = time.perf_counter()
        with path.open("wb") as handle:
            for _ in range(size_mib):
                handle.write(block)
        seconds = time.perf_counter() - started
        path.unlink()
        return size_mib * MIB / 1e6 / seconds

    directory.mkdir(parents=True, exist_ok=True)
    write("page-cache-probe-1")  # frees size_mib of page cache, as a tool's deleted output does
    just_freed = write("page-cache-probe-2")
    time.sleep(10)
    return just_freed, write("page-cache-probe-3")


def compare(
    label: str,
    src: Path,
    tools: dict[str, tuple[Callable[[Path], list[str]], str]],
    runs: int,
    floor_cmds: dict[str, list[str]],
) -> None:
    """Run every tool and the floor of every codec runs times, interleaved, and print the table.

    tools maps a name to its command and the codec it compresses with; each tool is compared to
    the floor of that codec (the peers compress with PEER_CODEC). Walls are inflated on a loaded
    machine: the CPU columns (user + sys of the whole process tree) are what stays comparable,
    and every figure comes with the 1-minute load average it was measured at.
    """
    out_root = OUT
    out_root.mkdir(exist_ok=True)
    results: dict[str, list[Measure]] = {name: [] for name in tools}
    floors: dict[str, list[Measure]] = {codec: [] for codec in floor_cmds}
    startups: list[Measure] = []
    for run in range(runs):
        # Interpreter start and imports of `allmicro convert`, to tell engine time from wall.
        startups.append(run_measured([PYTHON, "-c", STARTUP_IMPORTS], None))
        # Interleaved, so background load hits every tool alike.
        for name, (command, _codec) in tools.items():
            out = out_root / f"{name}.zarr"
            measure = run_measured(command(out), out)
            results[name].append(measure)
            print(
                f"  run {run + 1} {name:36s} {measure.wall:6.2f} s  CPU {measure.cpu:5.1f} s"
                f"  load {measure.load:.1f}",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
        for codec, floor_cmd in floor_cmds.items():
            m = run_measured(floor_cmd, None)
            floors[codec].append(m)
            print(
                f"  run {run + 1} {'floor ' + codec:36s} {m.inner or 0:6.2f} s  CPU"
                f" {m.inner_cpu or 0:5.1f} s (in-process)  load {m.load:.1f}",
                flush=True,
            )
    med = statistics.median
    peers = [n for n in tools if n in ("ngff-zarr", "ome-zarr-py")]
    best_peer = min((med(m.wall for m in results[p]) for p in peers), default=None)
    best_peer_cpu = min((med(m.cpu for m in results[p]) for p in peers), default=None)
    floor_s = {c: med(m.inner or m.wall for m in ms) for c, ms in floors.items() if ms}
    floor_cpu = {c: med(m.inner_cpu or m.cpu for m in ms) for c, ms in floors.items() if ms}
    startup_s = med(m.wall for m in startups)
    startup_cpu = med(m.cpu for m in startups)
    loads = [m.load for ms in results.values() for m in ms]
    print(
        f"\n{label}: {src.name} ({src.stat().st_size / MIB:.0f} MiB), median of {runs};"
        f" load average {min(loads):.1f}-{max(loads):.1f} (1 min), start-up + imports"
        f" {startup_s:.2f} s wall, {startup_cpu:.2f} s CPU"
    )
    print(
        "| tool | wall s | engine s | CPU s | peak RSS MB | output MB | objects"
        " | best peer / tool (wall; CPU) | tool / floor of its codec (engine wall; engine CPU) |"
        f"\n|{' --- |' * 9}"
    )
    for name, ms in results.items():
        codec = tools[name][1]
        wall = med(m.wall for m in ms)
        cpu = med(m.cpu for m in ms)
        inner = [m.inner for m in ms if m.inner is not None]
        inner_s = med(inner) if inner else None
        if inner_s is None and name.startswith("allmicro"):
            inner_s = wall - startup_s
        speedup = ""
        if best_peer and best_peer_cpu and name not in peers:
            speedup = f"{best_peer / wall:.2f}x; {best_peer_cpu / cpu:.2f}x"
        vs_floor = ""
        if codec in floor_s and name not in peers and inner_s:
            engine_cpu = cpu - startup_cpu
            vs_floor = f"{inner_s / floor_s[codec]:.2f}; {engine_cpu / floor_cpu[codec]:.2f}"
            written = f"{codec}+write"
            if written in floor_s:
                vs_floor += (
                    f" (floor+write: {inner_s / floor_s[written]:.2f};"
                    f" {engine_cpu / floor_cpu[written]:.2f})"
                )
        print(
            f"| {name} | {wall:.2f} ({min(m.wall for m in ms):.2f}-{max(m.wall for m in ms):.2f})"
            f" | {f'{inner_s:.2f}' if inner_s else ''} | {cpu:.1f}"
            f" | {max(m.rss_mb for m in ms):.0f} | {ms[0].size_mb:.0f} | {ms[0].objects}"
            f" | {speedup} | {vs_floor} |"
        )
    for codec in floors:
        what = "read once + compress all chunks" + (", a file each" if "+write" in codec else "")
        # What a converter that ran exactly at this floor, with our start-up, would show against
        # the best peer (the +write floor appends a chunk's pieces one by one: ours beats it).
        at_floor = ""
        if best_peer is not None and best_peer_cpu is not None:
            at_floor = (
                f"{best_peer / (floor_s[codec] + startup_s):.2f}x;"
                f" {best_peer_cpu / (floor_cpu[codec] + startup_cpu):.2f}x"
            )
        print(
            f"| floor {codec} ({what}, 2 threads) | |"
            f" {floor_s[codec]:.2f} | {floor_cpu[codec]:.1f} | | | | {at_floor} | |"
        )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["sem", "sem-strips", "tomo", "big"], action="append")
    parser.add_argument("--big", action="store_true", help="also the 64k² (8 GiB) memory check")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--codecs", action="store_true", help="compare codecs and exit")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the tools write (default: BENCH_DATA/out). Each run's output is deleted"
        " before the next. On an ext4 without a journal (this VM's root filesystem) a file"
        " created within a minute of such deletions costs more to create, the more were deleted:"
        " the inode allocator steps over each recently freed inode (ext4's recently_deleted),"
        " which weighs on the layouts of many files. 1365 files of 464 MB took 0.3-1.1 s to"
        " create there against 0.13 s on an ext4 with its default journal (a loop-mounted"
        " image, `losetup --direct-io=on`), which measures the converters without that.",
    )
    args = parser.parse_args()
    global OUT
    if args.out is not None:
        OUT = args.out
    selected = set(args.only or ["sem", "sem-strips", "tomo"] + (["big"] if args.big else []))
    # In a process of its own: making the inputs grows a process to several GB, and every tool
    # started from that process afterwards would report it as its own peak RSS (a child's
    # ru_maxrss starts from what its parent had mapped when it forked).
    os.environ["BENCH_DATA"] = str(DATA)
    subprocess.run(
        [PYTHON, __file__, "_inputs", "big" if "big" in selected else "standard"], check=True
    )
    if args.codecs:
        for name in ("sem_16k.tif", "tomo.mrc"):
            subprocess.run([PYTHON, __file__, "_codecs", str(DATA / name)], check=True)
        return
    reused, handed_back = page_cache_write_speeds(OUT)
    print(
        f"page-cache writes on this machine: {reused:.0f} MB/s into memory freed a moment ago,"
        f" {handed_back:.0f} MB/s into memory freed 10 s before; each GB a tool writes costs"
        f" {1e3 / handed_back - 1e3 / reused:.2f} s more when its memory was handed back"
    )
    inputs = {
        "sem": ("16k² SEM, tiled TIFF", DATA / "sem_16k.tif", None),
        "sem-strips": ("16k² SEM, stripped TIFF", DATA / "sem_16k_strips.tif", None),
        "tomo": ("2 GiB float32 tomogram", DATA / "tomo.mrc", 128),
        "big": ("64k² uint16 tiled TIFF (memory check)", DATA / "sem_64k.tif", None),
    }
    for key, (label, src, peer_chunk) in inputs.items():
        if key not in selected:
            continue
        default_codec = "blosc-zstd:1"  # the server's default (settings.pyramid_codec)
        tools: dict[str, tuple[Callable[[Path], list[str]], str]] = {
            # Same NGFF version, chunk shape and codec as the peers (sharded: one object per
            # chunk row, same chunks inside).
            "allmicro 0.5 zstd:3": (
                lambda out, s=src, c=peer_chunk: ours_command(s, out, PEER_NGFF, PEER_CODEC, c),
                PEER_CODEC,
            ),
            "allmicro 0.4 zstd:3": (
                lambda out, s=src, c=peer_chunk: ours_command(s, out, "0.4", PEER_CODEC, c),
                PEER_CODEC,
            ),
            # The server's defaults, and its recommended layout for S3 (0.5, sharded).
            "allmicro default (0.4 blosc-zstd:1)": (
                lambda out, s=src: ours_command(s, out, "0.4", None, None),
                default_codec,
            ),
            "allmicro 0.5 sharded blosc-zstd:1": (
                lambda out, s=src: ours_command(s, out, "0.5", None, None),
                default_codec,
            ),
        }
        if key == "big":
            tools = {
                "allmicro default (0.4 blosc-zstd:1)": tools["allmicro default (0.4 blosc-zstd:1)"]
            }
        elif not args.no_peers:
            tools["ngff-zarr"] = (lambda out, s=src: peer_command("ngff-zarr", s, out), PEER_CODEC)
            tools["ome-zarr-py"] = (
                lambda out, s=src: peer_command("ome-zarr-py", s, out),
                PEER_CODEC,
            )
        floor_cmds: dict[str, list[str]] = {}
        if key != "big":
            for codec in (PEER_CODEC, default_codec):
                floor_cmds[codec] = [PYTHON, __file__, "_floor", str(src), "--codec", codec]
                if peer_chunk:
                    floor_cmds[codec] += ["--chunk", str(peer_chunk)]
            # The same, writing every chunk as a file (what an NGFF 0.4 converter must do).
            scratch = str(OUT / "floor-write")
            floor_cmds[f"{default_codec}+write"] = [
                *floor_cmds[default_codec][:3],
                str(src),
                scratch,
                *floor_cmds[default_codec][4:],
            ]
        compare(label, src, tools, 1 if key == "big" else args.runs, floor_cmds)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        helper = argparse.ArgumentParser()
        helper.add_argument("command")
        helper.add_argument("input")
        helper.add_argument("output", nargs="?")
        helper.add_argument("--ngff", default="0.4")
        helper.add_argument("--codec", default=None)
        helper.add_argument("--chunk", type=int, default=None)
        helper_args = helper.parse_args()
        helpers: dict[str, Callable[[argparse.Namespace], None]] = {
            "_floor": floor,
            "_codecs": compare_codecs,
            "_inputs": lambda a: make_inputs(a.input == "big"),
        }
        helpers[helper_args.command](helper_args)
    else:
        main()
