"""Nikon NIS-Elements ND2 files through the `nd2` package (BSD-3-Clause): each stage position a series."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

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

# ND2 (NIS-Elements 3+) starts with the chunk magic 0x0ABECEDA and the signature chunk's name.
# The legacy JPEG 2000 flavour is a JP2 file like any other and is not claimed here.
ND2_CHUNK_MAGIC = b"\xda\xce\xbe\x0a"
ND2_SIGNATURE = b"ND2 FILE SIGNATURE CHUNK NAME01!"

# nd2's axis letters onto ours; P (positions) makes series, S (RGB samples) is c.
_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
_UNIX_EPOCH_JDN = 2440587.5


def _from_julian_day(jdn: float | None) -> datetime | None:
    """NIS-Elements stamps frames with a Julian day number in UTC."""
    if not jdn or jdn < _UNIX_EPOCH_JDN:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=jdn - _UNIX_EPOCH_JDN)


def _nm(value: Any) -> float | None:
    return float(value) * 1e-9 if value and float(value) > 0 else None


def _colour(color: Any) -> str | None:
    try:
        return f"{int(color.r):02X}{int(color.g):02X}{int(color.b):02X}"
    except (AttributeError, TypeError, ValueError):
        return None


class Nd2Series(Series):
    """One stage position of an ND2 file, read lazily through nd2's dask array."""

    def __init__(self, nd2_file: Any, path: Path, size: int, position: int | None) -> None:
        super().__init__()
        source = path.name
        self._source, self._path, self._size = source, path, size
        array = nd2_file.to_dask()
        letters = list(nd2_file.sizes)
        unknown = [a for a in letters if a not in _AXES and a != "P"]
        if unknown or ("C" in letters and "S" in letters):
            raise ReadError(f"{source}: Nikon ND2 axes {''.join(letters)} are not read")
        if position is not None:
            array = array[(slice(None),) * letters.index("P") + (position,)]
            letters.remove("P")
        order = sorted(range(len(letters)), key=lambda i: "tczyx".index(_AXES[letters[i]]))
        self._array = array.transpose(order)
        self.axes = "".join(_AXES[letters[i]] for i in order)
        self.shape = tuple(int(n) for n in self._array.shape)
        self.dtype = np.dtype(self._array.dtype)
        self.rgb = bool(nd2_file.is_rgb) and "S" in letters
        voxel = nd2_file.voxel_size()  # micrometres
        self.pixel_size = PixelSize(
            x=positive(voxel.x * 1e-6) if voxel.x else None,
            y=positive(voxel.y * 1e-6) if voxel.y else None,
            z=positive(voxel.z * 1e-6) if voxel.z and "z" in self.axes else None,
        )
        self.name = source if position is None else f"{source} (position {position + 1})"
        self.acquisition = _acquisition(nd2_file)
        text_info = dict(nd2_file.text_info or {})
        self.vendor = {
            "nd2": jsonable(
                {
                    "sizes": dict(nd2_file.sizes),
                    "attributes": nd2_file.attributes._asdict()
                    if nd2_file.attributes is not None
                    else None,
                    "text_info": text_info,
                    "experiment": [loop.__dict__ for loop in nd2_file.experiment or []],
                }
            )
        }

    def read(self, region: Sequence[slice] | None = None) -> np.ndarray[Any, Any]:
        # nd2 fills frames it cannot read with zeros; a file cut short must fail instead.
        if self._path.stat().st_size < self._size:
            raise ReadError(f"{self._source}: Nikon ND2 file was truncated after it was opened")
        try:
            return np.asarray(self._array[self.normalise_region(region)].compute())
        except (ValueError, OSError, IndexError) as exc:
            raise ReadError(f"{self._source}: broken Nikon ND2 file ({exc})") from exc


def _acquisition(nd2_file: Any) -> Acquisition:
    acq = Acquisition(modality="optical", vendor="Nikon")
    metadata = nd2_file.metadata
    text_info = nd2_file.text_info or {}
    capturing = str(text_info.get("capturing") or "").strip().splitlines()
    # The first line of the capture settings names the camera or scan head ("Nikon A1plus").
    acq.instrument = (capturing[0].strip() or None) if capturing else None
    for channel in getattr(metadata, "channels", None) or []:
        acq.channels.append(
            Channel(
                name=channel.channel.name or None,
                excitation_wavelength=_nm(channel.channel.excitationLambdaNm),
                emission_wavelength=_nm(channel.channel.emissionLambdaNm),
                color=_colour(channel.channel.color),
            )
        )
        microscope = channel.microscope
        if acq.objective is None and microscope.objectiveName:
            acq.objective = microscope.objectiveName
            acq.magnification = positive(microscope.objectiveMagnification or 0)
    try:
        stamp = nd2_file.frame_metadata(0).channels[0].time.absoluteJulianDayNumber
    except (AttributeError, IndexError, ValueError):
        stamp = None
    acq.acquired_at = _from_julian_day(stamp)
    return acq


class _Unmappable(io.RawIOBase):
    """A file stream without a descriptor: reads and seeks go through, memory maps cannot."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._raw.readinto(buffer) or 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()
        super().close()


class Nd2Image(ImageFile):
    format = "Nikon ND2"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        import nd2

        self._size = path.stat().st_size
        # nd2 memory-maps a file it can get a descriptor of; a file that shrinks under a map
        # kills the process (SIGBUS), so it gets a stream without one and reads frames by seek.
        stream = io.BufferedReader(_Unmappable(io.FileIO(path, "rb")))
        try:
            self._file = nd2.ND2File(stream)
        except BaseException:
            stream.close()
            raise
        try:
            positions = int(self._file.sizes.get("P", 0))
            for position in range(positions) if positions else [None]:
                self.series.append(Nd2Series(self._file, path, self._size, position))
        except ValueError as exc:
            self._file.close()
            if "ChunkMap" in str(exc):
                # The chunk map is the file's last chunk: a cut file loses it first.
                raise ReadError(
                    f"{path.name}: Nikon ND2 file is truncated or broken "
                    "(its chunk map, at the end of the file, is unreadable)"
                ) from exc
            raise
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()


class Nd2Reader(Reader):
    name: ClassVar[str] = "Nikon ND2"

    def sniff(self, head: bytes, path: Path) -> bool:
        return head[:4] == ND2_CHUNK_MAGIC and ND2_SIGNATURE in head[:64]

    def open(self, path: Path, companions: Sequence[Path] = ()) -> ImageFile:
        return Nd2Image(path)
