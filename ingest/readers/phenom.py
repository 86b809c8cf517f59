"""Thermo Fisher Phenom ELID containers (Element Identification), parsed with a bounded, vectorised stream.

An `.elid` is one bzip2 stream of a binary project: images (each an FEI-tagged TIFF) and the EDS
analyses made on them (spot, region, line, map, difference, MSA). rosettasciio's ElidReader knows
the layout; we reuse it, but its stream trusts every count it reads (a 4-byte length can ask for
4 GiB, a map's width x height x bins drives a pure-Python loop per value, and a truncated stream
loops forever waiting for input). Here every read is checked against a budget of inflated bytes
before anything is allocated, truncation is an error, and count arrays are decoded with numpy.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import io
import struct
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree import ElementTree

import numpy as np
import tifffile
from rsciio.phenom._api import ElidReader

from allmicro_data.ingest.readers.base import ReadError
from allmicro_data.ingest.readers.tiff_vendors import parse_xml

ELID_MAGIC = b"EID2"
# An ELID may inflate to this many bytes whatever its size, and to RATIO times its size beyond
# that. EDS counts compress well (mostly zero bytes), but not a thousand-fold over a whole
# project; a stream of nothing does, so a bomb stops after MIN_BUDGET bytes, in well under a second.
MIN_BUDGET = 32 * 1024**2
RATIO = 2000
_BLOCK = 1 << 20
# One member (an image's TIFF) is read whole; Phenom images are at most 4096 x 4096 in colour.
MAX_MEMBER_BYTES = 256 * 1024**2
# A bzip2 block is at most 900 kB of input, plus slack for incompressible data.
_SNIFF_CHUNK = 64 * 1024
_SNIFF_BLOCKS = 16


def bzip2_head(path: Path, want: int = 8) -> tuple[bytes, bool]:
    """The first `want` inflated bytes of a bzip2 file, and whether the file ended before them.

    bzip2 yields nothing before a whole block (up to 900 kB) is in, so a short head cannot show
    what the stream holds: the first block is inflated from the file, and at most that much is
    read."""
    decompressor = bz2.BZ2Decompressor()
    inflated = b""
    try:
        with path.open("rb") as handle:
            for _ in range(_SNIFF_BLOCKS):
                chunk = handle.read(_SNIFF_CHUNK)
                if not chunk:
                    return inflated, not decompressor.eof
                inflated += decompressor.decompress(chunk, want - len(inflated))
                if len(inflated) >= want or decompressor.eof:
                    break
    except (OSError, EOFError, ValueError):
        return inflated, False
    return inflated, False


def is_elid(head: bytes, path: Path) -> bool:
    """True when the file is a bzip2 stream whose content starts with the ELID magic."""
    return head[:3] == b"BZh" and bzip2_head(path)[0][:4] == ELID_MAGIC


class _Kept(Exception):
    """The array a re-parse was for is decoded."""


class LazyCounts:
    """The EDS counts of one map or line scan of an ELID, decoded from the file when read:
    a spectrum image is catalogued, not converted, so its counts need not sit in memory."""

    def __init__(self, path: Path, index: int, shape: tuple[int, ...]) -> None:
        self._path = path
        self._index = index
        self.shape = shape
        self.ndim = len(shape)
        self.dtype = np.dtype(np.uint32)

    def _load(self) -> np.ndarray[Any, Any]:
        kept = BoundedElidReader(self._path, keep=self._index).kept
        if kept is None:
            raise ElidError("an EDS map is no longer in the file it was opened from")
        return kept

    def __getitem__(self, key: Any) -> np.ndarray[Any, Any]:
        return self._load()[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        data = self._load()
        return data if dtype is None else data.astype(dtype)


class ElidError(ReadError):
    """A structural problem of the ELID stream; the file name is added by the caller."""


class BoundedElidReader(ElidReader):  # type: ignore[misc]
    """rosettasciio's ELID layout over a stream that refuses to inflate beyond its budget."""

    def __init__(self, path: Path, keep: int | None = None) -> None:
        """Parse the project; EDS maps and line scans are skipped and read later, when asked
        for, by parsing again with keep set to their ordinal (then only that one is decoded)."""
        # ElidReader.__init__ reads the whole project through _read; it is replaced, not called.
        self._path = path
        self._pathname = str(path)
        self._keep = keep
        self._arrays = 0
        self.kept: np.ndarray[Any, Any] | None = None
        self._budget = max(MIN_BUDGET, RATIO * path.stat().st_size)
        self._inflated = 0
        self._pending = bytearray()
        self._block_size = _BLOCK
        with path.open("rb") as handle:
            self._file: BinaryIO = handle
            self._decompressor = bz2.BZ2Decompressor()
            ident, version = struct.unpack("<4si", self._read(8))
            if ident != ELID_MAGIC:
                raise ElidError("not a Phenom ELID container (no EID2 magic)")
            if not 0 <= version <= 4:
                raise ElidError(f"ELID container version {version} is not supported (0-4 are)")
            self._version = version
            self.dictionaries: list[dict[str, Any]] = []
            # _Kept: the one array asked for is decoded; the rest of the file is not needed.
            with contextlib.suppress(_Kept):
                self.dictionaries = self._read_Project()

    @property
    def version(self) -> int:
        return int(self._version)

    # --- the stream -------------------------------------------------------------------------

    def _remaining(self) -> int:
        return self._budget - self._inflated + len(self._pending)

    def _claim(self, nbytes: int, what: str) -> None:
        """Refuse before inflating or allocating what the stream cannot legitimately hold."""
        if nbytes > self._remaining():
            raise ElidError(
                f"{what} declares {nbytes:,} bytes, more than the {self._budget:,} bytes this "
                "file may inflate to (decompression bomb or corrupt container)"
            )

    def _more(self) -> None:
        """Inflate the next piece of the stream into the pending buffer."""
        if self._decompressor.eof:
            raise ElidError("the container ends before its contents do (truncated)")
        chunk = b""
        if self._decompressor.needs_input:
            chunk = self._file.read(self._block_size)
            if not chunk:
                raise ElidError("the compressed stream is truncated")
        try:
            got = self._decompressor.decompress(chunk, _BLOCK)
        except OSError as exc:
            raise ElidError(f"the compressed stream is corrupt ({exc})") from exc
        self._inflated += len(got)
        if self._inflated > self._budget:
            raise ElidError(
                f"inflates beyond {self._budget:,} bytes, far more than its size allows "
                "(decompression bomb)"
            )
        self._pending += got

    def _read(self, size: int = 1) -> bytes:
        self._claim(size, "a member")
        if size > MAX_MEMBER_BYTES:
            raise ElidError(
                f"a member declares {size:,} bytes, more than any Phenom image holds "
                f"({MAX_MEMBER_BYTES:,}; decompression bomb or corrupt container)"
            )
        while len(self._pending) < size:
            self._more()
        out = bytes(self._pending[:size])
        del self._pending[:size]
        return out

    def _count(self, item_bytes: int, what: str) -> int:
        n = int(self._read_uint32())
        self._claim(n * item_bytes, what)
        return n

    # --- arrays, vectorised -----------------------------------------------------------------

    def _read_varuint32_array(self, count: int, *, keep: bool = True) -> np.ndarray[Any, Any]:
        """count LEB128 unsigned integers (EDS counts), decoded a buffer at a time; with keep
        False they are only stepped over (nothing of their size is allocated)."""
        self._claim(count, "an EDS count array")
        out = np.empty(count if keep else 0, dtype=np.uint32)
        done = 0
        while done < count:
            # A copy: the pending buffer is resized below, which an exported view forbids.
            buffer = np.array(self._pending, dtype=np.uint8)
            ends = np.flatnonzero(buffer < 128)
            take = min(count - done, len(ends))
            if take == 0:
                if len(buffer) > 5:
                    raise ElidError("an EDS count is longer than 32 bits (corrupt container)")
                self._more()
                continue
            used = int(ends[take - 1]) + 1
            if not keep:
                done += take
                del self._pending[:used]
                continue
            starts = np.concatenate(([0], ends[: take - 1] + 1))
            lengths = ends[:take] - starts + 1
            if int(lengths.max()) > 5:
                raise ElidError("an EDS count is longer than 32 bits (corrupt container)")
            group = np.repeat(np.arange(take), lengths)
            shift = 7 * (np.arange(used) - starts[group])
            parts = (buffer[:used] & 127).astype(np.uint64) << shift.astype(np.uint64)
            out[done : done + take] = np.add.reduceat(parts, starts).astype(np.uint32)
            done += take
            del self._pending[:used]
        return out

    def _read_array(self, dtype: str, count: int) -> np.ndarray[Any, Any]:
        item = np.dtype(dtype).itemsize
        self._claim(count * item, "an array")
        return np.frombuffer(self._read(count * item), dtype=dtype).copy()

    def _read_int32s(self) -> list[int]:
        return [int(v) for v in self._read_array("<i4", self._count(4, "a list"))]

    def _read_float64s(self) -> list[float]:
        return [float(v) for v in self._read_array("<f8", self._count(8, "a list"))]

    def _read_uint8s(self) -> list[int]:
        return [int(v) for v in self._read_array("u1", self._count(1, "a list"))]

    def _read_oxides(self) -> list[str]:
        return [self._read_oxide() for _ in range(self._count(3, "an oxide list"))]

    def _read_element_families(self) -> list[tuple[str, str]]:
        n = self._count(2, "an element list")
        return [self._read_element_family() for _ in range(n)]

    def _read_ConstructiveAnalysisSources(self) -> list[tuple[int, float]]:  # noqa: N802
        n = self._count(12, "a source list")
        return [self._read_ConstructiveAnalysisSource() for _ in range(n)]

    def _read_spectrum(self) -> tuple[float, float, list[int]]:
        offset = self._read_float64()
        dispersion = self._read_float64()
        n = self._count(1, "a spectrum")
        return offset, dispersion, self._read_varuint32_array(n).tolist()

    def _get_local_time_zone(self) -> None:
        # rosettasciio names the zone of the computer reading the file; the ELID states none.
        return None

    def _read_tiff(self) -> tuple[dict[str, Any] | None, np.ndarray[Any, Any] | None]:
        n = self._count(1, "an image")
        if n == 0:
            return (None, None)
        with tifffile.TiffFile(io.BytesIO(self._read(n))) as tiff:
            series = tiff.series[0]
            # Phenom stores its TIFFs uncompressed: pixels far beyond the member's bytes are a lie.
            self._claim(int(np.prod(series.shape)) * series.dtype.itemsize - 64 * n, "an image")
            data = tiff.asarray()
            tags = tiff.pages.first.tags
            xml = tags["FEI_TITAN"].value if "FEI_TITAN" in tags else None
        if data.ndim > 2:
            from rsciio.utils import rgb

            data = rgb.regular_array2rgbx(data)
        root = parse_xml(xml) if isinstance(xml, str) else None
        if root is None:
            return ({}, data)
        metadata = _element_dict(root).get("FeiImage") or {}
        try:
            field = max(
                self._get_value_with_unit(metadata["pixelHeight"]) * data.shape[0],
                self._get_value_with_unit(metadata["pixelWidth"]) * data.shape[1],
            )
            metadata.setdefault("acquisition", {}).setdefault("scan", {})["fieldSize"] = field
        except (KeyError, TypeError, ValueError):
            pass  # an image without its pixel size keeps its other keys
        return (metadata, data)

    # --- analyses whose per-value loops are replaced ------------------------------------------

    def _counts(self, shape: tuple[int, ...], what: str) -> Any:
        """The counts of a map or line scan: stepped over now and read when asked for, or, when
        parsing for this one, decoded and handed up (parsing stops there)."""
        count = int(np.prod(shape))
        self._claim(count, what)
        index = self._arrays
        self._arrays += 1
        if self._keep == index:
            self.kept = self._read_varuint32_array(count).reshape(shape)
            raise _Kept
        self._read_varuint32_array(count, keep=False)
        return LazyCounts(self._path, index, shape)

    def _read_times(
        self, shape: tuple[int, ...], variable_real: bool, variable_live: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Real and live time per point: an array each when variable, else one value."""
        count = int(np.prod(shape))
        times = []
        for variable in (variable_real, variable_live):
            if variable:
                times.append(self._read_array("<f8", count).reshape(shape))
            else:
                times.append(np.full(shape, self._read_float64()))
        return times[0], times[1]

    def _read_LineScanAnalysis(self, label: str, am: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        om, _ = self._read_CommonAnalysis(am)
        eds = om["acquisition"]["scan"]["detectors"]["EDS"]
        x1, y1, x2, y2 = (self._read_float64() for _ in range(4))
        size = self._read_uint32()
        bins = self._read_uint32()
        offset = self._read_float64()
        dispersion = self._read_float64()
        line = self._read_eds_metadata(am)
        line.update(live_time=eds["live_time"], real_time=eds["real_time"])
        line.update(begin={"x": x1, "y": y1}, end={"x": x2, "y": y2})
        line.update(offset=offset, dispersion=dispersion)
        variable = (self._read_bool(), self._read_bool())
        data = self._counts((size, bins), "a line scan")
        real, live = self._read_times((size,), *variable)
        line["real_time_values"] = real.tolist()
        line["live_time_values"] = live.tolist()
        line["high_accuracy_quantification"] = self._read_bool()
        metadata = _with_eds(am, line)
        title = f"{label}, Line {eds['order_nr']}"
        return self._make_line_spectrum_dict(  # type: ignore[no-any-return]
            metadata, eds["offset"], eds["dispersion"], data, title
        )

    def _read_MapAnalysis(self, label: str, am: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        om, _ = self._read_CommonAnalysis(am)
        eds = om["acquisition"]["scan"]["detectors"]["EDS"]
        left, top, right, bottom = (self._read_float64() for _ in range(4))
        self._read_float64s()  # colour intensities of the map display
        width = self._read_uint32()
        height = self._read_uint32()
        bins = self._read_uint32()
        self._read_float64()  # offset and dispersion repeat the sum spectrum's
        self._read_float64()
        mapped = self._read_eds_metadata(am)
        mapped.update(live_time=eds["live_time"], real_time=eds["real_time"])
        mapped["rectangle"] = {"left": left, "top": top, "right": right, "bottom": bottom}
        variable = (self._read_bool(), self._read_bool())
        data = self._counts((height, width, bins), "an EDS map")
        real, live = self._read_times((height, width), *variable)
        mapped["real_time_range"] = [float(real.min()), float(real.max())] if real.size else []
        mapped["live_time_range"] = [float(live.min()), float(live.max())] if live.size else []
        metadata = _with_eds(am, mapped)
        title = f"{label}, Map {eds['order_nr']}"
        return self._make_map_spectrum_dict(  # type: ignore[no-any-return]
            metadata, eds["offset"], eds["dispersion"], data, title
        )

    def _read_Image(self) -> list[dict[str, Any]]:  # noqa: N802
        tiff = self._read_tiff()
        label = self._read_string()
        found: list[dict[str, Any]] = []
        if tiff[1] is not None:
            found.append(self._make_image_dict(tiff[0] or {}, tiff[1], label))
        found.extend(a for a in self._read_Analyses(label, tiff[0] or {}) if a)
        return found


def _element_dict(element: ElementTree.Element) -> dict[str, Any]:
    """The FEI XML as rosettasciio presents it: leaves with attributes become {value, attr...}."""
    if len(element) == 0:
        if element.items():
            return {element.tag: {"value": element.text, **dict(element.items())}}
        return {element.tag: element.text}
    children: dict[str, Any] = {}
    for child in element:
        children.update(_element_dict(child))
    return {element.tag: children}


def _with_eds(am: dict[str, Any], eds: dict[str, Any]) -> dict[str, Any]:
    metadata = copy.deepcopy(am) if am else {}
    scan = metadata.setdefault("acquisition", {}).setdefault("scan", {})
    scan.setdefault("detectors", {})["EDS"] = eds
    return metadata


def read_elid(path: Path) -> tuple[int, list[dict[str, Any]]]:
    """The container version and every image and analysis in it, as rosettasciio signal dicts."""
    reader = BoundedElidReader(path)
    return reader.version, reader.dictionaries
