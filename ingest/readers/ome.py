"""OME metadata (ome-types) -> our series; reader for standalone OME-XML documents (BinData or TIFFs)."""

from __future__ import annotations

import base64
import bz2
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

if TYPE_CHECKING:
    from ome_types import model as ome_model

from allmicro_data.ingest.readers.base import (
    AXIS_ORDER,
    Acquisition,
    Channel,
    ImageFile,
    PixelSize,
    Reader,
    ReadError,
    Series,
)
from allmicro_data.ingest.readers.normalise import jsonable, length_factor, positive, to_utc

# An OME-XML document larger than this is not metadata; refuse it before parsing.
MAX_OME_XML_BYTES = 256 * 1024 * 1024

_PIXEL_TYPES = {
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "float": "float32",
    "double": "float64",
    "bit": "bool",
}


def _unit_text(unit: Any) -> str | None:
    return None if unit is None else str(getattr(unit, "value", unit))


def _length_m(value: Any, unit: Any) -> float | None:
    if value is None:
        return None
    factor = length_factor(_unit_text(unit) or "µm")
    return positive(float(value) * factor) if factor else None


def pixel_type(pixels: ome_model.Pixels) -> np.dtype[Any]:
    name = str(getattr(pixels.type, "value", pixels.type))
    if name not in _PIXEL_TYPES:
        raise ReadError(f"OME pixel type {name!r} is not supported")
    dtype = np.dtype(_PIXEL_TYPES[name])
    return dtype


def _instrument(ome: ome_model.OME, image: ome_model.Image) -> ome_model.Instrument | None:
    if image.instrument_ref is not None:
        for instrument in ome.instruments:
            if instrument.id == image.instrument_ref.id:
                return instrument
    # Without a reference only a single instrument in the document can be the one used.
    return ome.instruments[0] if len(ome.instruments) == 1 else None


def _describe_objective(objective: ome_model.Objective) -> str | None:
    parts = [
        p
        for p in (
            objective.manufacturer,
            objective.model,
            f"{objective.nominal_magnification:g}x" if objective.nominal_magnification else None,
            f"NA {objective.lens_na:g}" if objective.lens_na else None,
            str(objective.immersion.value) if objective.immersion is not None else None,
        )
        if p
    ]
    return ", ".join(parts) or None


def _describe_detector(detector: ome_model.Detector) -> str | None:
    kind = str(detector.type.value) if detector.type is not None else None
    name = " ".join(p for p in (detector.manufacturer, detector.model) if p) or detector.id
    return f"{name} ({kind})" if kind else name


def apply_ome_image(series: Series, ome: ome_model.OME, index: int) -> None:
    """Fill a series' calibration, acquisition facts and vendor keys from OME image `index`."""
    image = ome.images[index]
    pixels = image.pixels
    series.name = image.name or series.name
    series.pixel_size = PixelSize(
        x=_length_m(pixels.physical_size_x, pixels.physical_size_x_unit),
        y=_length_m(pixels.physical_size_y, pixels.physical_size_y_unit),
        z=_length_m(pixels.physical_size_z, pixels.physical_size_z_unit),
    )
    if pixels.time_increment:
        unit = _unit_text(pixels.time_increment_unit) or "s"
        series.axis_calibration["t"] = (float(pixels.time_increment), unit)
    acq = Acquisition()
    acq.acquired_at = to_utc(image.acquisition_date)
    instrument = _instrument(ome, image)
    objective = None
    if instrument is not None:
        if instrument.microscope is not None:
            mic = instrument.microscope
            acq.vendor = mic.manufacturer or None
            acq.instrument = " ".join(p for p in (mic.manufacturer, mic.model) if p) or None
        if image.objective_settings is not None:
            objective = next(
                (o for o in instrument.objectives if o.id == image.objective_settings.id), None
            )
        elif len(instrument.objectives) == 1:
            objective = instrument.objectives[0]
        if objective is not None:
            acq.objective = _describe_objective(objective)
            if objective.nominal_magnification:
                acq.magnification = float(objective.nominal_magnification)
        detector_ids = [c.detector_settings.id for c in pixels.channels if c.detector_settings]
        detectors = [d for d in instrument.detectors if d.id in detector_ids]
        if not detectors and len(instrument.detectors) == 1:
            detectors = list(instrument.detectors)
        names = [n for n in (_describe_detector(d) for d in detectors) if n]
        acq.detector = "; ".join(dict.fromkeys(names)) or None
    if image.experimenter_ref is not None:
        for person in ome.experimenters:
            if person.id == image.experimenter_ref.id:
                full = " ".join(p for p in (person.first_name, person.last_name) if p)
                acq.operator = full or person.user_name or person.email
    exposures = {p.exposure_time for p in pixels.planes if p.exposure_time is not None}
    if len(exposures) == 1 and pixels.planes and pixels.planes[0].exposure_time is not None:
        unit = _unit_text(pixels.planes[0].exposure_time_unit) or "s"
        from allmicro_data.ingest.readers.normalise import TIME_UNITS

        factor = TIME_UNITS.get(unit.lower())
        acq.exposure_time = (
            positive(float(pixels.planes[0].exposure_time) * factor) if factor else None
        )
    for channel in pixels.channels:
        acq.channels.append(
            Channel(
                name=channel.name,
                excitation_wavelength=_length_m(
                    channel.excitation_wavelength, channel.excitation_wavelength_unit
                ),
                emission_wavelength=_length_m(
                    channel.emission_wavelength, channel.emission_wavelength_unit
                ),
                color=_channel_colour(channel),
            )
        )
    optical_hint = objective is not None or any(
        c.excitation_wavelength or c.emission_wavelength or c.acquisition_mode
        for c in pixels.channels
    )
    acq.modality = "optical" if optical_hint else None
    series.acquisition = acq
    series.vendor = {
        "ome": jsonable(
            {
                "creator": ome.creator,
                "image": image.model_dump(
                    mode="json",
                    exclude_none=True,
                    exclude={"pixels": {"bin_data_blocks", "tiff_data_blocks", "metadata_only"}},
                ),
                "instrument": instrument.model_dump(mode="json", exclude_none=True)
                if instrument is not None
                else None,
            }
        )
    }


