"""Group the files of one multi-file acquisition (EMI+SER, MRC+mdoc/info.txt, TIFF+txt, OME-XML+TIFFs) by name stem."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath

# Suffixes a sidecar or data companion adds to the acquisition's stem, most specific first.
_COMPANION_PATTERNS = (
    re.compile(r"^(?P<stem>.+)_\d+\.ser$", re.IGNORECASE),  # TIA data files of <stem>.emi
    re.compile(r"^(?P<stem>.+)\.(?:mrc|mrcs|st|ali|rec|map)\.mdoc$", re.IGNORECASE),  # SerialEM
    re.compile(r"^(?P<stem>.+)\.mdoc$", re.IGNORECASE),
    re.compile(r"^(?P<stem>.+)_info\.txt$", re.IGNORECASE),  # Direct Electron DE-Server
    re.compile(r"^(?P<stem>.+)\.txt$", re.IGNORECASE),  # Hitachi SEM sidecar
)
# Direct Electron writes <dataset>_movie.mrc beside <dataset>_final.mrc, virtual images, etc.
_DE_MEMBER = re.compile(
    r"^(?P<stem>\d{8}_\d{5})_(?:movie|final|\d+_Virt \d+_sum|ext\d+_Ext \d+|info)\.", re.IGNORECASE
)

# Which member of a group is the acquisition the image is built from, best first.
_PRIMARY_RANK = (
    re.compile(r"\.emi$", re.IGNORECASE),
    re.compile(r"_movie\.mrc$", re.IGNORECASE),
    re.compile(r"\.ome\.xml$", re.IGNORECASE),
    re.compile(r"\.(?:mrc|mrcs|st|ali|rec|map)(?:\.gz|\.bz2)?$", re.IGNORECASE),
    re.compile(r"\.(?:tif|tiff)$", re.IGNORECASE),
    re.compile(r"\.ser$", re.IGNORECASE),
)


@dataclass
class FileGroup:
    """Files uploaded together that form one acquisition; `primary` is opened, the others are
    passed to the reader as companions. Every file is still stored on its own."""

    key: str
    primary: str
    companions: list[str] = field(default_factory=list)

    @property
    def members(self) -> list[str]:
        return [self.primary, *self.companions]


def _base(name: str) -> str:
    return PurePath(name.replace("\\", "/")).name


def stem_of(name: str) -> str:
    """The acquisition stem a file name belongs to."""
    base = _base(name)
    de = _DE_MEMBER.match(base)
    if de:
        return de.group("stem")
    for pattern in _COMPANION_PATTERNS:
        match = pattern.match(base)
        if match:
            return match.group("stem")
    lowered = base.lower()
    for suffix in (
        ".ome.xml",
        ".ome.tiff",
        ".ome.tif",
        ".mrc.gz",
        ".mrc.bz2",
        ".map.gz",
        ".map.bz2",
    ):
        if lowered.endswith(suffix):
            return base[: -len(suffix)]
    return base.rsplit(".", 1)[0] if "." in base else base


def _rank(name: str) -> int:
    for index, pattern in enumerate(_PRIMARY_RANK):
        if pattern.search(_base(name)):
            return index
    return len(_PRIMARY_RANK)


def _is_sidecar(name: str) -> bool:
    return bool(re.search(r"\.(?:txt|mdoc)$", _base(name), re.IGNORECASE))


def group_files(names: list[str]) -> list[FileGroup]:
    """Group names by acquisition stem, keeping the input order of first appearance.

    A group needs a file a reader can open: lone sidecars (.txt, .mdoc) stay groups of their
    own so that they are stored and reported, not silently attached elsewhere.
    """
    by_stem: dict[str, list[str]] = {}
    for name in names:
        by_stem.setdefault(stem_of(name).lower(), []).append(name)
    groups: list[FileGroup] = []
    for members in by_stem.values():
        data_files = [m for m in members if not _is_sidecar(m)]
        if not data_files:
            groups.extend(FileGroup(key=stem_of(m), primary=m) for m in members)
            continue
        # Several independent images with one stem (a.tif and a.mrc) are not one acquisition
        # unless one of them is the kind that has companions.
        ordered = sorted(data_files, key=lambda m: (_rank(m), members.index(m)))
        primary = ordered[0]
        companions = [m for m in members if m != primary]
        standalone: list[str] = []
        if not re.search(r"(\.emi|_movie\.mrc|\.ome\.xml)$", _base(primary), re.IGNORECASE):
            # Plain images take only sidecars as companions; other data files stand alone.
            standalone = [m for m in companions if not _is_sidecar(m)]
            companions = [m for m in companions if _is_sidecar(m)]
        groups.append(FileGroup(key=stem_of(primary), primary=primary, companions=companions))
        groups.extend(FileGroup(key=stem_of(m), primary=m) for m in standalone)
    return groups
