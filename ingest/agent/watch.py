"""The folder watcher: a file is sent once it is finished (settled, not locked, not a scratch name), grouped with its acquisition's other files by the vendors' naming rules, or by folder."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from allmicro_data.ingest.agent.files import native
from allmicro_data.ingest.agent.tus import Agent
from allmicro_data.ingest.grouping import acquisition_key

# Names instruments and editors use for files still being written or for scratch.
SKIPPED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".lock")
SKIPPED_PREFIXES = (".", "~$", "~")
# Windows: another process has the file open without sharing (still writing it).
_SHARING_VIOLATIONS = (32, 33)


def is_locked(path: Path) -> bool:
    """True while another program holds the file open for writing without sharing it.

    Only Windows enforces such locks; elsewhere a writer is caught by the size and
    modification time still changing.
    """
    if os.name != "nt":
        return False
    try:
        with open(native(path), "ab"):
            return False
    except PermissionError as exc:
        return getattr(exc, "winerror", None) in _SHARING_VIOLATIONS
    except OSError:
        return True


def _wanted(path: Path) -> bool:
    name = path.name
    return not name.startswith(SKIPPED_PREFIXES) and not name.lower().endswith(SKIPPED_SUFFIXES)


def _candidates(directory: Path, recursive: bool) -> Iterator[Path]:
    entries = directory.rglob("*") if recursive else directory.iterdir()
    for path in entries:
        try:
            if _wanted(path) and path.is_file():
                yield path
        except OSError:
            continue


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float
    handled: bool = False


class Watcher:
    """Uploads each file in a folder once it is finished: size and modification time unchanged
    for `settle` seconds and, on Windows, no longer held open by its writer."""

    def __init__(
        self,
        agent: Agent,
        directory: Path,
        *,
        recursive: bool,
        settle: float,
        interval: float,
        group_by_folder: bool,
    ) -> None:
        self.agent = agent
        self.directory = directory
        self.recursive = recursive
        self.settle = settle
        self.interval = interval
        self.group_by_folder = group_by_folder
        self.seen: dict[Path, _Seen] = {}
        self.failures = 0
        self.stop = threading.Event()

    def scan(self) -> bool:
        """One pass; True while some file is still waiting to be finished."""
        now = time.monotonic()
        waiting = False
        for path in _candidates(self.directory, self.recursive):
            try:
                stat = os.stat(native(path))
            except OSError:
                continue
            seen = self.seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self.seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, now)
                waiting = True
                continue
            if seen.handled:
                continue
            if now - seen.since < self.settle or is_locked(path):
                waiting = True
                continue
            relative = path.relative_to(self.directory)
            group = self._group(relative)
            outcome = self.agent.send(path, relative.as_posix(), group if group != "." else None)
            seen.handled = True
            if outcome.status == "failed":
                self.failures += 1
        return waiting

    def _group(self, relative: Path) -> str | None:
        """The acquisition a file belongs to: its folder with --group-by-folder, else its
        vendor's naming rule (X.emi with X_1.ser), within its folder."""
        folder = relative.parent.as_posix()
        if self.group_by_folder:
            return folder if folder != "." else None
        key = acquisition_key(relative.name)
        if key is None:
            return None
        # Two folders may each hold an acquisition of the same name; the server's column holds
        # 300 characters.
        return (key if folder == "." else f"{folder}/{key}")[:300]

    def run(self, once: bool) -> None:
        while not self.stop.is_set():
            waiting = self.scan()
            if once and not waiting:
                return
            self.stop.wait(self.interval)
