"""Hostile input ends in a one-line ReadError naming the file, within 5 s and 200 MB, never a crash."""

from __future__ import annotations

import bz2
import gzip
import json
import random
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pytest
import tifffile

from tests.conftest import SAMPLES

MAX_SECONDS = 5.0
MAX_EXTRA_BYTES = 200 * 1024 * 1024


def _tiff_declaring(path: Path, width: int, height: int, strip_bytes: int) -> None:
    """A little-endian classic TIFF whose single IFD declares width x height 8-bit pixels."""
    tags = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 0),  # StripOffsets, patched below
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, strip_bytes),  # StripByteCounts
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(tags) + 4
    data_offset = ifd_offset + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(tags))
    for code, kind, count, value in tags:
        value = data_offset if code == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", code, kind, count) + packed
    out += struct.pack("<I", 0)
    out += bytes(strip_bytes)
    path.write_bytes(bytes(out))


def _mrc_header(nx: int, ny: int, nz: int, mode: int = 2) -> bytes:
    header = bytearray(1024)
    struct.pack_into("<4i", header, 0, nx, ny, nz, mode)
    struct.pack_into("<3i", header, 28, nx, ny, nz)  # mx, my, mz
    struct.pack_into("<3f", header, 40, float(nx), float(ny), float(nz))  # cell in Å
    struct.pack_into("<3i", header, 64, 1, 2, 3)  # mapc, mapr, maps
    header[208:212] = b"MAP "
    header[212:216] = b"\x44\x44\x00\x00"
    return bytes(header)