def _channel_colour(channel: ome_model.Channel) -> str | None:
    # OME stores RGBA; the default (-1, opaque white) means nobody chose a colour.
    if channel.color is None or "color" not in channel.model_fields_set:
        return None
    rgb = channel.color.as_rgb_tuple(alpha=False)
    return "".join(f"{v:02X}" for v in rgb)


def ome_dims(pixels: ome_model.Pixels) -> tuple[str, tuple[int, ...], dict[str, int]]:
    """Our axes (singleton t/c/z dropped) and shape, plus every OME dimension's size."""
    sizes = {
        "t": pixels.size_t,
        "c": pixels.size_c,
        "z": pixels.size_z,
        "y": pixels.size_y,
        "x": pixels.size_x,
    }
    axes = "".join(a for a in AXIS_ORDER if a in "yx" or sizes[a] > 1)
    return axes, tuple(int(sizes[a]) for a in axes), sizes


def valid_ome_xml(text: str) -> bool:
    """True when the document validates against the current OME schema (older schemas and
    vendor quirks do not; those series get an OME-XML built by us instead)."""
    try:
        import ome_types  # imported on use: it takes most of a second to load

        ome_types.validate_xml(text)
    except Exception:
        return False
    return True


class OmeXmlSeries(Series):
    """One OME image whose pixels are BinData planes or planes in supplied TIFF files."""

    source_document: str | None = None

    def ome_xml(self) -> str | None:
        return self.source_document

    def __init__(
        self, ome: ome_model.OME, index: int, companions: dict[str, Path], label: str
    ) -> None:
        super().__init__()
        image = ome.images[index]
        pixels = image.pixels
        self.name = image.name or f"series {index}"
        self.axes, self.shape, self._sizes = ome_dims(pixels)
        self.dtype = pixel_type(pixels)
        self._order = str(pixels.dimension_order.value)  # e.g. "XYZCT"
        apply_ome_image(self, ome, index)
        n_planes = pixels.size_z * pixels.size_c * pixels.size_t
        self._bin_blocks = list(pixels.bin_data_blocks)
        self._big_endian = bool(pixels.big_endian)
        self._tiff_planes: dict[int, tuple[Path, int]] = {}
        if self._bin_blocks:
            if len(self._bin_blocks) != n_planes:
                self.viewable = False
                self.warnings.append(
                    f"{label}: {len(self._bin_blocks)} BinData blocks for {n_planes} planes; "
                    "pixels not read"
                )
        elif pixels.tiff_data_blocks:
            missing = self._map_tiff_planes(pixels, companions)
            if missing:
                self.viewable = False
                self.warnings.append(
                    f"{label}: pixel data are in files that were not supplied: "
                    + ", ".join(sorted(missing)[:5])
                )
        else:
            self.viewable = False
            self.warnings.append(f"{label}: metadata only, the document holds no pixel data")

    def _plane_index(self, z: int, c: int, t: int) -> int:
        # Planes are stored in the order the last three letters of DimensionOrder give.
        coords = {"Z": z, "C": c, "T": t}
        sizes = {"Z": self._sizes["z"], "C": self._sizes["c"], "T": self._sizes["t"]}
        index, stride = 0, 1
        for letter in self._order[2:]:
            index += coords[letter] * stride
            stride *= sizes[letter]
        return index

    def _map_tiff_planes(self, pixels: ome_model.Pixels, companions: dict[str, Path]) -> set[str]:
        missing: set[str] = set()
        for block in pixels.tiff_data_blocks:
            file_name = block.uuid.file_name if block.uuid is not None else None
            if not file_name:
                missing.add("(TiffData without a file name)")
                continue
            path = companions.get(Path(file_name).name)
            if path is None:
                missing.add(Path(file_name).name)
                continue
            count = block.plane_count or 1
            start = self._plane_index(block.first_z or 0, block.first_c or 0, block.first_t or 0)
            for k in range(count):
                self._tiff_planes[start + k] = (path, (block.ifd or 0) + k)
        return missing

    def _plane(self, z: int, c: int, t: int) -> np.ndarray[Any, Any]:
        index = self._plane_index(z, c, t)
        ny, nx = self._sizes["y"], self._sizes["x"]
        if self._bin_blocks:
            block = self._bin_blocks[index]
            raw = block.value
            data = raw if isinstance(raw, bytes) else base64.b64decode(raw)
            compression = str(getattr(block.compression, "value", block.compression) or "none")
            expected = ny * nx * self.dtype.itemsize
            if compression == "zlib":
                data = zlib.decompressobj().decompress(data, expected)
            elif compression == "bzip2":
                data = bz2.BZ2Decompressor().decompress(data, expected)
            if len(data) < expected:
                raise ReadError(
                    f"BinData plane {index} holds {len(data)} bytes, expected {expected}"
                )
            dtype = self.dtype.newbyteorder(">" if self._big_endian else "<")
            return np.frombuffer(data[:expected], dtype=dtype).reshape(ny, nx).astype(self.dtype)
        if index in self._tiff_planes:
            path, ifd = self._tiff_planes[index]
            with tifffile.TiffFile(path) as tiff:
                if ifd >= len(tiff.pages):
                    raise ReadError(f"{path.name} has no IFD {ifd}")
                page = tiff.pages[ifd]
                plane = np.asarray(page.asarray())  # type: ignore[union-attr]
            return plane.reshape(ny, nx)
        raise ReadError("pixel data of this OME image were not supplied")

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        if not self.viewable:
            raise ReadError(f"{self.name}: no pixel data available")
        sl = dict(zip(self.axes, self.normalise_region(region), strict=True))
        full = {a: sl.get(a, slice(0, 1)) for a in AXIS_ORDER}
        out = np.empty(tuple(full[a].stop - full[a].start for a in AXIS_ORDER), dtype=self.dtype)
        for ti, t in enumerate(range(full["t"].start, full["t"].stop)):
            for ci, c in enumerate(range(full["c"].start, full["c"].stop)):
                for zi, z in enumerate(range(full["z"].start, full["z"].stop)):
                    out[ti, ci, zi] = self._plane(z, c, t)[full["y"], full["x"]]
        squeeze = tuple(i for i, a in enumerate(AXIS_ORDER) if a not in self.axes)
        return out.squeeze(axis=squeeze) if squeeze else out


