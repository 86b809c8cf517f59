"""MRC/CCP4 family (mrcfile): memory-mapped, gzip/bzip2 with a size guard, FEI headers, DE and SerialEM sidecars."""

from __future__ import annotations

import bz2
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import mrcfile
import numpy as np

from allmicro_data.ingest.readers.array import RawFileSeries
from allmicro_data.ingest.readers.base import ImageFile, PixelSize, Reader, ReadError, Series
from allmicro_data.ingest.readers.normalise import (
    as_float,
    from_unix,
    jsonable,
    parse_datetime,
    positive,
    text_or_none,
)

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
HEADER_BYTES = 1024
# The decompressed size a header may declare before we refuse to inflate it to a temporary
# file: larger compressed maps must be uploaded uncompressed so they can be memory-mapped.
MAX_DECOMPRESSED_BYTES = 16 * 1024**3
_CHUNK = 1 << 20
# Electron-microscopy maps and stacks compress a few times at most, masked maps some tens; a
# stream that claims more is a decompression bomb, refused before anything is inflated.
MAX_COMPRESSION_RATIO = 200

_MODE_BYTES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2, 101: 1}
# FEI extended-header timestamps are OLE automation dates: days since 1899-12-30.
_OLE_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)


def _header_fields(head: bytes) -> dict[str, Any] | None:
    """nx, ny, nz, mode, next and axis map of an MRC header in either byte order, or None."""
    if len(head) < HEADER_BYTES:
        return None
    for order in ("<", ">"):
        ints = np.frombuffer(head[:96], dtype=f"{order}i4")
        nx, ny, nz, mode = (int(v) for v in ints[:4])
        maps = tuple(int(v) for v in ints[16:19])
        nsymbt = int(ints[23])
        stamped = head[208:212] == b"MAP "
        if mode not in _MODE_BYTES or min(nx, ny, nz) <= 0 or nsymbt < 0:
            continue
        if not stamped and sorted(maps) != [1, 2, 3]:
            continue
        if max(nx, ny, nz) > 10**7:
            continue
        return {"nx": nx, "ny": ny, "nz": nz, "mode": mode, "next": nsymbt, "order": order}
    return None


def _decompressor(kind: str) -> Any:
    return zlib.decompressobj(wbits=31) if kind == "gzip" else bz2.BZ2Decompressor()


def _compression(head: bytes) -> str | None:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(BZIP2_MAGIC) and head[3:4].isdigit():
        return "bzip2"
    return None


def _inflate_head(handle: BinaryIO, kind: str, want: int = HEADER_BYTES) -> bytes:
    """The first `want` decompressed bytes, reading at most a bzip2 block of input."""
    decomp = _decompressor(kind)
    out = b""
    read = 0
    while len(out) < want and read < 2 * 1024 * 1024:
        chunk = handle.read(64 * 1024)
        if not chunk:
            break
        read += len(chunk)
        out += decomp.decompress(chunk, want - len(out))
        if getattr(decomp, "eof", False):
            break
    return out


def sniff_mrc(head: bytes, path: Path) -> bool:
    kind = _compression(head)
    if kind is None:
        return _header_fields(head[:HEADER_BYTES]) is not None
    try:
        with path.open("rb") as handle:
            inner = _inflate_head(handle, kind)
    except (OSError, zlib.error, EOFError, ValueError):
        return False
    return _header_fields(inner) is not None