def _gzip_of_zeros(path: Path, prefix: bytes, inflated: int) -> None:
    """A gzip member of prefix + zeros, built by repeating one fully flushed deflate block, so
    a 10 GB stream costs milliseconds to make. Deflate's ratio caps at ~1030:1, hence ~10 MB."""
    block_size = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(block_size)) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.flush(zlib.Z_FINISH)
    count = (inflated - len(prefix)) // block_size
    with path.open("wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        out.write(head)
        for _ in range(count):
            out.write(block)
        out.write(tail)
        # The CRC is not worth computing over 10 GB: a reader must stop long before the trailer.
        out.write(struct.pack("<II", 0, (len(prefix) + count * block_size) & 0xFFFFFFFF))


def _elid_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """Phenom ELID containers (one bzip2 stream): cut, with an empty image member, and a bomb."""
    project = bz2.decompress((SAMPLES / "phenom" / "Elid2Version1.elid").read_bytes())
    cases: dict[str, tuple[Path, str]] = {}
    cut = root / "cut.elid"
    # Small bzip2 blocks: the first is whole (the content shows ELID), the stream is not.
    whole = bz2.compress(project, 1)
    cut.write_bytes(whole[: len(whole) * 3 // 5])
    cases["truncated Phenom ELID"] = (cut, "truncated")
    head = b"EID2" + struct.pack("<iI", 1, 1)  # version 1, one image
    empty = root / "empty-member.elid"
    # The image's TIFF member and label are zero-length; no analyses, no project analyses.
    empty.write_bytes(bz2.compress(head + struct.pack("<5I", 0, 0, 0, 0, 0)))
    cases["Phenom ELID with a zero-length image member"] = (empty, "no data")
    bomb = root / "bomb.elid"
    # Like a ZIP bomb: a member declaring 4 GB, then gigabytes of compressed zeros.
    bomb.write_bytes(
        bz2.compress(head + struct.pack("<I", 0xFFFFFFF0) + bytes(1 << 20), 1)
        + bz2.compress(bytes(64 << 20), 1) * 160
    )
    cases["bzip2 bomb inside a Phenom ELID"] = (bomb, "bomb")
    return cases


def _jeol_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """JEOL Analysis Station images: cut inside the header, and one declaring 10^5 x 10^5."""
    image = (SAMPLES / "jeol" / "Dummy-Data_0000000.img").read_bytes()
    cases: dict[str, tuple[Path, str]] = {}
    cut = root / "cut.img"
    cut.write_bytes(image[: len(image) // 2])
    cases["truncated JEOL image"] = (cut, "truncated")
    # The Image.Size key of the tree rosettasciio reads (the last copy): name, type and length
    # (uint32 each), then width and height.
    at = image.rindex(b"Size\x00") + len(b"Size\x00") + 8
    liar = root / "liar.img"
    liar.write_bytes(image[:at] + struct.pack("<2I", 100_000, 100_000) + image[at + 8 :])
    cases["JEOL image declaring 10^5 x 10^5"] = (liar, "declares")
    return cases


def _detector_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """4D-STEM detector files cut short, and a Merlin frame header with nothing after it."""
    mib = (SAMPLES / "quantumdetector" / "Single_9_Frame_CounterDepth_12_Rows_256.mib").read_bytes()
    blo = (SAMPLES / "blockfile" / "test1.blo").read_bytes()
    cases: dict[str, tuple[Path, str]] = {}
    cut_mib = root / "cut.mib"
    cut_mib.write_bytes(mib[: len(mib) * 2 // 3 + 1000])  # inside the seventh frame
    cases["truncated Merlin MIB"] = (cut_mib, "truncated")
    header_only = root / "header-only.mib"
    header_only.write_bytes(mib[:384])  # one frame header, zero bytes of counts
    cases["Merlin MIB with a zero-length frame"] = (header_only, "MIB")
    cut_blo = root / "cut.blo"
    cut_blo.write_bytes(blo[: len(blo) // 2])
    cases["truncated NanoMegas blockfile"] = (cut_blo, "truncated")
    return cases


def _make_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the error must contain)."""
    rng = random.Random(20241021)
    cases: dict[str, tuple[Path, str]] = {}

    empty = root / "empty.tif"
    empty.write_bytes(b"")
    cases["zero bytes"] = (empty, "empty")

    for suffix in ("tif", "mrc", "dm4"):
        noise = root / f"noise.{suffix}"
        noise.write_bytes(rng.randbytes(64 * 1024))
        cases[f"random bytes .{suffix}"] = (noise, "unrecognised")

    whole = root / "whole.tif"
    tifffile.imwrite(whole, np.arange(512 * 512, dtype=np.uint16).reshape(512, 512))
    truncated = root / "truncated.tif"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    cases["truncated TIFF"] = (truncated, "truncated")

    huge = root / "huge.tif"
    _tiff_declaring(huge, 10**6, 10**6, 4096)
    cases["TIFF declaring 10^6 x 10^6"] = (huge, "1000000")

    good = root / "good.mrc"
    with mrcfile.new(good) as mrc:
        mrc.set_data(np.zeros((8, 64, 64), dtype=np.float32))
    short = root / "short.mrc"
    short.write_bytes(good.read_bytes()[: 1024 + 8 * 64 * 64 * 2])
    cases["MRC shorter than its header says"] = (short, "declares")

    giant = root / "giant.mrc"
    giant.write_bytes(_mrc_header(100_000, 100_000, 1000) + bytes(4096))
    cases["MRC header declaring 40 TB"] = (giant, "declares")

    bomb = root / "bomb.mrc.gz"
    _gzip_of_zeros(bomb, _mrc_header(50_000, 50_000, 1), 10 * 1024**3)
    cases["gzip bomb, header declaring its 10 GB"] = (bomb, "bomb")

    liar = root / "liar.mrc.gz"
    _gzip_of_zeros(liar, _mrc_header(64, 64, 64), 10 * 1024**3)
    cases["gzip bomb, header declaring 1 MB"] = (liar, "bomb")

    zeros = root / "zeros.mrc.gz"
    _gzip_of_zeros(zeros, b"", 10 * 1024**3)
    cases["gzip bomb of zeros"] = (zeros, "gzip")

    # bzip2 has no ratio cap: 10 GB of zeros fit in a few kilobytes of concatenated streams.
    zeros_64m = bz2.compress(bytes(64 << 20), 1)
    bz_bomb = root / "bomb.mrc.bz2"
    bz_bomb.write_bytes(bz2.compress(_mrc_header(64, 64, 64), 1) + zeros_64m * 160)
    cases["bzip2 bomb, header declaring 1 MB"] = (bz_bomb, "bomb")
    cases.update(_elid_cases(root))
    cases.update(_jeol_cases(root))

    small = root / "small-bomb.tif.gz"
    small.write_bytes(gzip.compress(bytes(1 << 20)))
    cases["gzip named .tif.gz"] = (small, "gzip")

    lif = (SAMPLES / "leica" / "LeicaLASX_wavelength-sweep_example.lif").read_bytes()
    lif_cut = root / "cut.lif"
    lif_cut.write_bytes(lif[: len(lif) // 2])
    cases["truncated LIF"] = (lif_cut, "truncated")
    lif_header = root / "header-cut.lif"
    lif_header.write_bytes(lif[:2000])  # inside the XML header
    cases["LIF cut inside its XML header"] = (lif_header, "LIF")
    for sample, word in (
        ("nikon/cluster.nd2", "truncated"),
        ("zeiss-czi/two_scenes_mosaic.czi", "CZI"),
    ):
        data = (SAMPLES / sample).read_bytes()
        cut = root / f"cut{Path(sample).suffix}"
        cut.write_bytes(data[: len(data) // 2])
        cases[f"truncated {Path(sample).suffix}"] = (cut, word)
        empty = root / f"empty{Path(sample).suffix}"
        empty.write_bytes(b"")
        cases[f"zero-length {Path(sample).suffix}"] = (empty, "empty")
    cases.update(_detector_cases(root))
    return cases


# Runs in a fresh interpreter so a crash, a leak or an allocation storm cannot hit pytest, and
# so peak memory is the process' own: VmHWM is reset before each case (Linux clear_refs 5).
_PROBE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from allmicro_data.ingest.readers import ReadError, open_image_file

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    results = {}
    for name, path in json.loads(sys.argv[1]).items():
        Path("/proc/self/clear_refs").write_text("5")
        base = status("VmRSS")
        start = time.monotonic()
        outcome = {"error": None, "kind": None}
        try:
            with open_image_file(Path(path)) as image_file:
                series = image_file.series[image_file.primary_series]
                series.read(tuple(slice(0, min(n, 256)) for n in series.shape))
            outcome["kind"] = "opened"
        except ReadError as exc:
            outcome["kind"] = "ReadError"
            outcome["error"] = str(exc)
        except BaseException as exc:
            outcome["kind"] = type(exc).__name__
            outcome["error"] = str(exc)
        outcome["seconds"] = time.monotonic() - start
        outcome["extra_bytes"] = status("VmHWM") - base
        results[name] = outcome
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    cases = _make_cases(root)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps({k: str(p) for k, (p, _) in cases.items()})],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (path, word) in cases.items():
        results[name]["file"] = path.name
        results[name]["word"] = word
    return results


CASE_NAMES = [
    "zero bytes",
    "random bytes .tif",
    "random bytes .mrc",
    "random bytes .dm4",
    "truncated TIFF",
    "TIFF declaring 10^6 x 10^6",
    "MRC shorter than its header says",
    "MRC header declaring 40 TB",
    "gzip bomb, header declaring its 10 GB",
    "gzip bomb, header declaring 1 MB",
    "gzip bomb of zeros",
    "bzip2 bomb, header declaring 1 MB",
    "truncated Phenom ELID",
    "Phenom ELID with a zero-length image member",
    "bzip2 bomb inside a Phenom ELID",
    "truncated JEOL image",
    "JEOL image declaring 10^5 x 10^5",
    "gzip named .tif.gz",
    "truncated LIF",
    "LIF cut inside its XML header",
    "truncated .nd2",
    "zero-length .nd2",
    "truncated .czi",
    "zero-length .czi",
    "truncated Merlin MIB",
    "Merlin MIB with a zero-length frame",
    "truncated NanoMegas blockfile",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_hostile_file_fails_cleanly_fast_and_small(outcomes: dict[str, Any], case: str) -> None:
    outcome = outcomes[case]
    assert outcome["kind"] == "ReadError", outcome
    message = outcome["error"]
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(outcome["file"] + ":"), message
    assert outcome["word"].lower() in message.lower(), message
    assert outcome["seconds"] < MAX_SECONDS, outcome
    assert outcome["extra_bytes"] < MAX_EXTRA_BYTES, outcome
