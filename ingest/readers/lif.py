"""Leica LIF project files (LAS X / LAS AF) through readlif: every image of the project is a series."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from xml.etree.ElementTree import Element

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
from allmicro_data.ingest.readers.normalise import jsonable, positive

# A LIF file starts with the test value 0x70, a length, then the XML block's marker 0x2A.
LIF_MAGIC = b"\x70\x00\x00\x00"

# LIF dimension ids (ImageDescription/Dimensions/DimensionDescription@DimID).
DIM_X, DIM_Y, DIM_Z, DIM_T = 1, 2, 3, 4
DIM_LAMBDA_EMISSION, DIM_LAMBDA_EXCITATION, DIM_MOSAIC = 5, 9, 10
_NAMED_DIMS = {DIM_X, DIM_Y, DIM_Z, DIM_T, DIM_LAMBDA_EMISSION, DIM_LAMBDA_EXCITATION, DIM_MOSAIC}

# LAS X look-up tables by name, as the display colour of a channel.
LUT_COLOURS = {
    "red": "FF0000",
    "green": "00FF00",
    "blue": "0000FF",
    "cyan": "00FFFF",
    "magenta": "FF00FF",
    "yellow": "FFFF00",
    "gray": "FFFFFF",
    "grey": "FFFFFF",
}

# Windows FILETIME: 100 ns ticks since 1601-01-01 UTC.
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def _filetime(text: str) -> datetime | None:
    try:
        ticks = int(text, 16)
    except ValueError:
        return None
    stamp = _FILETIME_EPOCH + timedelta(microseconds=ticks / 10)
    return stamp if 1990 <= stamp.year <= 2100 else None


class LifSeries(Series):
    """One LIF image (one mosaic tile of it): planes read one at a time through readlif."""

    def __init__(self, image: Any, element: Element | None, tile: int, tiles: int) -> None:
        super().__init__()
        self._image = image
        self._tile = tile
        source = Path(image.filename).name
        dims: dict[int, int] = {int(k): int(v) for k, v in image.dims_n.items()}
        unknown = sorted(d for d, n in dims.items() if d not in _NAMED_DIMS and n > 1)
        if unknown:
            raise ReadError(
                f"{source}: Leica LIF image {image.name!r} has dimensions LIF id {unknown} not read"
            )
        scales: dict[int, float] = {int(k): float(v) for k, v in image.scale_n.items() if v}
        columns_dim, rows_dim = (int(d) for d in image.display_dims)
        if columns_dim != DIM_X:
            raise ReadError(
                f"{source}: Leica LIF image {image.name!r} is not scanned along x first"
            )
        bits = int(image.bit_depth[0])
        self.dtype = np.dtype("uint8" if bits <= 8 else "uint16")
        # Spectral (lambda) scans have one detector channel and a wavelength per plane: the
        # wavelengths become the channels. Otherwise channels are the detector channels.
        self._lambda_dim = next(
            (d for d in (DIM_LAMBDA_EMISSION, DIM_LAMBDA_EXCITATION) if dims.get(d, 1) > 1), None
        )
        n_channels = int(image.channels)
        if self._lambda_dim is not None and n_channels == 1:
            n_channels = dims[self._lambda_dim]
        else:
            self._lambda_dim = None
        # The stack axis: z for xy images, y for xz scans (rows are then depth).
        stack_dim = DIM_Z if rows_dim == DIM_Y else DIM_Y
        sizes = {
            "t": dims.get(DIM_T, 1),
            "c": n_channels,
            "z": dims.get(stack_dim, 1),
            "y": dims[rows_dim],
            "x": dims[DIM_X],
        }
        self.axes = "".join(a for a in "tczyx" if a in "yx" or sizes[a] > 1)
        self.shape = tuple(sizes[a] for a in self.axes)
        self._dims = {"t": DIM_T, "z": stack_dim}

        def metres(dim: int) -> float | None:
            # readlif gives pixels per micrometre.
            per_um = scales.get(dim)
            return 1e-6 / per_um if per_um else None

        self.pixel_size = PixelSize(x=metres(DIM_X), y=metres(rows_dim), z=metres(stack_dim))
        if "t" in self.axes and scales.get(DIM_T):
            # readlif gives frames per second along t.
            self.axis_calibration["t"] = (1.0 / scales[DIM_T], "s")
        if rows_dim == DIM_Z:
            self.warnings.append("x-z scan: the image rows run along z (depth), not y")
        self.name = str(image.name) + (f" (tile {tile + 1} of {tiles})" if tiles > 1 else "")
        settings = image.settings or {}
        self.acquisition = _acquisition(settings, element, n_channels, self._lambda_dim)
        self.vendor = {
            "leica_lif": jsonable(
                {"path": image.path, "dims": dims, "scale": scales, "settings": settings}
            )
        }

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        sl = dict(zip(self.axes, self.normalise_region(region), strict=True))
        full = {a: sl.get(a, slice(0, 1)) for a in "tczyx"}
        out = np.empty(tuple(full[a].stop - full[a].start for a in "tczyx"), dtype=self.dtype)
        for ti, t in enumerate(range(full["t"].start, full["t"].stop)):
            for ci, c in enumerate(range(full["c"].start, full["c"].stop)):
                for zi, z in enumerate(range(full["z"].start, full["z"].stop)):
                    requested = {self._dims["t"]: t, self._dims["z"]: z, DIM_MOSAIC: self._tile}
                    channel = c
                    if self._lambda_dim is not None:
                        requested[self._lambda_dim] = c
                        channel = 0
                    try:
                        plane = np.asarray(
                            self._image.get_plane(c=channel, requested_dims=requested)
                        )
                    except (ValueError, OSError) as exc:
                        # readlif reads from the file each time: bytes gone or short end here.
                        name = Path(self._image.filename).name
                        raise ReadError(f"{name}: broken Leica LIF file ({exc})") from exc
                    out[ti, ci, zi] = plane[full["y"], full["x"]]
        return out.reshape(tuple(full[a].stop - full[a].start for a in self.axes))


def _acquisition(
    settings: dict[str, Any], element: Element | None, n_channels: int, lambda_dim: int | None
) -> Acquisition:
    acq = Acquisition(modality="optical", vendor="Leica Microsystems")
    acq.instrument = str(settings.get("MicroscopeModel") or "").strip() or None
    objective = str(settings.get("ObjectiveName") or "").strip()
    acq.objective = objective or None
    try:
        acq.magnification = positive(float(settings.get("Magnification") or 0))
    except ValueError:
        acq.magnification = None
    if element is None:
        return acq
    stamps = element.find("./Data/Image/TimeStampList")
    if stamps is not None and stamps.text:
        first = stamps.text.split()
        acq.acquired_at = _filetime(first[0]) if first else None
    if lambda_dim is None:
        # LIF channels have no names; their look-up table is how LAS X shows them.
        for description in element.iterfind("./Data/Image/ImageDescription/Channels/"):
            lut = (description.get("LUTName") or "").strip()
            acq.channels.append(Channel(color=LUT_COLOURS.get(lut.lower())))
        del acq.channels[n_channels:]
        return acq
    # A lambda scan's planes are wavelengths from Origin over Length, evenly spaced.
    for dimension in element.iterfind("./Data/Image/ImageDescription/Dimensions/"):
        if dimension.get("DimID") != str(lambda_dim) or dimension.get("Unit") != "m":
            continue
        origin, length = float(dimension.get("Origin", 0)), float(dimension.get("Length", 0))
        step = length / (n_channels - 1) if n_channels > 1 else 0.0
        for i in range(n_channels):
            wavelength = origin + i * step
            name = (
                f"{'em' if lambda_dim == DIM_LAMBDA_EMISSION else 'ex'} {wavelength * 1e9:.0f} nm"
            )
            if lambda_dim == DIM_LAMBDA_EMISSION:
                acq.channels.append(Channel(name=name, emission_wavelength=wavelength))
            else:
                acq.channels.append(Channel(name=name, excitation_wavelength=wavelength))
    return acq


class LifFileImage(ImageFile):
    format = "Leica LIF"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from readlif.reader import LifFile

        lif = LifFile(str(path))
        size = os.path.getsize(path)
        elements = [e for e in lif.xml_root.iter("Element") if e.find("./Data/Image") is not None]
        for index in range(lif.num_images):
            start, length = lif.offsets[index]
            image = lif.get_image(index)
            needed = int(np.prod(list(image.dims_n.values()))) * int(image.channels)
            needed *= max(1, int(image.bit_depth[0]) // 8 if image.bit_depth[0] > 8 else 1)
            if length <= 0 or start + length > size or length < needed:
                raise ReadError(
                    f"{path.name}: Leica LIF image {image.name!r} is truncated "
                    f"({max(0, min(length, size - start))} of {needed} bytes present)"
                )
            element = elements[index] if index < len(elements) else None
            tiles = int(image.dims_n.get(DIM_MOSAIC, 1))
            for tile in range(tiles):
                self.series.append(LifSeries(image, element, tile, tiles))


class LifReader(Reader):
    name: ClassVar[str] = "Leica LIF"

    def sniff(self, head: bytes, path: Path) -> bool:
        # 0x70 test value, the XML block's length, then 0x2A and the UTF-16 XML header.
        return head[:4] == LIF_MAGIC and len(head) > 8 and head[8] == 0x2A

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        return LifFileImage(path)
