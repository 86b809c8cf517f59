"""`allmicro info`: what a file holds, as the JSON document other tools read."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from allmicro_data.ingest.grouping import find_companions, group_files
from allmicro_data.ingest.readers import ReadError, Series, open_image_file
from allmicro_data.ingest.readers.jeol import project_companions


def series_summary(series: Series) -> dict[str, Any]:
    ps = series.pixel_size
    return {
        "name": series.name,
        "axes": series.axes.upper(),
        "shape": list(series.shape),
        "dtype": str(series.dtype),
        "pixel_size": {"x": ps.x, "y": ps.y, "z": ps.z},
        "acquisition": series.acquisition.to_json(),
        "vendor": series.vendor,
        "warnings": list(series.warnings),
        # Beyond the documented contract: what the viewer and the pipeline need to know.
        "viewable": series.viewable,
        "preview": series.preview,
        "image_region": list(series.image_region) if series.image_region else None,
    }


def describe_file(path: Path, companions: Sequence[Path] = ()) -> dict[str, Any]:
    """One entry of the `files` list: format, series, warnings, or the one-line error."""
    entry: dict[str, Any] = {
        "path": str(path),
        "format": None,
        "error": None,
        "warnings": [],
        "series": [],
        "companions": [str(c) for c in companions],
    }
    try:
        with open_image_file(path, companions) as image_file:
            entry["format"] = image_file.format
            entry["warnings"] = list(image_file.warnings)
            entry["series"] = [series_summary(s) for s in image_file.series]
    except ReadError as exc:
        entry["error"] = str(exc)
    return entry


def _logs_off_stdout() -> None:
    """rosettasciio logs to stdout through a handler of its own (a JEOL read warns that numba is
    missing): stdout carries the JSON document, so its records go to stderr instead."""
    import rsciio  # noqa: F401  (installs that handler)

    for handler in logging.getLogger("rsciio").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def info_document(paths: Sequence[Path]) -> dict[str, Any]:
    """The whole `allmicro info --json` document for the given files.

    Files of one acquisition given together (EMI+SER, MRC+mdoc/info.txt, TIFF+txt) are read as
    one entry: the primary file with the others as its companions. A file given alone brings
    the companions the vendors' naming rules find beside it (X.emi its X_1.ser).
    """
    _logs_off_stdout()
    by_name = {str(p): p for p in paths}
    # JEOL Analysis Station files and their .ASW project share no stem: joined by its contents.
    projects: dict[str, list[Path]] = {}
    for path in paths:
        for companion in find_companions(path):
            by_name.setdefault(str(companion), companion)
        projects[str(path)] = project_companions(path)
    entries = []
    for group in group_files(list(by_name)):
        companions = [by_name[c] for c in group.companions]
        for partner in projects.get(group.primary, []):
            if str(partner) not in group.companions:
                companions.append(partner)
        entries.append(describe_file(by_name[group.primary], companions))
    return {"files": entries}
