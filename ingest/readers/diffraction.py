"""4D-STEM and diffraction-detector files (Merlin MIB + .hdr, NanoMegas blockfile, EMPAD .xml + .raw): scan and detector geometry, shown as a virtual bright field summed by streaming."""

from __future__ import annotations

import importlib
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from allmicro_data.ingest.readers.base import (
    Acquisition,
    ImageFile,
    PixelSize,
    Reader,
    ReadError,
    Series,
)
from allmicro_data.ingest.readers.normalise import (
    as_float,
    dig,
    from_unix,
    jsonable,
    length_factor,
    parse_datetime,
    positive,
    text_or_none,
)

MIB_MAGIC = b"MQ1,"
BLOCKFILE_MAGIC = b"IMGBLO"


# An EMPAD frame: 128 x 128 float32 counts and two footer rows.
EMPAD_FRAME_BYTES = 130 * 128 * 4


def _is_empad_xml(head: bytes) -> bool:
    """The EMPAD acquisition XML: a <root> naming its raw file, with the camera server's
    state (EMPAD's own software writes no namespace or magic)."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return text.startswith(b"<root") and b"<raw_file " in text and b"<camserver_" in text


def plugin_for(head: bytes) -> tuple[str, str] | None:
    """(rosettasciio plugin, format name) shown by the content, or None."""
    if head.startswith(MIB_MAGIC):
        return "quantumdetector", "Quantum Detectors Merlin MIB"
    if head.startswith(BLOCKFILE_MAGIC):
        return "blockfile", "NanoMegas blockfile"
    if _is_empad_xml(head):
        return "empad", "EMPAD"
    return None


def sum_dtype(dtype: np.dtype[Any], detector_pixels: int) -> np.dtype[Any]:
    """The narrowest type OME and the pyramid know that holds a frame's sum exactly."""
    if dtype.kind in "ub":
        top = 1 if dtype.kind == "b" else int(np.iinfo(dtype).max)
        if top * detector_pixels <= np.iinfo(np.uint32).max:
            return np.dtype("uint32")
    # float64 is exact for integer sums below 2**53, far beyond any detector's frame.
    return np.dtype("float64")


def _axis_length(axis: Mapping[str, Any]) -> float | None:
    """The axis step in metres, when its unit is a length."""
    factor = length_factor(text_or_none(axis.get("units")))
    scale = positive(as_float(axis.get("scale")))
    return scale * factor if factor is not None and scale is not None else None


def _calibration(axis: Mapping[str, Any]) -> dict[str, Any] | None:
    scale, unit = as_float(axis.get("scale")), text_or_none(axis.get("units"))
    if scale is None or not unit:
        return None
    return {"scale": scale, "unit": unit}


class VirtualImage(Series):
    """The sum over the detector plane at each scan position (a virtual bright field), or the
    detector frame itself when the file holds one frame. Sums are made one scan row at a time,
    so memory holds one row of frames, never the 4D array."""

    def __init__(
        self,
        data: Any,
        axes: Sequence[Mapping[str, Any]],
        *,
        file_name: str,
        fmt: str,
    ) -> None:
        super().__init__()
        self._file_name = file_name
        self._format = fmt
        self._data = data
        self._rows: dict[int, np.ndarray[Any, Any]] = {}
        nav = [a for a in axes if a.get("navigate")]
        sig = [a for a in axes if not a.get("navigate")]
        if len(sig) != 2 or len(nav) > 2 or len(nav) + 2 != data.ndim:
            raise ReadError(f"{file_name}: {fmt} data of shape {data.shape} is not 4D-STEM")
        self._nav_ndim = len(nav)
        native = np.dtype(data.dtype).newbyteorder("=")
        detector_shape = [int(n) for n in data.shape[-2:]]
        scan_shape = [int(n) for n in data.shape[: len(nav)]]
        geometry: dict[str, Any] = {
            "scan_shape": scan_shape,
            "detector_shape": detector_shape,
            "detector_dtype": str(native),
        }
        scan_steps = [_calibration(a) for a in nav]
        if any(scan_steps):
            geometry["scan_step"] = scan_steps
        detector_steps = [_calibration(a) for a in sig]
        if any(detector_steps):
            geometry["detector_pixel"] = detector_steps
        self.vendor["geometry"] = geometry
        if nav:
            self.name = "virtual bright field (sum over the detector)"
            self.dtype = sum_dtype(native, detector_shape[0] * detector_shape[1])
            # A line scan (or a frame series) is one row of scan positions.
            self.shape = (scan_shape[0], scan_shape[1]) if len(nav) == 2 else (1, scan_shape[0])
            steps = [_axis_length(a) for a in nav]
            if len(nav) == 2:
                self.pixel_size = PixelSize(x=steps[1], y=steps[0])
            else:
                self.pixel_size = PixelSize(x=steps[0])
            self.vendor["derived"] = "sum over the detector axes of every frame"
            self.warnings.append(
                f"4D-STEM dataset (scan {' x '.join(map(str, scan_shape))}, detector "
                f"{detector_shape[0]} x {detector_shape[1]}): shown as its virtual bright field; "
                "the frames are in the original file"
            )
        else:
            self.name = "diffraction pattern"
            self.dtype = native
            self.shape = (detector_shape[0], detector_shape[1])
            for letter, axis in zip("yx", sig, strict=True):
                cal = _calibration(axis)
                if cal is not None and not (cal["scale"] == 1.0 and not cal["unit"]):
                    self.axis_calibration[letter] = (cal["scale"], cal["unit"])
        self.axes = "yx"

    def _row_sums(self, row: int) -> np.ndarray[Any, Any]:
        """Sums of one scan row (all its columns), computed once."""
        cached = self._rows.get(row)
        if cached is None:
            frames = self._data[row] if self._nav_ndim == 2 else self._data
            if hasattr(frames, "compute"):
                frames = frames.compute(scheduler="synchronous")
            frames = np.asarray(frames)
            cached = frames.sum(axis=(-2, -1), dtype=self.dtype).astype(self.dtype)
            self._rows[row] = cached
        return cached

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        (ys, xs) = self.normalise_region(region)
        try:
            if self._nav_ndim == 0:
                block = self._data[ys, xs]
                if hasattr(block, "compute"):
                    block = block.compute(scheduler="synchronous")
                return np.asarray(block).astype(self.dtype)
            out = np.empty((ys.stop - ys.start, xs.stop - xs.start), self.dtype)
            for index, row in enumerate(range(ys.start, ys.stop)):
                out[index] = self._row_sums(row)[xs]
            return out
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(
                f"{self._file_name}: cannot read {self._format} frames ({exc})"
            ) from exc


