"""The vendors' naming rules for multi-file acquisitions (TIA, DE-Server, SerialEM, Merlin, ...) in one table: grouping, companion finding, completeness."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

_MRC = r"(?:mrc|mrcs|st|ali|rec|map)"


@dataclass(frozen=True)
class MemberKind:
    """One kind of file an acquisition is made of, recognised by its name.

    `rank` orders the kinds that can be opened as the acquisition's primary (lowest first);
    None marks a sidecar that is never opened on its own. `needs` lists alternatives of kinds
    this member's presence implies: each entry is satisfied by any one of its kinds being there.
    """

    name: str
    pattern: re.Pattern[str]
    rank: int | None = None
    needs: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class AcquisitionRule:
    """A vendor's naming rule: the kinds of its members, found by name and a shared stem.

    `by_name_alone` says the names are distinctive enough to group files nobody grouped (an
    upload without a `group`, a file given alone to `allmicro info`); other rules only sort
    files a client already grouped.
    """

    vendor: str
    kinds: tuple[MemberKind, ...]
    by_name_alone: bool = True

    def kind_of(self, name: str) -> tuple[MemberKind, str] | None:
        """The member kind a base name is, and its acquisition stem."""
        for kind in self.kinds:
            match = kind.pattern.match(name)
            if match:
                return kind, match.group("stem")
        return None


def _kind(
    name: str, pattern: str, rank: int | None = None, needs: tuple[tuple[str, ...], ...] = ()
) -> MemberKind:
    return MemberKind(name, re.compile(pattern, re.IGNORECASE), rank, needs)


_DE_DATA = ("movie", "final", "virtual sum", "external")

# The one table. Order matters: a name is the member of the first rule that knows it, so the
# more specific rules (DE-Server's <stem>_movie.mrc) come before the general ones (X.mrc).
ACQUISITION_RULES: tuple[AcquisitionRule, ...] = (
    AcquisitionRule(
        "FEI TIA",
        (
            # The .emi holds the metadata, each <stem>_N.ser one acquisition's data: TIA
            # always writes both, so each waits for the other.
            _kind("emi", r"^(?P<stem>.+)\.emi$", 0, needs=(("ser",),)),
            _kind("ser", r"^(?P<stem>.+)_\d+\.ser$", 1, needs=(("emi",),)),
        ),
    ),
    AcquisitionRule(
        "Direct Electron DE-Server",
        (
            # DE-Server writes <stem>_info.txt with every movie; sums are often kept without
            # the movie, so they need nothing, and join the image when the rest arrives.
            _kind("movie", r"^(?P<stem>.+)_movie\.mrc$", 0, needs=(("info",),)),
            _kind("final", r"^(?P<stem>.+)_final\.mrc$", 1),
            _kind("virtual sum", r"^(?P<stem>.+)_\d+_Virt \d+_sum\.mrc$", 2),
            _kind("external", r"^(?P<stem>.+)_ext\d+_Ext \d+\.mrc$", 3),
            _kind("info", r"^(?P<stem>.+)_info\.txt$", needs=(_DE_DATA,)),
        ),
    ),
    AcquisitionRule(
        "SerialEM",
        (
            _kind("stack", rf"^(?P<stem>.+)\.{_MRC}(?:\.gz|\.bz2)?$", 0),
            _kind("mdoc", rf"^(?P<stem>.+)\.{_MRC}\.mdoc$", needs=(("stack",),)),
            _kind("mdoc", r"^(?P<stem>.+)\.mdoc$", needs=(("stack",),)),
        ),
    ),
    AcquisitionRule(
        "Quantum Detectors Merlin",
        (
            # Merlin writes the .hdr (scan and detector set-up) beside every .mib.
            _kind("mib", r"^(?P<stem>.+)\.mib$", 0, needs=(("hdr",),)),
            _kind("hdr", r"^(?P<stem>.+)\.hdr$", needs=(("mib",),)),
        ),
    ),
    # Grouped only when a client groups them: these names are too common to join by themselves.
    AcquisitionRule(
        "OME-XML companion",
        (
            _kind("ome-xml", r"^(?P<stem>.+)\.ome\.xml$", 0),
            _kind("ome-tiff", r"^(?P<stem>.+)\.ome\.tiff?$", 1),
        ),
        by_name_alone=False,
    ),
    AcquisitionRule(
        "Hitachi SEM",
        (
            _kind("tiff", r"^(?P<stem>.+)\.(?:tif|tiff|jpg|bmp)$", 0),
            _kind("txt", r"^(?P<stem>.+)\.txt$"),
        ),
        by_name_alone=False,
    ),
)
# A JEOL Analysis Station .ASW project names its members inside the file (Sample\View\X.img),
# not by a shared stem, so it has no row here: readers.jeol.project_companions reads the list.
JEOL_PROJECT = re.compile(r"\.asw$", re.IGNORECASE)
JEOL_DATA = re.compile(r"\.(?:img|map|pts|eds)$", re.IGNORECASE)


@dataclass(frozen=True)
class Member:
    """A file name recognised by a rule: the rule, its kind and the acquisition's stem."""

    rule: AcquisitionRule
    kind: MemberKind
    stem: str

    @property
    def key(self) -> str:
        """The acquisition key: names with the same key are one acquisition."""
        return f"{self.rule.vendor}:{self.stem.lower()}"


