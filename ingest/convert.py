"""`allmicro convert`: one original straight to an OME-Zarr directory, without the server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from allmicro_data.ingest.pyramid import ProgressCallback, PyramidInfo, write_pyramid
from allmicro_data.ingest.readers import ReadError, open_image_file
from allmicro_data.storage.local import LocalStore, fsync_directory

# The pyramid is built in a hidden sibling directory and renamed into place when complete, so a
# killed conversion leaves no directory under the target name; the pid lets a rerun tell its
# own leftovers from those of a conversion that is still running.
STAGING_MARK = ".partial-"


def convert_file(
    source: Path,
    target: Path,
    *,
    series_index: int = 0,
    ngff: str = "0.4",
    chunk: int | None = None,
    codec: str | None = None,
    workers: int | None = None,
    shard: bool | None = None,
    progress: ProgressCallback | None = None,
    durable: bool = False,
) -> PyramidInfo:
    """Convert one series of source into an OME-Zarr image at the directory target.

    target must not exist. shard (NGFF 0.5 only) chooses one object per chunk row of a level
    (None: the default, sharded) or one per chunk (False). Like cp or the other OME-Zarr
    converters, the files are not fsynced unless durable is set: a killed process loses nothing
    the kernel has, and the final rename already makes a conversion visible all at once or not
    at all.
    """
    target = Path(os.path.abspath(target))
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(target)
    staging = target.with_name(f".{target.name}{STAGING_MARK}{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with open_image_file(source) as image_file:
            if not 0 <= series_index < len(image_file.series):
                raise ReadError(
                    f"{source.name}: no series {series_index} (it has {len(image_file.series)})"
                )
            series = image_file.series[series_index]
            info = write_pyramid(
                series,
                # No checksums: nothing records a manifest of this directory (the server's
                # ingest does, for fixity), and the converters we compare with compute none.
                # Not atomic per object: the staging directory is renamed into place whole.
                LocalStore(staging, durable=durable, checksums=False, atomic=False),
                "",
                ome_xml=series.ome_xml(),
                progress=progress,
                ngff=ngff,
                chunk=chunk,
                codec=codec,
                workers=workers,
                shard=shard,
            )
        os.rename(staging, target)
        if durable:
            fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def _remove_dead_staging(target: Path) -> None:
    prefix = f".{target.name}{STAGING_MARK}"
    for entry in target.parent.glob(f"{prefix}*"):
        pid_text = entry.name[len(prefix) :]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