def _merlin_acquisition(original: Mapping[str, Any], scanning: bool) -> Acquisition:
    acq = Acquisition(vendor="Quantum Detectors")
    chip = text_or_none(
        dig(original, "hdr_file", "Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX)")
    )
    assembly = text_or_none(dig(original, "mib_properties", "assembly_size"))
    acq.detector = " ".join(filter(None, ["Merlin", chip, f"({assembly})" if assembly else None]))
    acq.instrument = "Merlin"
    stamp = text_or_none(dig(original, "mib_properties", "timestamp"))
    acq.acquired_at = parse_datetime(stamp, ()) if stamp else None
    # The MIB frame header's shutter time: the exposure of each frame, i.e. the dwell per probe
    # position when the frames follow a scan.
    exposure = positive(as_float(dig(original, "mib_properties", "exposure")))
    acq.exposure_time = exposure * 1e-3 if exposure else None
    if scanning:
        acq.modality = "STEM"
        acq.dwell_time = acq.exposure_time
    return acq


def _empad_acquisition(original: Mapping[str, Any]) -> Acquisition:
    root = original.get("root") or {}
    iom = root.get("iom_measurements") or {}
    acq = Acquisition(vendor="Thermo Fisher Scientific", detector="EMPAD")
    if str(iom.get("is_column_in_stem_mode", "")).strip() == "True":
        acq.modality = "STEM"
    acq.accelerating_voltage = positive(as_float(iom.get("high_voltage")))  # volts
    acq.camera_length = positive(as_float(iom.get("nominal_camera_length")))  # metres
    acq.spot_size = positive(as_float(iom.get("spot_size_index")))
    acq.acquired_at = from_unix(dig(root, "timestamp", "timestamp"))
    return acq


def _blockfile_acquisition(original: Mapping[str, Any], warnings: list[str]) -> Acquisition:
    header = original.get("blockfile_header") or {}
    acq = Acquisition(vendor="NanoMegas", modality="STEM")
    volts = positive(as_float(header.get("Beam_energy")))  # the header states volts
    acq.accelerating_voltage = volts
    # Days since 1899-12-30 (an OLE date), the PC's local time: the file has no zone.
    days = as_float(header.get("Acquisition_time"))
    if days is not None and 0 < days < 2958466:
        from datetime import datetime, timedelta

        acq.acquired_at = datetime(1899, 12, 30) + timedelta(days=days)
    if header.get("Camera_length") not in (None, "", "0", 0):
        # Writers disagree on its unit (the format notes say 10 x mm, rosettasciio scales by
        # 1e-4): kept as the file has it, not turned into metres.
        warnings.append(
            f"camera length {header.get('Camera_length')} is kept as the file states it: "
            "its unit is not recorded"
        )
    return acq