def _inflate_to_temp(path: Path, kind: str) -> Path:
    """Decompress into a temporary file, refusing streams that outgrow what the header declares."""
    with path.open("rb") as handle:
        header = _inflate_head(handle, kind)
    fields = _header_fields(header)
    if fields is None:
        raise ReadError(f"{path.name}: {kind} content is not an MRC file")
    declared = (
        HEADER_BYTES
        + fields["next"]
        + (fields["nx"] * fields["ny"] * fields["nz"] * _MODE_BYTES[fields["mode"]])
    )
    if fields["mode"] == 101:
        declared = (
            HEADER_BYTES + fields["next"] + (fields["nx"] + 1) // 2 * fields["ny"] * fields["nz"]
        )
    if declared > MAX_DECOMPRESSED_BYTES:
        raise ReadError(
            f"{path.name}: {kind} MRC declares {declared / 1e9:.1f} GB uncompressed, above the "
            f"{MAX_DECOMPRESSED_BYTES / 1e9:.0f} GB limit for compressed uploads"
        )
    compressed = path.stat().st_size
    if declared > MAX_COMPRESSION_RATIO * compressed and declared > 64 * 1024**2:
        raise ReadError(
            f"{path.name}: {kind} MRC would inflate {compressed} bytes to {declared} "
            f"({declared // max(compressed, 1)}:1), beyond any microscope data: decompression bomb"
        )
    tmpdir = Path(tempfile.gettempdir())
    if shutil.disk_usage(tmpdir).free < declared + (1 << 30):
        raise ReadError(
            f"{path.name}: not enough temporary disk space to decompress {declared} bytes"
        )
    # Kept after closing: mrcfile memory-maps it; MrcFile.close() deletes it.
    handle_out = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the with below
        prefix="allmicro-mrc-", suffix=".mrc", delete=False
    )
    target = Path(handle_out.name)
    written = 0
    try:
        with path.open("rb") as source, handle_out:
            for data in _inflate_chunks(source, kind):
                written += len(data)
                if written > declared:
                    raise ReadError(
                        f"{path.name}: {kind} stream inflates beyond the {declared} bytes its "
                        "MRC header declares (decompression bomb or corrupt header)"
                    )
                handle_out.write(data)
        if written < declared:
            raise ReadError(
                f"{path.name}: {kind} stream holds {written} bytes, its MRC header declares {declared}"
            )
    except (zlib.error, EOFError, OSError) as exc:
        target.unlink(missing_ok=True)
        raise ReadError(f"{path.name}: corrupt {kind} stream ({exc})") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def _inflate_chunks(source: BinaryIO, kind: str) -> Iterator[bytes]:
    """Decompressed data in pieces of at most one chunk, across concatenated members/streams;
    max_length keeps a bomb from inflating more than a chunk at a time in memory."""
    decomp = _decompressor(kind)
    pending = b""
    while True:
        if not pending:
            pending = source.read(_CHUNK)
            if not pending:
                return
        if kind == "gzip":
            data = decomp.decompress(pending, _CHUNK)
            pending = decomp.unconsumed_tail
        else:
            data = decomp.decompress(pending, _CHUNK)
            pending = b""
            while not decomp.eof and not decomp.needs_input:
                if data:
                    yield data
                data = decomp.decompress(b"", _CHUNK)
        if data:
            yield data
        if decomp.eof:
            rest = decomp.unused_data + pending
            if not rest.strip(b"\x00"):
                rest = source.read(_CHUNK)
                if not rest:
                    return
            decomp = _decompressor(kind)
            pending = rest