class OmeXmlFile(ImageFile):
    format = "OME-XML"

    def __init__(self, path: Path, companions: Sequence[Path]) -> None:
        super().__init__(path)
        size = path.stat().st_size
        if size > MAX_OME_XML_BYTES:
            raise ReadError(f"{path.name}: OME-XML document of {size} bytes is too large")
        try:
            import ome_types

            ome = ome_types.from_xml(path)
        except Exception as exc:
            raise ReadError(f"{path.name}: invalid OME-XML ({_first_line(exc)})") from exc
        if not ome.images:
            raise ReadError(f"{path.name}: OME-XML document describes no images")
        self._xml = path.read_text(encoding="utf-8", errors="replace")
        by_name = {p.name: p for p in companions}
        document = self._xml if valid_ome_xml(self._xml) else None
        for i in range(len(ome.images)):
            series = OmeXmlSeries(ome, i, by_name, path.name)
            series.source_document = document
            self.series.append(series)

    def document(self) -> str:
        return self._xml


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


_OME_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?OME[\s>]")


def sniff_ome_xml(head: bytes) -> bool:
    """An XML document whose root element is OME (any namespace prefix) in an OME schema."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    return (
        text.startswith(b"<")
        and _OME_ROOT.search(text) is not None
        and b"openmicroscopy.org/Schemas/OME" in text
    )


class OmeXmlReader(Reader):
    name = "ome-xml"

    def sniff(self, head: bytes, path: Path) -> bool:
        return sniff_ome_xml(head)

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        return OmeXmlFile(path, companions)
