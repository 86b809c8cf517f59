"""Format readers, found by content. To add a format: write one module, add it to REGISTRY."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from allmicro_data.ingest.readers.base import (
    Acquisition,
    Channel,
    ImageFile,
    PixelSize,
    Reader,
    ReadError,
    Series,
    UnsupportedFormat,
)
from allmicro_data.ingest.readers.czi import CziReader
from allmicro_data.ingest.readers.diffraction import DiffractionReader
from allmicro_data.ingest.readers.facts import settle_facts
from allmicro_data.ingest.readers.lif import LifReader
from allmicro_data.ingest.readers.mrc import MrcReader
from allmicro_data.ingest.readers.nd2 import Nd2Reader
from allmicro_data.ingest.readers.ome import OmeXmlReader
from allmicro_data.ingest.readers.phenom import bzip2_head
from allmicro_data.ingest.readers.rosettasciio import RsciioReader
from allmicro_data.ingest.readers.tiff import TiffReader
from allmicro_data.ingest.sanity import sanity_warnings

# Order matters where formats nest: readers with exact magic bytes come first; MRC has none
# (its header is recognised by plausible values), so it goes last.
REGISTRY: list[Reader] = [
    TiffReader(),
    RsciioReader(),
    DiffractionReader(),
    LifReader(),
    CziReader(),
    Nd2Reader(),
    OmeXmlReader(),
    MrcReader(),
]

SNIFF_BYTES = 4096


def sniff(path: Path) -> Reader:
    """The reader whose format the file's content shows; the extension is never consulted."""
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise ReadError(f"{path.name}: cannot be opened ({exc.strerror or exc})") from exc
    if not head:
        raise ReadError(f"{path.name}: file is empty (0 bytes)")
    for reader in REGISTRY:
        if reader.sniff(head, path):
            return reader
    if head[:3] == b"BZh" and bzip2_head(path)[1]:
        # Nothing of the content shows before bzip2's first block is whole (Phenom ELID).
        raise ReadError(f"{path.name}: bzip2 stream is truncated before its first block ends")
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh":
        kind = "gzip" if head[:2] == b"\x1f\x8b" else "bzip2"
        raise UnsupportedFormat(
            f"{path.name}: unrecognised {kind}-compressed content (only MRC maps are read "
            "compressed; upload other formats uncompressed)"
        )
    raise UnsupportedFormat(f"{path.name}: unrecognised file format (content matches no reader)")


def open_image_file(path: Path, companions: Sequence[Path] = ()) -> ImageFile:
    """Open an original with the reader its content calls for."""
    reader = sniff(path)
    try:
        image_file = reader.open(path, companions)
        for series in image_file.series:
            settle_facts(series, image_file.format)
            series.warnings.extend(sanity_warnings(series))
        return image_file
    except ReadError:
        raise
    except MemoryError:
        raise ReadError(f"{path.name}: {reader.name} data too large to read") from None
    except Exception as exc:
        raise ReadError(
            f"{path.name}: broken {reader.name} file ({type(exc).__name__}: {exc})"
        ) from exc


__all__ = [
    "REGISTRY",
    "Acquisition",
    "Channel",
    "ImageFile",
    "PixelSize",
    "ReadError",
    "Reader",
    "Series",
    "UnsupportedFormat",
    "open_image_file",
    "sniff",
]
