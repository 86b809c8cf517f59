"""Zeiss CZI (ZISRAW) files through Zeiss's pylibCZIrw (GPL-3.0/LGPL-3.0): each scene a series, mosaics stitched."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar
from xml.etree import ElementTree

import numpy as np

from allmicro_data.ingest.readers.base import (
    Acquisition,
    Channel,
    ImageFile,
    PixelSize,
    Reader,
    ReadError,
    Series,
)
from allmicro_data.ingest.readers.normalise import jsonable, parse_datetime, positive, to_utc
from allmicro_data.ingest.readers.tiff_vendors import parse_xml

# Every CZI starts with its file header segment, whose id is "ZISRAWFILE" padded to 16 bytes.
CZI_MAGIC = b"ZISRAWFILE"

# libCZI pixel types we read, with the numpy type of one sample and the samples per pixel.
PIXEL_TYPES = {
    "Gray8": ("uint8", 1),
    "Gray16": ("uint16", 1),
    "Gray32Float": ("float32", 1),
    "Bgr24": ("uint8", 3),
    "Bgr48": ("uint16", 3),
}


def _text(node: ElementTree.Element | None, path: str) -> str | None:
    found = node.find(path) if node is not None else None
    return found.text.strip() if found is not None and found.text and found.text.strip() else None


def _number(node: ElementTree.Element | None, path: str) -> float | None:
    text = _text(node, path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _colour(text: str | None) -> str | None:
    """ZEN writes display colours as #AARRGGBB (or #RRGGBB)."""
    match = re.fullmatch(r"#?(?:[0-9A-Fa-f]{2})?([0-9A-Fa-f]{6})", text or "")
    return match.group(1).upper() if match else None


class CziSeries(Series):
    """One scene (or the whole plane when the file has none): regions read through libCZI,
    which stitches the mosaic tiles that fall into them."""

    def __init__(
        self,
        image: CziImage,
        scene: int | None,
        box: tuple[int, int, int, int],
        sizes: dict[str, int],
        pixel_type: str,
        metadata: ElementTree.Element,
    ) -> None:
        super().__init__()
        self._image, self._scene, self._box = image, scene, box
        self._pixel_type = pixel_type
        dtype, samples = PIXEL_TYPES[pixel_type]
        self.dtype = np.dtype(dtype)
        self.rgb = samples == 3 and sizes["C"] == 1
        if samples == 3 and not self.rgb:
            raise ReadError(f"{image.path.name}: CZI with several colour (BGR) channels")
        full = {
            "t": sizes["T"],
            "c": 3 if self.rgb else sizes["C"],
            "z": sizes["Z"],
            "y": box[3],
            "x": box[2],
        }
        self.axes = "".join(a for a in "tczyx" if a in "yx" or full[a] > 1)
        self.shape = tuple(full[a] for a in self.axes)
        scaling = metadata.find("./Metadata/Scaling/Items")
        distances = {
            d.get("Id"): _number(d, "Value")
            for d in (scaling.findall("Distance") if scaling is not None else [])
        }
        self.pixel_size = PixelSize(
            x=positive(distances.get("X")),
            y=positive(distances.get("Y")),
            z=positive(distances.get("Z")) if "z" in self.axes else None,
        )
        title = _text(metadata, "./Metadata/Information/Document/Title")
        self.name = f"scene {scene + 1}" if scene is not None else (title or image.path.name)
        self.acquisition = _acquisition(metadata, full["c"] if not self.rgb else 0)

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        sl = dict(zip(self.axes, self.normalise_region(region), strict=True))
        full = {a: sl.get(a, slice(0, 1)) for a in "tczyx"}
        x0, y0 = self._box[0], self._box[1]
        roi = (
            x0 + full["x"].start,
            y0 + full["y"].start,
            full["x"].stop - full["x"].start,
            full["y"].stop - full["y"].start,
        )
        out = np.empty(tuple(s.stop - s.start for s in full.values()), dtype=self.dtype)
        channels = range(1) if self.rgb else range(full["c"].start, full["c"].stop)
        for ti, t in enumerate(range(full["t"].start, full["t"].stop)):
            for ci, c in enumerate(channels):
                for zi, z in enumerate(range(full["z"].start, full["z"].stop)):
                    plane = self._image.read_plane(roi, {"T": t, "C": c, "Z": z}, self._scene)
                    if self.rgb:
                        # libCZI gives BGR; channels are R, G, B.
                        out[ti, :, zi] = np.moveaxis(plane[..., ::-1], -1, 0)[full["c"]]
                    else:
                        out[ti, ci, zi] = plane[..., 0]
        return out.reshape(tuple(s.stop - s.start for a, s in full.items() if a in self.axes))