def _parse_key_values(text: str, sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines()[:100_000]:
        key, found, value = line.partition(sep)
        if found and key.strip():
            out.setdefault(key.strip(), value.strip())
    return out


def _parse_mdoc(text: str) -> dict[str, Any]:
    """SerialEM .mdoc: global 'key = value' lines, then [ZValue = n] sections per image."""
    doc: dict[str, Any] = {"global": {}, "sections": []}
    current: dict[str, str] = doc["global"]
    for line in text.splitlines()[:1_000_000]:
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = {"section": line[1:-1].strip()}
            doc["sections"].append(current)
            continue
        key, found, value = line.partition("=")
        if found:
            current[key.strip()] = value.strip()
    return doc


class MrcSeries(Series):
    def __init__(self, mrc: Any, label: str) -> None:
        super().__init__()
        data = mrc.data
        header = mrc.header
        self._data = data
        self._raw: RawFileSeries | None = None
        self.name = label
        self.dtype = np.dtype(data.dtype).newbyteorder("=")
        shape = data.shape
        stack = bool(mrc.is_image_stack())
        maps = (int(header.mapc), int(header.mapr), int(header.maps))
        self._perm: tuple[int, ...] | None = None
        if data.ndim == 2:
            self.axes = "yx"
            self.shape = tuple(int(n) for n in shape)
        elif shape[0] == 1:
            self.axes = "yx"
            self.shape = (int(shape[1]), int(shape[2]))
            self._data = data[0]
        else:
            # An image stack is a sequence of 2D images (movie frames, tilts, particles); a
            # volume has a third spatial axis.
            self.axes = "tyx" if stack else "zyx"
            self.shape = tuple(int(n) for n in shape)
            if not stack and maps != (1, 2, 3):
                if sorted(maps) == [1, 2, 3]:
                    # Stored axes are (sections, rows, cols) = crystallographic (maps, mapr,
                    # mapc); reorder to Z, Y, X so each voxel size applies to its own axis.
                    stored = {maps[2]: 0, maps[1]: 1, maps[0]: 2}
                    self._perm = (stored[3], stored[2], stored[1])
                    self.shape = tuple(int(shape[i]) for i in self._perm)
                    self.warnings.append(
                        f"axis order mapc/mapr/maps = {maps}: volume reordered to z, y, x"
                    )
                else:
                    self.warnings.append(f"invalid axis map {maps}; stored order kept")
        # The header's space group says volume (maps, tomograms) or stack; a volume's z is sampled
        # like y and x.
        self.is_volume = self.axes == "zyx"
        vs = mrc.voxel_size
        raw = {"x": float(vs.x), "y": float(vs.y), "z": float(vs.z)}
        sizes = {a: (v * 1e-10 if v > 0 else None) for a, v in raw.items()}
        if any(v <= 0 for a, v in raw.items() if a in "xy"):
            self.warnings.append(
                f"MRC cell gives voxel size {raw['x']:g} x {raw['y']:g} Å: not a calibration"
            )
        self.pixel_size = PixelSize(
            x=sizes["x"], y=sizes["y"], z=sizes["z"] if "z" in self.axes else None
        )
        self.acquisition.modality = None
        self.vendor["mrc_header"] = _header_dict(header)
        self.vendor["labels"] = [
            text_or_none(bytes(lbl))
            for lbl in header.label[: int(header.nlabl)]
            if bytes(lbl).strip(b"\x00 ")
        ]

    def read_positioned(self, source: Path, offset: int) -> None:
        """Read pixels with positioned reads from source instead of through the memmap.

        Pages read through a memmap stay mapped into the process until it closes, so a 2 GiB
        tomogram read band by band would end with 2 GiB resident; positioned reads into the
        pyramid writer's recycled buffers keep it at one band. Only for voxels stored as they
        are returned: native byte order, in stored axis order.
        """
        data = self._data
        if self._perm is None and data.dtype.isnative and data.flags.c_contiguous:
            self._raw = RawFileSeries(source, offset, self.shape, self.dtype, self.axes)

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def read_into(self, region: Sequence[slice] | None, out: np.ndarray[Any, Any]) -> None:
        """Read region into out (C-ordered, of the region's shape and the series' dtype)."""
        if self._raw is not None:
            try:
                self._raw.read_into(region, out)
            except OSError as exc:
                raise ReadError(f"cannot read MRC pixels: {exc}") from exc
        else:
            out[...] = self.read(region)

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        if self._raw is not None:
            try:
                return self._raw.read(region)
            except OSError as exc:
                raise ReadError(f"cannot read MRC pixels: {exc}") from exc
        ours = self.normalise_region(region)
        try:
            if self._perm is None:
                out = np.asarray(self._data[ours])
            else:
                src: list[slice] = [slice(None)] * 3
                for our_index, src_index in enumerate(self._perm):
                    src[src_index] = ours[our_index]
                out = np.transpose(np.asarray(self._data[tuple(src)]), self._perm)
        except (OSError, ValueError) as exc:
            raise ReadError(f"cannot read MRC pixels: {exc}") from exc
        return out.astype(self.dtype, copy=False)


def _header_dict(header: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in header.dtype.names:
        if name == "label":
            continue
        out[name] = jsonable(header[name])
    return out


def _apply_fei(series: MrcSeries, ext: Any, exttyp: str) -> None:
    """FEI1/FEI2 extended header (Thermo Fisher EPU, Tomography, Velox MRC export)."""
    if ext is None or len(ext) == 0 or not ext.dtype.names:
        return
    first = ext[0]
    record = {n: jsonable(first[n]) for n in ext.dtype.names}
    series.vendor["fei_extended_header"] = {"type": exttyp, "first": record, "records": len(ext)}
    acq = series.acquisition
    acq.vendor = "Thermo Fisher Scientific"
    acq.instrument = text_or_none(record.get("Microscope type"))
    acq.accelerating_voltage = positive(as_float(record.get("HT")))
    acq.magnification = positive(as_float(record.get("Magnification")))
    acq.tilt_angle_deg = as_float(record.get("Alpha tilt"))
    acq.exposure_time = positive(as_float(record.get("Integration time")))
    acq.dwell_time = positive(as_float(record.get("Dwell time")))
    acq.camera_length = positive(as_float(record.get("Camera length")))
    # The EPU manual gives the dose in electrons per square metre, as we store it.
    acq.electron_dose = positive(as_float(record.get("Dose")))
    acq.spot_size = positive(as_float(record.get("Spot index")))
    acq.detector = text_or_none(record.get("Camera name")) or text_or_none(
        record.get("STEM Detector name")
    )
    mode = as_float(record.get("Instrument mode"))
    acq.modality = {1.0: "TEM", 2.0: "STEM"}.get(mode) if mode is not None else None
    days = as_float(record.get("Timestamp"))
    if days and days > 30000:
        acq.acquired_at = _OLE_EPOCH + timedelta(days=days)
    if series.pixel_size.x is None:
        px = positive(as_float(record.get("Pixel size X")))
        py = positive(as_float(record.get("Pixel size Y")))
        series.pixel_size = PixelSize(x=px, y=py, z=series.pixel_size.z)


def _apply_de_info(series: MrcSeries, keys: dict[str, str]) -> tuple[int, int] | None:
    """Direct Electron DE-Server <dataset>_info.txt; the scan (rows, columns) when the movie's
    frames are the diffraction patterns of a scan (4D-STEM)."""
    series.vendor["de_info"] = keys
    acq = series.acquisition
    acq.vendor = "Direct Electron"
    acq.detector = keys.get("Camera Model") or None
    acq.accelerating_voltage = positive(as_float(keys.get("Instrument Accelerating Voltage (V)")))
    acq.magnification = positive(as_float(keys.get("Instrument Project Magnification")))
    acq.exposure_time = positive(as_float(keys.get("Exposure Time (seconds)")))
    acq.acquired_at = from_unix(keys.get("Timestamp (seconds since Epoch)"))
    scanning = keys.get("Scan - Enable", "").lower() == "enable"
    if scanning:
        acq.modality = "STEM"
        dwell_us = positive(as_float(keys.get("Scan - Dwell Time (microseconds)")))
        acq.dwell_time = dwell_us * 1e-6 if dwell_us else None
        cl_cm = positive(as_float(keys.get("Instrument Project Camera Length (centimeters)")))
        acq.camera_length = cl_cm * 1e-2 if cl_cm else None
        nx = as_float(keys.get("Scan - Size X"))
        ny = as_float(keys.get("Scan - Size Y"))
        frames = series.shape[0] if series.axes[0] in "tz" else 1
        if nx and ny and int(nx * ny) == frames and frames > 1:
            # Each frame is the diffraction pattern of one scan position: a 4D-STEM dataset
            # whose frames are not a spatial stack, shown as its virtual bright field.
            return int(ny), int(nx)
    return None


def _de_virtual_image(series: MrcSeries, data: Any, scan: tuple[int, int], name: str) -> Series:
    """The movie's frames as a (rows, columns, ky, kx) scan, raster order with x fastest as
    DE-Server writes it, summed over the detector one scan row at a time."""
    from allmicro_data.ingest.readers.diffraction import VirtualImage

    keys: dict[str, str] = series.vendor.get("de_info", {})
    ny, nx = scan
    frames = data.reshape(ny, nx, *data.shape[-2:])  # a view of the memory map, nothing read

    def axis(name: str, key: str | None, unit: str | None, navigate: bool) -> dict[str, Any]:
        return {
            "name": name,
            "scale": as_float(keys.get(key)) if key else None,
            "units": unit,
            "navigate": navigate,
        }

    axes = [
        axis("y", "Specimen Pixel Size Y (nanometers)", "nm", True),
        axis("x", "Specimen Pixel Size X (nanometers)", "nm", True),
        # DE does not name the unit of its diffraction pixel size: kept as a vendor key only.
        axis("ky", None, None, False),
        axis("kx", None, None, False),
    ]
    image = VirtualImage(frames, axes, file_name=name, fmt="DE-Server 4D-STEM movie")
    image.acquisition = series.acquisition
    image.vendor = {**series.vendor, **image.vendor}
    image.warnings = [*series.warnings, *image.warnings]
    return image


# What SerialEM records per image that changes along a tilt series or montage; units as
# SerialEM writes them (degrees, µm of defocus, e⁻/Å², seconds, Å).
_PER_SECTION = (
    "TiltAngle",
    "Defocus",
    "TargetDefocus",
    "Magnification",
    "ExposureDose",
    "ExposureTime",
    "PixelSpacing",
    "StagePosition",
    "DateTime",
)


def _is_image_section(section: dict[str, str]) -> bool:
    return section.get("section", "").replace(" ", "").startswith("ZValue=")


def _per_section(sections: list[dict[str, str]]) -> dict[str, list[Any]]:
    """One list per key over the [ZValue = n] sections in z order (None where a section lacks
    the key), so a tilt series' angles and defoci read as columns."""
    images = [s for s in sections if _is_image_section(s)]
    out: dict[str, list[Any]] = {
        "ZValue": [as_float(s["section"].split("=", 1)[1]) for s in images]
    }
    for key in _PER_SECTION:
        if not any(key in s for s in images):
            continue
        if key in ("StagePosition", "DateTime"):
            out[key] = [text_or_none(s.get(key)) for s in images]
        else:
            out[key] = [as_float(s.get(key)) for s in images]
    return out


def _describe_tilt_series(series: MrcSeries, columns: dict[str, list[Any]]) -> None:
    tilts = [t for t in columns.get("TiltAngle", []) if t is not None]
    if len(set(tilts)) > 1:
        series.warnings.append(
            f"tilt series: {len(tilts)} images from {min(tilts):g}° to {max(tilts):g}°; the "
            "tilt of each is in vendor serialem_mdoc.per_section.TiltAngle (tilt is the first)"
        )
    defoci = [d for d in columns.get("Defocus", []) if d is not None]
    if defoci:
        series.vendor["serialem_mdoc"]["defocus_m"] = {
            "first": defoci[0] * 1e-6,
            "min": min(defoci) * 1e-6,
            "max": max(defoci) * 1e-6,
        }


def _apply_mdoc(series: MrcSeries, doc: dict[str, Any]) -> None:
    """SerialEM .mdoc beside a stack or tomogram."""
    series.vendor["serialem_mdoc"] = {
        "global": doc["global"],
        "sections": doc["sections"][:2000],
        "per_section": _per_section(doc["sections"]),
    }
    _describe_tilt_series(series, series.vendor["serialem_mdoc"]["per_section"])
    # The first image's section: title sections ([T = SerialEM: ...]) come before the images.
    images = [s for s in doc["sections"] if _is_image_section(s)]
    first: dict[str, str] = images[0] if images else {}
    merged = {**doc["global"], **first}
    acq = series.acquisition
    kv = positive(as_float(merged.get("Voltage")))
    acq.accelerating_voltage = kv * 1e3 if kv else None
    acq.magnification = positive(as_float(merged.get("Magnification")))
    acq.exposure_time = positive(as_float(merged.get("ExposureTime")))
    acq.tilt_angle_deg = as_float(merged.get("TiltAngle"))
    # SerialEM writes ExposureDose in e⁻/Å² (0 when the dose is not calibrated).
    dose = positive(as_float(merged.get("ExposureDose")))
    acq.electron_dose = dose * 1e20 if dose else acq.electron_dose
    acq.spot_size = positive(as_float(merged.get("SpotSize"))) or acq.spot_size
    # SerialEM's Defocus is in µm, negative for underfocus; 0 is a real (focused) value.
    defocus_um = as_float(merged.get("Defocus"))
    acq.defocus = defocus_um * 1e-6 if defocus_um is not None else acq.defocus
    acq.detector = text_or_none(merged.get("CameraName")) or acq.detector
    cl_mm = positive(as_float(merged.get("CameraLength")))
    acq.camera_length = cl_mm * 1e-3 if cl_mm else acq.camera_length
    stamp = text_or_none(merged.get("DateTime"))
    if stamp:
        acq.acquired_at = parse_datetime(
            stamp, ("%d-%b-%y  %H:%M:%S", "%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S")
        )
    spacing = positive(as_float(merged.get("PixelSpacing")))
    if spacing is not None and series.pixel_size.x is None:
        series.pixel_size = PixelSize(x=spacing * 1e-10, y=spacing * 1e-10, z=series.pixel_size.z)


class MrcFile(ImageFile):
    format = "MRC"

    def __init__(self, path: Path, companions: Sequence[Path]) -> None:
        super().__init__(path)
        self._temp: Path | None = None
        with path.open("rb") as handle:
            head = handle.read(4)
        kind = _compression(head)
        source = path
        if kind is not None:
            self._temp = _inflate_to_temp(path, kind)
            source = self._temp
            self.format = f"MRC ({kind})"
        self._check_size(path, source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self._mrc = mrcfile.mmap(str(source), mode="r", permissive=True)
            except Exception as exc:
                self._cleanup()
                raise ReadError(f"{path.name}: broken MRC header ({exc})") from exc
        messages = [str(w.message).splitlines()[0][:200] for w in caught]
        if self._mrc.data is None:
            self.close()
            reason = "; ".join(messages) or "no data block"
            raise ReadError(f"{path.name}: MRC data unreadable ({reason})")
        series = MrcSeries(self._mrc, path.name)
        if int(self._mrc.header.mode) != 101:  # 4-bit voxels are unpacked by mrcfile
            series.read_positioned(source, HEADER_BYTES + int(self._mrc.header.nsymbt))
        series.warnings.extend(f"MRC header: {m}" for m in messages)
        exttyp = bytes(self._mrc.header.exttyp).decode("ascii", "replace").strip("\x00 ")
        if exttyp in ("FEI1", "FEI2"):
            try:
                _apply_fei(series, self._mrc.indexed_extended_header, exttyp)
            except Exception as exc:
                series.warnings.append(f"FEI extended header unreadable: {exc}")
        scan = None
        for companion in companions:
            scan = self._merge_sidecar(series, companion) or scan
        self.series = [series]
        if scan is not None:
            self.series = [_de_virtual_image(series, self._mrc.data, scan, path.name)]
            series.close()  # its positioned-read handle: the sums read the memory map

    def _check_size(self, path: Path, source: Path) -> None:
        with source.open("rb") as handle:
            head = handle.read(HEADER_BYTES)
        fields = _header_fields(head)
        if fields is None:
            self._cleanup()
            raise ReadError(f"{path.name}: not an MRC header")
        per_voxel = _MODE_BYTES[fields["mode"]]
        declared = (
            HEADER_BYTES + fields["next"] + fields["nx"] * fields["ny"] * fields["nz"] * per_voxel
        )
        if fields["mode"] == 101:
            declared = (
                HEADER_BYTES
                + fields["next"]
                + (fields["nx"] + 1) // 2 * fields["ny"] * fields["nz"]
            )
        actual = source.stat().st_size
        if actual < declared:
            self._cleanup()
            raise ReadError(
                f"{path.name}: MRC header declares {fields['nx']} x {fields['ny']} x {fields['nz']} "
                f"voxels ({declared} bytes with header) but the file has {actual} bytes"
            )
        if actual > declared:
            self.warnings.append(
                f"file is {actual - declared} bytes longer than its MRC header declares; "
                "trailing bytes ignored"
            )

    def _merge_sidecar(self, series: MrcSeries, companion: Path) -> tuple[int, int] | None:
        try:
            if companion.stat().st_size > 50_000_000:
                return None
            raw = companion.read_bytes()
        except OSError:
            return None
        if b"\x00" in raw[:4096]:
            return None
        text = raw.decode("utf-8", "replace")
        if "[ZValue" in text or ("PixelSpacing" in text[:4096] and "ImageFile" in text[:4096]):
            _apply_mdoc(series, _parse_mdoc(text))
        elif "Camera Model" in text or "Server Software Version" in text[:4096]:
            return _apply_de_info(series, _parse_key_values(text))
        return None

    def _cleanup(self) -> None:
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None

    def close(self) -> None:
        for series in getattr(self, "series", []):
            if isinstance(series, MrcSeries):
                series.close()
        mrc = getattr(self, "_mrc", None)
        if mrc is not None:
            mrc.close()
        self._cleanup()


class MrcReader(Reader):
    name = "mrc"

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_mrc(head, path)

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        return MrcFile(path, companions)
