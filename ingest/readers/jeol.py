"""JEOL Analysis Station files (.img/.map images, .pts spectrum images) and their .ASW project, through rosettasciio.

rosettasciio's jeol plugin picks its parser by file extension; originals may be stored under any
name, so the file is laid out under the extension its content calls for. An `.ASW` project,
passed as a companion, lists every view's files by their Windows path (`Sample\\View\\X.img`);
the entry naming the opened file contributes its sample and view facts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from allmicro_data.ingest.grouping import JEOL_DATA, JEOL_PROJECT, base_name, may_be_project_member
from allmicro_data.ingest.readers.base import ReadError

_IMAGE_MAGIC = struct.pack("<I", 52)
_PTS_MAGIC = struct.pack("<I", 304) + b"PTTDFILE"
# A project file lists samples and views (kilobytes); its key tree is parsed whole, so a file
# far larger than any project is not taken for one.
MAX_ASW_BYTES = 16 * 1024**2


def jeol_kind(head: bytes) -> str | None:
    """The Analysis Station data file kind head shows ("image" covers .img and .map), or None."""
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


def is_asw(head: bytes, path: Path) -> bool:
    """True for an Analysis Station project (.ASW): no magic, but a key tree with SampleInfo."""
    return head[:4] == bytes(4) and len(head) > 13 and read_asw(path) is not None


def read_asw(path: Path) -> dict[str, Any] | None:
    """The project tree of an .ASW file, or None when path is not one."""
    from rsciio.jeol._api import _parsejeol

    try:
        if path.stat().st_size > MAX_ASW_BYTES:
            return None
        with path.open("rb") as fd:
            if fd.read(4) != bytes(4):
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


def _kind_of(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return jeol_kind(handle.read(16))
    except OSError:
        return None


def _read_data(path: Path, workdir: Path) -> list[dict[str, Any]]:
    """rosettasciio's signal dicts of one .img/.map/.pts, linked into workdir under the
    extension its content calls for (lazy spectrum images read through the link later)."""
    from rsciio.jeol import file_reader

    kind = _kind_of(path)
    suffix = {"image": "img", "spectrum image": "pts"}.get(kind or "")
    if suffix is None:
        raise ReadError(f"{path.name}: not a JEOL Analysis Station file")
    link = workdir / f"data{len(list(workdir.iterdir()))}.{suffix}"
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
    return signals


def read_jeol(
    path: Path, companions: Sequence[Path], workdir: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """rosettasciio signal dicts and warnings of a data file with its .ASW project among the
    companions, or of an .ASW project with the data files it lists among the companions."""
    project = read_asw(path)
    if project is not None:
        listed = [c for c in companions if _kind_of(c) and asw_entry(project, c.name)]
        if not listed:
            raise ReadError(
                f"{path.name}: a JEOL .ASW project holds metadata only; upload the "
                ".img/.map/.pts files it lists with it"
            )
        signals: list[dict[str, Any]] = []
        for data in listed:
            for signal in _read_data(data, workdir):
                signal.setdefault("original_metadata", {})["asw"] = asw_entry(project, data.name)
                signals.append(signal)
        return signals, []
    signals = _read_data(path, workdir)
    warnings: list[str] = []
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


# How far a project sits above its data files (Project.ASW, Sample/View/X.img), and how many
# files under a project folder are looked at for its members. The project functions live here,
# not in ingest/grouping.py, because reading an .ASW needs this module, which the upload agent
# (it imports grouping) must not load.
PROJECT_LEVELS = 3
PROJECT_MAX_FILES = 5000


def project_lists(project: Path, names: Iterable[str]) -> list[str]:
    """Which of names the .ASW project file lists (none when it is not one)."""
    tree = read_asw(project)
    if tree is None:
        return []
    return [n for n in names if may_be_project_member(n) and asw_entry(tree, base_name(n))]


def project_companions(path: Path) -> list[Path]:
    """A JEOL Analysis Station file's project partners on disk: for an .ASW, the data files under
    its folder that it lists; for a data file (.img, .map, .pts, .eds), the .ASW projects in its
    folder or up to two above it that list it."""
    found: list[Path] = []
    try:
        if JEOL_PROJECT.search(path.name):
            tree = read_asw(path)
            if tree is None:
                return []
            for count, candidate in enumerate(path.parent.rglob("*")):
                if count >= PROJECT_MAX_FILES:
                    break
                if JEOL_DATA.search(candidate.name) and asw_entry(tree, candidate.name):
                    found.append(candidate)
        elif JEOL_DATA.search(path.name):
            for folder in [path.parent, *path.parent.parents][:PROJECT_LEVELS]:
                for project in sorted(folder.glob("*")):
                    if not JEOL_PROJECT.search(project.name):
                        continue
                    tree = read_asw(project)
                    if tree is not None and asw_entry(tree, path.name):
                        found.append(project)
    except OSError:
        return found
    return sorted(found)
