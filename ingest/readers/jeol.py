"""JEOL Analysis Station files (.img/.map images, .pts spectrum images) and their .ASW project, through rosettasciio.

rosettasciio's jeol plugin picks its parser by file extension; originals may be stored under any
name, so the file is laid out under the extension its content calls for. An `.ASW` project,
passed as a companion, lists every view's files by their Windows path (`Sample\\View\\X.img`);
the entry naming the opened file contributes its sample and view facts.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from allmicro_data.ingest.readers.base import ReadError

_IMAGE_MAGIC = struct.pack("<I", 52)
_PTS_MAGIC = struct.pack("<I", 304) + b"PTTDFILE"


def jeol_kind(head: bytes) -> str | None:
    """The Analysis Station file kind head shows ("image" covers .img and .map), or None."""
    if head[:4] == _IMAGE_MAGIC and head[4:13] == b"JED-2200:":
        return "image"
    if head[:12] == _PTS_MAGIC:
        return "spectrum image"
    return None


def _check_image_header(path: Path) -> None:
    """An image whose header declares more pixels than it stores is refused before rosettasciio
    pads it (it resizes the stored bytes to the declared size, i.e. allocates whatever is asked)."""
    from rsciio.jeol._api import _parsejeol

    with path.open("rb") as fd:
        fd.seek(36)
        _, _, data_pos = np.fromfile(fd, "<I", 3)
        fd.seek(int(data_pos) + 12)
        header = _parsejeol(fd)
    image = header.get("Image") or {}
    width, height = (int(n) for n in image["Size"])
    stored = np.asarray(image["Bits"]).size
    if width <= 0 or height <= 0 or width * height > stored:
        raise ReadError(
            f"{path.name}: header declares {width} x {height} pixels but the file holds "
            f"{stored:,} (truncated or corrupt JEOL image)"
        )


def read_asw(path: Path) -> dict[str, Any] | None:
    """The project tree of an .ASW file, or None when path is not one."""
    from rsciio.jeol._api import _parsejeol

    try:
        with path.open("rb") as fd:
            if fd.read(4) != b"\x00\x00\x00\x00":
                return None
            fd.seek(12)
            tree = _parsejeol(fd)
    except Exception:
        return None
    return tree if isinstance(tree, dict) and "SampleInfo" in tree else None


def asw_entry(tree: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Sample, view and view-data facts of the project entry whose file is `name`."""
    for sample in (tree.get("SampleInfo") or {}).values():
        if not isinstance(sample, dict):
            continue
        for view in (sample.get("ViewInfo") or {}).values():
            if not isinstance(view, dict):
                continue
            for data in (view.get("ViewData") or {}).values():
                listed = str((data or {}).get("Filename") or "")
                if PureWindowsPath(listed).name.lower() == name.lower():
                    return {
                        "sample": {k: v for k, v in sample.items() if k != "ViewInfo"},
                        "view": {k: v for k, v in view.items() if k != "ViewData"},
                        "view_data": data,
                    }
    return None


def read_jeol(
    path: Path, companions: Sequence[Path], workdir: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """rosettasciio signal dicts of the file (with its .ASW project facts) and warnings.

    workdir holds the link rosettasciio opens; lazy spectrum images read through it later.
    """
    from rsciio.jeol import file_reader

    with path.open("rb") as handle:
        kind = jeol_kind(handle.read(16))
    suffix = {"image": "img", "spectrum image": "pts"}.get(kind or "")
    if suffix is None:
        raise ReadError(f"{path.name}: not a JEOL Analysis Station file")
    warnings: list[str] = []
    link = workdir / f"data.{suffix}"
    link.symlink_to(path.resolve())
    options: dict[str, Any] = {}
    if suffix == "pts":
        # The EDS counts summed over sweeps overflow rosettasciio's default uint8.
        options = {"read_em_image": True, "SI_dtype": np.uint16}
    try:
        if suffix == "img":
            _check_image_header(path)
        signals: list[dict[str, Any]] = file_reader(str(link), lazy=suffix == "pts", **options)
    except (IndexError, EOFError) as exc:
        # rosettasciio indexes what numpy read; past the end of the file that is nothing.
        raise ReadError(
            f"{path.name}: JEOL Analysis Station {kind} ends before its header does "
            f"(truncated: {exc})"
        ) from exc
    for companion in companions:
        tree = read_asw(companion)
        if tree is None:
            continue
        entry = asw_entry(tree, path.name)
        if entry is None:
            warnings.append(f"the project {companion.name} does not list {path.name}")
            continue
        for signal in signals:
            signal.setdefault("original_metadata", {})["asw"] = entry
    return signals, warnings
