"""Electron-microscopy formats through rosettasciio (lazy): Gatan DM3/DM4, Velox/NCEM EMD, TIA SER/EMI, Bruker BCF, EMSA, Phenom ELID, JEOL Analysis Station."""

from __future__ import annotations

import importlib
import math
import re
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from allmicro_data.ingest.readers.base import (
    AXIS_ORDER,
    Acquisition,
    ImageFile,
    PixelSize,
    Reader,
    ReadError,
    Series,
)
from allmicro_data.ingest.readers.dm_tags import dm_acquisition, find_image_tags
from allmicro_data.ingest.readers.jeol import is_asw, jeol_kind, read_jeol
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
from allmicro_data.ingest.readers.phenom import is_elid, read_elid

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _dm_version(head: bytes) -> int | None:
    if len(head) < 16:
        return None
    version = struct.unpack(">i", head[:4])[0]
    if version == 3 and struct.unpack(">i", head[8:12])[0] in (0, 1):
        return 3
    if version == 4 and struct.unpack(">i", head[12:16])[0] in (0, 1):
        return 4
    return None


def _hdf5_plugin(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if "Version" in h5 and "Data" in h5:
                return "emd"  # Velox
            if "version_major" in h5.attrs:
                return "emd"  # NCEM / Berkeley EMD
            fmt = h5.attrs.get("file_format")
            if isinstance(fmt, bytes):
                fmt = fmt.decode("utf-8", "replace")
            if isinstance(fmt, str) and fmt.lower().startswith("hyperspy"):
                return "hspy"
            if any("NX_class" in h5[k].attrs for k in list(h5.keys())[:50]):
                return "nexus"
    except Exception:
        return None
    return None


def plugin_for(head: bytes, path: Path) -> tuple[str, str] | None:
    """(rosettasciio plugin, format name) shown by the content, or None."""
    version = _dm_version(head)
    if version is not None:
        return "digitalmicrograph", f"Gatan DM{version}"
    if head[:2] == b"II" and len(head) >= 4 and struct.unpack("<H", head[2:4])[0] == 0x0197:
        return "tia", "FEI TIA SER"
    if head[:4] == b"JK\x00\x02":
        return "tia", "FEI TIA EMI"
    if head[:8] == b"AAMVHFSS":
        return "bruker", "Bruker BCF"
    if head.lstrip().startswith(b"#FORMAT") and b"EMSA" in head[:200].upper():
        return "msa", "EMSA/MSA spectrum"
    if is_elid(head, path):
        return "phenom", "Thermo Fisher Phenom ELID"
    jeol = jeol_kind(head)
    if jeol is not None:
        return "jeol", f"JEOL Analysis Station {jeol}"
    if is_asw(head, path):
        return "jeol", "JEOL Analysis Station project (.ASW)"
    if head[:8] == HDF5_MAGIC:
        plugin = _hdf5_plugin(path)
        names = {"emd": "EMD (HDF5)", "hspy": "HyperSpy HDF5", "nexus": "NeXus HDF5"}
        return (plugin, names[plugin]) if plugin else None
    return None


def _apply_mapping(signal: Mapping[str, Any]) -> dict[str, Any]:
    """rosettasciio's metadata with its mapping applied the way HyperSpy applies it."""
    metadata: dict[str, Any] = jsonable(signal.get("metadata") or {})
    original = signal.get("original_metadata") or {}
    for source, target in (signal.get("mapping") or {}).items():
        if not isinstance(target, tuple | list) or len(target) != 2:
            continue
        dest, function = target
        value = dig(original, *source.split("."))
        if value is None:
            continue
        try:
            value = function(value) if function is not None else value
        except Exception:  # noqa: S112 - a vendor value that does not convert is skipped
            continue
        node = metadata
        parts = str(dest).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = jsonable(value)
    return metadata


def _acquisition_from_hyperspy(md: Mapping[str, Any]) -> Acquisition:
    acq = Acquisition()
    instruments = dig(md, "Acquisition_instrument") or {}
    kind = next((k for k in ("TEM", "SEM") if k in instruments), None)
    inst: Mapping[str, Any] = instruments.get(kind, {}) if kind else {}
    if kind:
        mode = text_or_none(inst.get("acquisition_mode"))
        acq.modality = "STEM" if mode == "STEM" else kind
    acq.instrument = text_or_none(inst.get("microscope"))
    kev = positive(as_float(inst.get("beam_energy")))
    acq.accelerating_voltage = kev * 1e3 if kev else None
    acq.magnification = positive(as_float(inst.get("magnification")))
    cl_mm = positive(as_float(inst.get("camera_length")))
    acq.camera_length = cl_mm * 1e-3 if cl_mm else None
    na = positive(as_float(inst.get("beam_current")))
    acq.beam_current = na * 1e-9 if na else None
    acq.dwell_time = positive(as_float(inst.get("dwell_time")))
    wd_mm = positive(as_float(inst.get("working_distance")))
    acq.working_distance = wd_mm * 1e-3 if wd_mm else None
    acq.tilt_angle_deg = as_float(dig(inst, "Stage", "tilt_alpha"))
    acq.exposure_time = positive(as_float(dig(inst, "Detector", "Camera", "exposure")))
    acq.detector = text_or_none(inst.get("detector")) or text_or_none(
        dig(inst, "Detector", "Camera", "Name")
    )
    general = md.get("General") or {}
    acq.operator = text_or_none(general.get("authors"))
    date, time = text_or_none(general.get("date")), text_or_none(general.get("time"))
    if date:
        stamp = parse_datetime(f"{date}T{time or '00:00:00'}", ())
        zone = text_or_none(general.get("time_zone"))
        if stamp is not None and zone in ("UTC", "GMT") and stamp.tzinfo is None:
            from datetime import UTC

            stamp = stamp.replace(tzinfo=UTC)
        acq.acquired_at = stamp if time else None
    return acq


def _merge(target: Acquisition, source: Acquisition) -> None:
    for name in target.__dataclass_fields__:
        value = getattr(source, name)
        if value not in (None, []):
            setattr(target, name, value)


def _velox(acq: Acquisition, original: Mapping[str, Any]) -> None:
    # rosettasciio maps the STEM magnification flag, not the magnification, for camera images.
    acq.magnification = positive(as_float(dig(original, "Optics", "NominalMagnification")))
    acq.vendor = text_or_none(dig(original, "Instrument", "Manufacturer"))
    model = text_or_none(dig(original, "Instrument", "InstrumentModel"))
    acq.instrument = model or acq.instrument
    detector = text_or_none(dig(original, "BinaryResult", "Detector"))
    acq.detector = detector or acq.detector
    index = dig(original, "BinaryResult", "DetectorIndex")
    if index is not None:
        det = dig(original, "Detectors", f"Detector-{index}") or {}
        acq.exposure_time = positive(as_float(det.get("ExposureTime"))) or acq.exposure_time
    acq.beam_current = positive(as_float(dig(original, "Optics", "LastMeasuredScreenCurrent")))
    acq.camera_length = positive(as_float(dig(original, "Optics", "CameraLength")))
    acq.spot_size = positive(as_float(dig(original, "Optics", "SpotIndex")))
    kv = positive(as_float(dig(original, "Optics", "AccelerationVoltage")))
    acq.accelerating_voltage = kv or acq.accelerating_voltage
    stamp = from_unix(dig(original, "Acquisition", "AcquisitionStartDatetime", "DateTime"))
    acq.acquired_at = stamp or acq.acquired_at
    unit = text_or_none(dig(original, "BinaryResult", "AcquisitionUnit")) or ""
    scan = as_float(dig(original, "Scan", "DwellTime"))
    if "Scan" in unit or (scan and scan > 0):
        acq.modality = "STEM"
        acq.dwell_time = positive(scan)
    elif acq.modality is None:
        acq.modality = "TEM"


def _tia(acq: Acquisition, original: Mapping[str, Any]) -> None:
    info = dig(original, "ObjectInfo") or {}
    desc = info.get("ExperimentalDescription") or {}
    acq.vendor = "Thermo Fisher Scientific"
    acq.instrument = text_or_none(desc.get("Microscope")) or acq.instrument
    kv = positive(as_float(desc.get("High tension_kV")))
    acq.accelerating_voltage = kv * 1e3 if kv else acq.accelerating_voltage
    acq.magnification = positive(as_float(desc.get("Magnification_x"))) or acq.magnification
    cl = positive(as_float(desc.get("Camera length_m")))
    acq.camera_length = cl or acq.camera_length
    acquire = info.get("AcquireInfo") or {}
    acq.detector = text_or_none(acquire.get("CameraNamePath")) or acq.detector
    dwell = positive(as_float(acquire.get("DwellTimePath")))
    mode = (text_or_none(desc.get("Mode")) or "").upper()
    if mode.startswith("STEM"):
        acq.modality = "STEM"
        acq.dwell_time = dwell
    else:
        acq.modality = acq.modality or ("TEM" if mode.startswith("TEM") else None)
        acq.exposure_time = dwell or acq.exposure_time
    acq.operator = text_or_none(desc.get("User")) or acq.operator
    tilt = as_float(desc.get("Stage A_deg"))
    acq.tilt_angle_deg = tilt if tilt is not None else acq.tilt_angle_deg
    stamp = text_or_none(info.get("AcquireDate"))
    if stamp:
        acq.acquired_at = parse_datetime(stamp, ("%a %b %d %H:%M:%S %Y",)) or acq.acquired_at


# SI prefixes of the unit strings Phenom writes beside its values ("kV", "nm", "ns", "uA").
_PREFIX = {"": 1.0, "k": 1e3, "M": 1e6, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12}


def _phenom_si(item: Any, base: str) -> float | None:
    """A Phenom {value, unit} in SI base units (V, m, s); None for another quantity."""
    if not isinstance(item, Mapping):
        return None
    value, unit = as_float(item.get("value")), text_or_none(item.get("unit")) or ""
    if value is None or not unit.endswith(base) or unit[: -len(base)] not in _PREFIX:
        return None
    return value * _PREFIX[unit[: -len(base)]]


def _phenom(acq: Acquisition, original: Mapping[str, Any], is_image: bool) -> None:
    acq.vendor = "Thermo Fisher Scientific"
    acq.modality = "SEM"
    inst = original.get("instrument") or {}
    model = " ".join(filter(None, (text_or_none(inst.get(k)) for k in ("type", "edition"))))
    acq.instrument = model or acq.instrument
    scan = dig(original, "acquisition", "scan") or {}
    eds = dig(scan, "detectors", "EDS") or {}
    # Phenom states the (negative) cathode potential; the EDS block has it in volts.
    hv = _phenom_si(scan.get("highVoltage"), "V")
    acq.accelerating_voltage = abs(hv) if hv else positive(as_float(eds.get("high_tension")))
    wd = _phenom_si(original.get("workingDistance"), "m")
    acq.working_distance = positive(wd) or positive(as_float(eds.get("working_distance")))
    acq.dwell_time = positive(_phenom_si(scan.get("dwellTime"), "s"))
    acq.spot_size = positive(as_float(scan.get("spotSize")))
    acq.operator = text_or_none(original.get("currentUser"))
    stamp = text_or_none(original.get("time"))
    # The ELID names no zone: the time stays the instrument's wall clock (rosettasciio would
    # label it with the zone of whatever computer reads the file).
    acq.acquired_at = parse_datetime(stamp, ()) if stamp else None
    tilt = as_float(eds.get("sample_tilt_angle"))
    acq.tilt_angle_deg = math.degrees(tilt) if tilt else acq.tilt_angle_deg
    if is_image:
        imaging = [
            name
            for name, det in (scan.get("detectors") or {}).items()
            if name != "EDS" and (positive(as_float((det or {}).get("mixFactor"))) or 0) > 0
        ]
        acq.detector = "+".join(imaging) or None
        acq.horizontal_field_width = positive(as_float(scan.get("fieldSize")))
    elif eds:
        kind = text_or_none(eds.get("detector_type"))
        acq.detector = f"EDS ({kind})" if kind else "EDS"


def _bruker(acq: Acquisition, original: Mapping[str, Any], title: str) -> None:
    scope = original.get("Microscope") or {}
    kv = positive(as_float(scope.get("HV")))
    acq.accelerating_voltage = kv * 1e3 if kv else acq.accelerating_voltage
    acq.magnification = positive(as_float(scope.get("Mag"))) or acq.magnification
    # Esprit writes WD -1 where the microscope reported none (TEM).
    wd_mm = positive(as_float(scope.get("WD")))
    acq.working_distance = wd_mm * 1e-3 if wd_mm else acq.working_distance
    detector = text_or_none(dig(original, "Detector", "Type"))
    acq.detector = f"EDS ({detector})" if detector else title or acq.detector
    acq.vendor = acq.vendor or "Bruker"


def _jeol(acq: Acquisition, original: Mapping[str, Any]) -> None:
    inst = original.get("Instrument") or {}
    acq.vendor = "JEOL"
    acq.instrument = text_or_none(inst.get("Name")) or acq.instrument
    wd_mm = positive(as_float(inst.get("WorkD")))
    acq.working_distance = wd_mm * 1e-3 if wd_mm else acq.working_distance


def _share_bruker_date(series: Sequence[Series]) -> None:
    """The images and the hypermap of one BCF are one acquisition; Esprit dates only the
    hypermap's spectrum header, so its date is the images' date too."""
    dates = {s.acquisition.acquired_at for s in series if s.acquisition.acquired_at}
    if len(dates) != 1:
        return
    (date,) = dates
    for each in series:
        if each.acquisition.acquired_at is None:
            each.acquisition.acquired_at = date
            each.vendor["acquired_at_source"] = "the BCF's hypermap (EDS spectrum header)"


def _catalogue_analyses(series: Sequence[Series], *, every_image: bool) -> None:
    """Spectra, line scans, maps and hypermaps get no pyramid, so no image of their own: the
    catalogue keeps them in the vendor metadata of the image they were acquired on (the image
    before them in the file; every image of a BCF, whose hypermap spans them all)."""
    images = [s for s in series if s.viewable and not s.preview]
    if not images:
        return
    owner: Series = images[0]
    for each in series:
        if each.viewable:
            owner = each if not each.preview else owner
            continue
        for image in images if every_image else [owner]:
            theirs = image.vendor.get("original_metadata") or {}
            own = each.vendor.get("original_metadata") or {}
            image.vendor.setdefault("analyses", []).append(
                {
                    "name": each.name,
                    "axes": each.vendor.get("axes"),
                    "shape": list(each.shape),
                    "dtype": str(each.dtype),
                    "acquisition": each.acquisition.to_json(),
                    # What the image's own keys do not already say.
                    "original_metadata": {k: v for k, v in own.items() if theirs.get(k) != v},
                }
            )


class RsciioSeries(Series):
    def __init__(
        self, signal: Mapping[str, Any], index: int, plugin: str, *, file_name: str, fmt: str
    ) -> None:
        super().__init__()
        # For errors of reads long after the file was opened: they name it and its format.
        self._file_name = file_name
        self._format = fmt
        data = signal["data"]
        self._data = data
        self._spectrum_image = False
        self.dtype = np.dtype(data.dtype)
        axes_info = sorted(signal.get("axes") or [], key=lambda a: a.get("index_in_array", 0))
        if len(axes_info) != data.ndim:
            axes_info = [{"name": f"axis{i}", "navigate": False} for i in range(data.ndim)]
        if data.ndim > len(AXIS_ORDER):
            raise ReadError(f"{data.ndim}-dimensional data cannot be represented")
        md = _apply_mapping(signal)
        self.name = text_or_none(dig(md, "General", "title")) or f"signal {index}"
        signal_dims = [a for a in axes_info if not a.get("navigate")]
        nav_dims = [a for a in axes_info if a.get("navigate")]
        if not signal_dims:
            # A plain image some plugins (Phenom) mark as navigation axes only.
            signal_dims, nav_dims = nav_dims, []
        letters: list[str]
        if len(signal_dims) == 2 and len(nav_dims) <= 1 and data.ndim >= 2:
            letters = ["y", "x"]
            if nav_dims:
                nav = nav_dims[0]
                is_time = str(nav.get("units") or "").strip() in ("s", "ms", "µs") or str(
                    nav.get("name", "")
                ).lower().startswith("time")
                letters.insert(0, "t" if is_time else "z")
            # Navigation axes come first in rosettasciio's arrays, as in ours.
        elif (
            len(signal_dims) == 1
            and len(nav_dims) == 2
            and all(length_factor(text_or_none(a.get("units"))) for a in nav_dims)
        ):
            # A spectrum image (EDS hypermap, map): its energy channels are c and its scan y
            # and x, so the scan's calibration is a pixel size. Thousands of channels make no
            # picture: catalogued, no pyramid. Array order is (y, x, energy); ours is c, y, x.
            letters = ["y", "x", "c"]
            self._spectrum_image = True
            self.viewable = False
            self.warnings.append(
                f"spectrum image ({', '.join(str(a.get('name')) for a in axes_info)}): "
                "catalogued with its metadata, no pyramid"
            )
        else:
            letters = list(AXIS_ORDER[-data.ndim :])
            self.viewable = False
            kind = "spectrum" if len(signal_dims) == 1 else f"{data.ndim}-D dataset"
            self.warnings.append(
                f"{kind} ({', '.join(str(a.get('name')) for a in axes_info)}): catalogued with "
                "its metadata, no pyramid"
            )
        self.axes = "".join(letters)
        self.shape = tuple(int(n) for n in data.shape)
        if self._spectrum_image:
            self.axes = "cyx"
            self.shape = (self.shape[2], self.shape[0], self.shape[1])
        self._rgb_fields: tuple[str, ...] = ()
        if data.dtype.names and {"R", "G", "B"} <= set(data.dtype.names) and letters == ["y", "x"]:
            # HyperSpy's RGB(A) records become c=3 planes, as every other reader gives colour.
            self._rgb_fields = ("R", "G", "B")
            self.rgb = True
            self.axes = "cyx"
            self.shape = (3, *self.shape)
            self.dtype = np.dtype(data.dtype["R"])
        sizes: dict[str, float | None] = {"x": None, "y": None, "z": None}
        for letter, axis in zip(letters, axes_info, strict=True):
            scale = as_float(axis.get("scale"))
            unit = text_or_none(axis.get("units"))
            factor = length_factor(unit)
            spatial = self.viewable or self._spectrum_image
            if spatial and letter in sizes and factor is not None and scale and scale > 0:
                sizes[letter] = scale * factor
            elif scale is not None and unit and not (unit == "" or (scale == 1.0 and not unit)):
                self.axis_calibration[letter] = (scale, unit)
        self.pixel_size = PixelSize(**sizes)
        original = signal.get("original_metadata") or {}
        acq = _acquisition_from_hyperspy(md)
        if plugin == "digitalmicrograph":
            tags = find_image_tags(dig(original, "ImageList") or {})
            if tags is not None:
                dm, warnings = dm_acquisition(tags)
                _merge(acq, dm)
                self.warnings.extend(warnings)
        elif plugin == "emd" and dig(original, "Instrument") is not None:
            _velox(acq, original)
        elif plugin == "tia":
            _tia(acq, original)
        elif plugin == "phenom":
            _phenom(acq, original, is_image=self.viewable)
        elif plugin == "bruker":
            _bruker(acq, original, self.name)
        elif plugin == "jeol":
            _jeol(acq, original)
        if any(unit for _, unit in self.axis_calibration.values() if "1/" in unit or "^-1" in unit):
            self.warnings.append("diffraction pattern: calibration is in reciprocal space")
        self.acquisition = acq
        self.vendor = {"original_metadata": jsonable(_drop_display(original))}
        self.vendor["axes"] = jsonable(axes_info)

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        ours = self.normalise_region(region)
        if self._spectrum_image:
            channels, rows, columns = ours
            cube = self._read_block((rows, columns, channels))
            return np.ascontiguousarray(np.moveaxis(cube, -1, 0))
        if self._rgb_fields:
            planes = self._data[ours[1:]]
            fields = self._rgb_fields[ours[0]]
            return np.stack([np.asarray(planes[f]) for f in fields]).astype(self.dtype)
        return self._read_block(ours)

    def _read_block(self, region: tuple[slice, ...]) -> np.ndarray[Any, Any]:
        """The array region in rosettasciio's own axis order, computed if lazy."""
        try:
            block = self._data[region]
            if hasattr(block, "compute"):
                block = block.compute(scheduler="synchronous")
            return np.asarray(block)
        except Exception as exc:  # a lazy ELID map re-parses the file: its errors too
            raise ReadError(
                f"{self._file_name}: cannot read {self._format} pixels ({exc})"
            ) from exc


def _drop_display(original: Mapping[str, Any]) -> Mapping[str, Any]:
    """DM's document display state (window geometry, annotations) is not acquisition metadata."""
    skip = {
        "DocumentObjectList",
        "Page Behavior",
        "Image Behavior",
        "ApplicationBounds",
        "WindowPosition",
    }
    return {k: v for k, v in original.items() if k not in skip}


def _tia_workdir(
    path: Path, companions: Sequence[Path]
) -> tuple[Path, tempfile.TemporaryDirectory[str]]:
    """rosettasciio finds an EMI's data as '<stem>_N.ser' beside it; originals in the store have
    content-addressed names, so lay the pair out under the names TIA gave them."""
    workdir = tempfile.TemporaryDirectory(prefix="allmicro-tia-")
    root = Path(workdir.name)
    emi = root / "acquisition.emi"
    emi.symlink_to(path.resolve())
    sers = [c for c in companions if _is_ser(c)]
    for position, ser in enumerate(sers, start=1):
        match = re.search(r"_(\d+)\.ser$", ser.name, re.IGNORECASE)
        number = int(match.group(1)) if match else position
        (root / f"acquisition_{number}.ser").symlink_to(ser.resolve())
    return emi, workdir


def _is_ser(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head[:2] == b"II" and len(head) == 4 and struct.unpack("<H", head[2:4])[0] == 0x0197


class RsciioFile(ImageFile):
    def __init__(self, path: Path, companions: Sequence[Path], plugin: str, fmt: str) -> None:
        super().__init__(path)
        self.format = fmt
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        target = path
        if fmt == "FEI TIA EMI":
            if not any(_is_ser(c) for c in companions):
                raise ReadError(
                    f"{path.name}: a TIA .emi holds metadata only; upload its _1.ser data file with it"
                )
            target, self._workdir = _tia_workdir(path, companions)
        try:
            signals = self._signals(plugin, target, companions)
        except ReadError as exc:
            self.close()
            message = str(exc)
            if message.startswith(f"{path.name}:"):
                raise
            raise ReadError(f"{path.name}: {fmt} file refused: {message}") from exc
        except Exception as exc:
            self.close()
            raise ReadError(
                f"{path.name}: broken {fmt} file ({type(exc).__name__}: {exc})"
            ) from exc
        if not signals:
            self.close()
            raise ReadError(f"{path.name}: {fmt} file holds no data")
        for index, signal in enumerate(signals):
            self.series.append(RsciioSeries(signal, index, plugin, file_name=path.name, fmt=fmt))
        if fmt == "FEI TIA SER":
            self.warnings.append(
                "TIA .ser read without its .emi: microscope metadata are in the .emi"
            )
        if plugin == "bruker":
            _share_bruker_date(self.series)
        _catalogue_analyses(self.series, every_image=plugin == "bruker")

    def _signals(
        self, plugin: str, target: Path, companions: Sequence[Path]
    ) -> list[dict[str, Any]]:
        """rosettasciio's signal dicts; Phenom and JEOL go through our wrappers of its parsers."""
        if plugin == "phenom":
            version, signals = read_elid(target)
            self.format = f"{self.format} (container version {version})"
            return signals
        if plugin == "jeol":
            self._workdir = tempfile.TemporaryDirectory(prefix="allmicro-jeol-")
            signals, warnings = read_jeol(target, companions, Path(self._workdir.name))
            self.warnings.extend(warnings)
            return signals
        reader: Callable[..., list[dict[str, Any]]] = importlib.import_module(
            f"rsciio.{plugin}"
        ).file_reader
        return reader(str(target), lazy=True)

    def close(self) -> None:
        self.series = []
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


class RsciioReader(Reader):
    name = "rosettasciio"

    def sniff(self, head: bytes, path: Path) -> bool:
        return plugin_for(head, path) is not None

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        with path.open("rb") as handle:
            head = handle.read(4096)
        found = plugin_for(head, path)
        if found is None:
            raise ReadError(f"{path.name}: not a format rosettasciio reads")
        return RsciioFile(path, companions, *found)
