"""`allmicro convert`: one original straight to an OME-Zarr directory, without the server."""

from __future__ import annotations

from pathlib import Path

from allmicro_data.ingest.pyramid import ProgressCallback, PyramidInfo, write_pyramid
from allmicro_data.ingest.readers import ReadError, open_image_file
from allmicro_data.storage.local import LocalStore


def convert_file(
    source: Path,
    target: Path,
    *,
    series_index: int = 0,
    ngff: str = "0.4",
    chunk: int | None = None,
    codec: str | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> PyramidInfo:
    """Convert one series of source into an OME-Zarr image at the directory target."""
    if ngff != "0.4" or chunk is not None or codec is not None or workers is not None:
        raise ValueError("this writer supports only NGFF 0.4 with its default chunks and codec")
    target = target.resolve()
    store = LocalStore(target)
    with open_image_file(source) as image_file:
        if not 0 <= series_index < len(image_file.series):
            raise ReadError(
                f"{source.name}: no series {series_index} (it has {len(image_file.series)})"
            )
        series = image_file.series[series_index]
        return write_pyramid(series, store, "", ome_xml=None, progress=progress)
