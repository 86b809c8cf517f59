"""The one small interface every format reader implements: files hold series; series hold pixels and metadata."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# The record readers fill lives in the core, with the table of its fields every layer reads.
from allmicro_data.acquisition import Acquisition as Acquisition
from allmicro_data.acquisition import Channel as Channel

AXIS_ORDER = "tczyx"


class ReadError(Exception):
    """A file cannot be read: unknown format, broken structure, or hostile content.

    The message is one line a user can act on; it never includes a traceback.
    """


class UnsupportedFormat(ReadError):
    """No registered reader recognises the file's content."""


@dataclass(frozen=True, slots=True)
class PixelSize:
    """Physical size of one pixel (voxel) along each spatial axis, in metres; None when unknown."""

    x: float | None = None
    y: float | None = None
    z: float | None = None

    def for_axis(self, axis: str) -> float | None:
        return {"x": self.x, "y": self.y, "z": self.z}.get(axis)


class Series(abc.ABC):
    """One image series: an n-dimensional array with named axes, calibration and metadata.

    Axes are a subset of "tczyx" in that order (RGB data is c=3 with `rgb` set). `read` returns
    only the region asked for and must not load more of the file than that region needs.
    """

    name: str = ""
    axes: str = "yx"
    shape: tuple[int, ...] = ()
    dtype: np.dtype[Any] = np.dtype("uint8")
    rgb: bool = False
    pixel_size: PixelSize = PixelSize()
    acquisition: Acquisition
    vendor: dict[str, Any]
    warnings: list[str]
    # The region of the raster that is image (y0, y1, x0, x1), when part of it is not, such as
    # an SEM data bar burned into the bottom rows; None means the whole raster.
    image_region: tuple[int, int, int, int] | None = None
    # True when z is a third spatial axis sampled like y and x (tomograms, EM maps, FIB-SEM
    # volumes): pyramids then downsample z too. Focal z-stacks and tilt series leave it False.
    is_volume: bool = False
    # False for data that is catalogued with its metadata but gets no pyramid: spectra, spectrum
    # images, 4D-STEM, or an OME-XML document whose pixels live in files that were not supplied.
    viewable: bool = True
    # True for a thumbnail or preview the file carries beside the real image (Olympus SIS, DM).
    preview: bool = False
    # Calibrations that are not lengths in metres, per axis letter, as (scale, unit) the file
    # states them: reciprocal space ("1/nm") for diffraction patterns, "s" for frame time, "eV".
    axis_calibration: dict[str, tuple[float, str]]

    def __init__(self) -> None:
        self.acquisition = Acquisition()
        self.vendor = {}
        self.warnings = []
        self.axis_calibration = {}

    @abc.abstractmethod
    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        """Pixels of region (one slice per axis, in `axes` order); None reads everything."""

    def levels(self) -> list[Series]:
        """Sub-resolutions the file already carries, largest first (empty if none)."""
        return []

    def ome_xml(self) -> str | None:
        """The OME-XML document describing this series, if the reader builds one itself."""
        return None

    def normalise_region(self, region: Sequence[slice] | None) -> tuple[slice, ...]:
        """Region with one concrete slice per axis, clipped to the shape; step must be 1."""
        if region is None:
            return tuple(slice(0, n) for n in self.shape)
        if len(region) != len(self.shape):
            raise ValueError(f"region has {len(region)} slices, series has axes {self.axes!r}")
        out = []
        for sl, n in zip(region, self.shape, strict=True):
            start, stop, step = sl.indices(n)
            if step != 1:
                raise ValueError("strided regions are not supported")
            out.append(slice(start, max(start, stop)))
        return tuple(out)


class ImageFile(abc.ABC):
    """An opened original (plus companions): its format and the series it holds."""

    format: str = ""
    path: Path
    series: list[Series]
    warnings: list[str]

    def __init__(self, path: Path) -> None:
        self.path = path
        self.series = []
        self.warnings = []

    @property
    def primary_series(self) -> int:
        """Index of the series that is the acquisition itself (the first that is not a preview)."""
        for index, series in enumerate(self.series):
            if not series.preview:
                return index
        return 0

    def close(self) -> None:  # noqa: B027 - readers without handles have nothing to close
        """Release file handles."""

    def __enter__(self) -> ImageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reader(abc.ABC):
    """A format family. Register new readers in `allmicro_data.ingest.readers.REGISTRY`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def sniff(self, head: bytes, path: Path) -> bool:
        """True when the first bytes of the file (up to 4 KiB) show this format."""

    @abc.abstractmethod
    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        """Open the file; companions are other files of the same acquisition (sidecars)."""