def base_name(name: str) -> str:
    """A file name without its folders, whether they were written with / or \\."""
    return PurePath(name.replace("\\", "/")).name


def member(name: str, *, by_name_alone: bool = False) -> Member | None:
    """What a file name is in the table, if anything."""
    base = base_name(name)
    for rule in ACQUISITION_RULES:
        if by_name_alone and not rule.by_name_alone:
            continue
        found = rule.kind_of(base)
        if found is not None:
            return Member(rule, found[0], found[1])
    return None


def acquisition_key(name: str) -> str | None:
    """The key that groups this file with the rest of its acquisition by the vendors' naming
    rules alone, or None for a file no rule makes part of a multi-file acquisition."""
    found = member(name, by_name_alone=True)
    # The catalogue's group column holds 300 characters; stems longer than that are rare.
    return found.key[:300] if found is not None else None


def missing_members(names: Sequence[str]) -> list[str]:
    """What the acquisition of these names still lacks, as readable kinds ("FEI TIA ser")."""
    present: dict[str, set[str]] = {}
    members = [m for m in (member(n) for n in names) if m is not None]
    for m in members:
        present.setdefault(m.key, set()).add(m.kind.name)
    missing: list[str] = []
    for m in members:
        for alternatives in m.kind.needs:
            if not present[m.key] & set(alternatives):
                label = f"{m.rule.vendor} {' or '.join(alternatives)} of {m.stem}"
                if label not in missing:
                    missing.append(label)
    return missing


def find_companions(path: Path, candidates: Iterable[Path] | None = None) -> list[Path]:
    """The other files of path's acquisition among candidates (by default, path's folder) that
    path is read with: a file that would outrank it as the image (a DE movie beside the
    _final.mrc asked about) only when path cannot be read without it (a .ser its .emi)."""
    own = member(path.name, by_name_alone=True)
    if own is None:
        return []
    if candidates is None:
        try:
            candidates = sorted(p for p in path.parent.iterdir() if p.is_file())
        except OSError:
            return []
    found = []
    for candidate in candidates:
        if candidate.name == path.name and candidate.parent == path.parent:
            continue
        other = member(candidate.name, by_name_alone=True)
        if other is None or other.key != own.key:
            continue
        outranks = other.kind.rank is not None and (
            own.kind.rank is None or other.kind.rank < own.kind.rank
        )
        needed = any(other.kind.name in alternatives for alternatives in own.kind.needs)
        if not outranks or needed:
            found.append(candidate)
    return found


def is_project(name: str) -> bool:
    """A JEOL Analysis Station project (.ASW), whose members it names inside."""
    return bool(JEOL_PROJECT.search(base_name(name)))


def may_be_project_member(name: str) -> bool:
    """A file name a JEOL Analysis Station project may list (.img, .map, .pts, .eds)."""
    return bool(JEOL_DATA.search(base_name(name)))


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


def stem_of(name: str) -> str:
    """The acquisition stem a file name belongs to."""
    found = member(name)
    if found is not None:
        return found.stem
    base = base_name(name)
    return base.rsplit(".", 1)[0] if "." in base else base


def _rank(name: str) -> int | None:
    found = member(name)
    if found is None:
        return 99
    return found.kind.rank


def group_files(names: list[str]) -> list[FileGroup]:
    """Group names by the table's acquisition keys, keeping the input order of first appearance.

    A group needs a file a reader can open: lone sidecars (.txt, .mdoc) stay groups of their
    own so that they are stored and reported, not silently attached elsewhere; names no rule
    knows stand alone.
    """
    by_key: dict[str, list[str]] = {}
    for name in names:
        found = member(name)
        key = found.key if found is not None else f"\0{name}"
        by_key.setdefault(key, []).append(name)
    groups: list[FileGroup] = []
    for members in by_key.values():
        openable = [m for m in members if _rank(m) is not None]
        if not openable:
            groups.extend(FileGroup(key=stem_of(m), primary=m) for m in members)
            continue
        ordered = sorted(openable, key=lambda m: (_rank(m), members.index(m)))
        primary = ordered[0]
        groups.append(
            FileGroup(
                key=stem_of(primary),
                primary=primary,
                companions=[m for m in members if m != primary],
            )
        )
    return groups