class DiffractionFile(ImageFile):
    def __init__(self, path: Path, companions: Sequence[Path], plugin: str, fmt: str) -> None:
        super().__init__(path)
        self.format = fmt
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        target = path
        if plugin == "quantumdetector":
            target = self._merlin_pair(path, companions)
        elif plugin == "empad":
            target = self._empad_pair(path, companions)
        reader = importlib.import_module(f"rsciio.{plugin}").file_reader
        try:
            signals = reader(str(target), lazy=True)
        except Exception as exc:
            self.close()
            raise ReadError(
                f"{path.name}: broken {fmt} file ({type(exc).__name__}: {exc})"
            ) from exc
        if not signals:
            self.close()
            raise ReadError(f"{path.name}: {fmt} file holds no frames")
        signal = signals[0]
        axes = sorted(signal.get("axes") or [], key=lambda a: a.get("index_in_array", 0))
        original = signal.get("original_metadata") or {}
        try:
            if plugin == "quantumdetector":
                _check_whole_frames(path, original)
            _check_last_pixel(path, fmt, signal["data"])
            series = VirtualImage(signal["data"], axes, file_name=path.name, fmt=fmt)
        except ReadError:
            self.close()
            raise
        scanning = series.name.startswith("virtual")
        if plugin == "quantumdetector":
            series.acquisition = _merlin_acquisition(original, scanning)
        elif plugin == "empad":
            series.acquisition = _empad_acquisition(original)
        else:
            series.acquisition = _blockfile_acquisition(original, series.warnings)
        props = original.get("mib_properties")
        if isinstance(props, dict):
            # Where rosettasciio opened the file: a temporary directory of this process, which
            # the file does not say and which is no one's business outside the server.
            props.pop("path", None)
        series.vendor["original_metadata"] = jsonable(original)
        series.vendor["axes"] = jsonable(axes)
        self.series.append(series)

    def _merlin_pair(self, path: Path, companions: Sequence[Path]) -> Path:
        """rosettasciio finds a MIB's header as '<stem>.hdr' beside it; originals in the store
        have content-addressed names, so lay the pair out under matching names."""
        hdrs = [c for c in companions if _is_merlin_header(c)]
        if not hdrs:
            self.warnings.append(
                "Merlin .mib read without its .hdr: the chip and threshold settings are in the .hdr"
            )
            return path
        self._workdir = tempfile.TemporaryDirectory(prefix="allmicro-merlin-")
        root = Path(self._workdir.name)
        (root / "acquisition.mib").symlink_to(path.resolve())
        (root / "acquisition.hdr").symlink_to(hdrs[0].resolve())
        return root / "acquisition.mib"

    def _empad_pair(self, path: Path, companions: Sequence[Path]) -> Path:
        """rosettasciio opens the raw file the XML names, beside it: lay the XML and the
        companion that is whole EMPAD frames out under those names."""
        match = re.search(rb'<raw_file filename="([^"/\\]+)"', path.read_bytes()[:1_000_000])
        # Whole frames first; a cut raw file is still taken, to fail as truncated below.
        raws = sorted(
            (c for c in companions if _is_raw_data(c)), key=lambda c: not _whole_empad_frames(c)
        )
        if match is None or not raws:
            raise ReadError(
                f"{path.name}: an EMPAD .xml holds metadata only; upload the .raw it names with it"
            )
        name = match.group(1).decode("utf-8", "replace")
        if name in (".", "..") or not name.strip():
            raise ReadError(f"{path.name}: EMPAD raw file name {name!r} is not a file name")
        self._workdir = tempfile.TemporaryDirectory(prefix="allmicro-empad-")
        root = Path(self._workdir.name)
        (root / "acquisition.xml").symlink_to(path.resolve())
        (root / name).symlink_to(raws[0].resolve())
        return root / "acquisition.xml"

    def close(self) -> None:
        self.series = []
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def _check_whole_frames(path: Path, original: Mapping[str, Any]) -> None:
    """A cut MIB still parses as fewer frames; its size must be a whole number of frames."""
    props = original.get("mib_properties") or {}
    size, head = props.get("merlin_size"), as_float(props.get("head_size"))
    if props.get("raw") or not size or head is None:
        return  # raw (packed counter) frames have another length rule, left to rosettasciio
    itemsize = np.dtype(str(props.get("dtype") or "uint16")).itemsize
    frame = int(head) + int(np.prod(size)) * itemsize
    total = path.stat().st_size
    if total % frame:
        raise ReadError(
            f"{path.name}: truncated Merlin MIB ({total} bytes is not a whole number of "
            f"{frame}-byte frames)"
        )


def _check_last_pixel(path: Path, fmt: str, data: Any) -> None:
    """Lazy readers map the file without checking its length: read the last pixel now, so a
    cut file fails when opened rather than halfway through a pyramid."""
    try:
        last = data[(-1,) * data.ndim]
        if hasattr(last, "compute"):
            last.compute(scheduler="synchronous")
    except Exception as exc:
        raise ReadError(f"{path.name}: truncated {fmt} (its last frame is missing: {exc})") from exc


def _whole_empad_frames(path: Path) -> bool:
    try:
        size = path.stat().st_size
    except OSError:
        return False
    return size > 0 and size % EMPAD_FRAME_BYTES == 0


def _is_raw_data(path: Path) -> bool:
    """Not empty and not text: the EMPAD .raw rather than another sidecar."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return bool(head) and not head.lstrip().startswith(b"<")


def _is_merlin_header(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"HDR,"
    except OSError:
        return False


class DiffractionReader(Reader):
    name = "diffraction"

    def sniff(self, head: bytes, path: Path) -> bool:
        return plugin_for(head) is not None

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        with path.open("rb") as handle:
            found = plugin_for(handle.read(4096))
        if found is None:
            raise ReadError(f"{path.name}: not a diffraction-detector file")
        return DiffractionFile(path, companions, *found)