def _acquisition(metadata: ElementTree.Element, n_channels: int) -> Acquisition:
    acq = Acquisition(modality="optical", vendor="Zeiss")
    info = metadata.find("./Metadata/Information")
    acq.instrument = _text(info, "./Instrument/Microscopes/Microscope/System") or _text(
        info, "./Instrument/Microscopes/Microscope/Name"
    )
    objective = info.find("./Instrument/Objectives/Objective") if info is not None else None
    if objective is not None:
        acq.objective = _text(objective, "Manufacturer/Model") or objective.get("Name")
        acq.magnification = positive(_number(objective, "NominalMagnification"))
    acq.operator = _text(info, "./Document/UserName")
    stamp = _text(info, "./Image/AcquisitionDateAndTime") or _text(info, "./Document/CreationDate")
    if stamp:
        # ZEN writes ISO 8601 with 7 fractional digits and the zone offset.
        acq.acquired_at = to_utc(parse_datetime(stamp, ()))
    display = {
        channel.get("Id"): channel
        for channel in metadata.findall("./Metadata/DisplaySetting/Channels/Channel")
    }
    channels = metadata.findall("./Metadata/Information/Image/Dimensions/Channels/Channel")
    for index in range(n_channels):
        node = channels[index] if index < len(channels) else None
        shown = display.get(node.get("Id")) if node is not None else None

        def metres(path: str, node: ElementTree.Element | None = node) -> float | None:
            nm = positive(_number(node, path))
            return nm * 1e-9 if nm else None

        acq.channels.append(
            Channel(
                name=(node.get("Name") if node is not None else None)
                or (shown.get("Name") if shown is not None else None),
                excitation_wavelength=metres("ExcitationWavelength"),
                emission_wavelength=metres("EmissionWavelength"),
                color=_colour(_text(shown, "Color") or _text(node, "Color")),
            )
        )
    return acq


class CziImage(ImageFile):
    format = "Zeiss CZI"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from pylibCZIrw import czi

        # libCZI reads are not thread-safe on one document; the pyramid writer reads bands
        # from a pool, so reads take turns.
        self._lock = threading.Lock()
        self._doc = czi.CziReader(str(path))
        try:
            # The shared parser refuses DTDs (entity bombs) and answers None for broken XML.
            parsed = parse_xml(self._doc.raw_metadata or "")
            if parsed is None:
                raise ReadError(f"{path.name}: Zeiss CZI metadata is not readable XML")
            metadata = parsed
            total = self._doc.total_bounding_box
            sizes = {
                dim: int(total.get(dim, (0, 1))[1] - total.get(dim, (0, 1))[0]) for dim in "TZC"
            }
            pixel_types = set(self._doc.pixel_types.values())
            if len(pixel_types) != 1 or next(iter(pixel_types)) not in PIXEL_TYPES:
                raise ReadError(f"{path.name}: CZI pixel types {sorted(pixel_types)} are not read")
            pixel_type = next(iter(pixel_types))
            scenes = self._doc.scenes_bounding_rectangle
            if scenes:
                for scene, rect in sorted(scenes.items()):
                    box = (rect.x, rect.y, rect.w, rect.h)
                    self.series.append(CziSeries(self, scene, box, sizes, pixel_type, metadata))
            else:
                rect = self._doc.total_bounding_rectangle
                box = (rect.x, rect.y, rect.w, rect.h)
                self.series.append(CziSeries(self, None, box, sizes, pixel_type, metadata))
            for series in self.series:
                series.vendor = {"czi": jsonable(self._doc.metadata)}
        except BaseException:
            self._doc.close()
            raise

    def read_plane(
        self, roi: tuple[int, int, int, int], plane: dict[str, int], scene: int | None
    ) -> np.ndarray[Any, Any]:
        try:
            with self._lock:
                return np.asarray(self._doc.read(roi=roi, plane=plane, scene=scene))
        except (RuntimeError, ValueError, OSError) as exc:
            raise ReadError(f"{self.path.name}: broken Zeiss CZI file ({exc})") from exc

    def close(self) -> None:
        self._doc.close()


class CziReader(Reader):
    name: ClassVar[str] = "Zeiss CZI"

    def sniff(self, head: bytes, path: Path) -> bool:
        return head.startswith(CZI_MAGIC)

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        return CziImage(path)
