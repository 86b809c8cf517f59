"""The upload agent's local memory (SQLite): what was sent where, and which uploads to resume."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sent_file (
    server TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    location TEXT,
    status TEXT NOT NULL,
    file_id TEXT,
    job_id TEXT,
    error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (server, dataset_id, path)
);
CREATE INDEX IF NOT EXISTS sent_file_sha256 ON sent_file (server, dataset_id, sha256, status);
"""

HASHED = "hashed"
UPLOADING = "uploading"
DONE = "done"
FAILED = "failed"


@dataclass
class SentFile:
    """One local file (one version of it: size and mtime) and where its upload stands."""

    server: str
    dataset_id: str
    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    location: str | None = None
    status: str = HASHED
    file_id: str | None = None
    job_id: str | None = None
    error: str | None = None
    updated_at: str = ""

    def same_version(self, size: int, mtime_ns: int) -> bool:
        return self.size == size and self.mtime_ns == mtime_ns


_COLUMNS = [f.name for f in fields(SentFile)]


class AgentState:
    """A small SQLite database beside the agent's log; safe to lose (files are then hashed
    again and the server's deduplication answers "already present")."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    def get(self, server: str, dataset_id: str, path: str) -> SentFile | None:
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sent_file "  # noqa: S608 - fixed column names
            "WHERE server = ? AND dataset_id = ? AND path = ?",
            (server, dataset_id, path),
        ).fetchone()
        return SentFile(*row) if row else None

    def sent_with_sha256(self, server: str, dataset_id: str, sha256: str) -> SentFile | None:
        """A file with these bytes already uploaded to this dataset (a copy, or a rename)."""
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sent_file "  # noqa: S608 - fixed column names
            "WHERE server = ? AND dataset_id = ? AND sha256 = ? AND status = ? LIMIT 1",
            (server, dataset_id, sha256, DONE),
        ).fetchone()
        return SentFile(*row) if row else None

    def sent_with_size(self, server: str, dataset_id: str, size: int, other_than: str) -> bool:
        """Whether another file of this size was uploaded to this dataset (perhaps a copy)."""
        row = self._db.execute(
            "SELECT 1 FROM sent_file WHERE server = ? AND dataset_id = ? AND size = ? "
            "AND status = ? AND path != ? LIMIT 1",
            (server, dataset_id, size, DONE, other_than),
        ).fetchone()
        return row is not None

    def save(self, entry: SentFile) -> None:
        entry.updated_at = datetime.now(UTC).isoformat()
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._db.execute(
            f"INSERT OR REPLACE INTO sent_file ({', '.join(_COLUMNS)}) "  # noqa: S608
            f"VALUES ({placeholders})",
            [getattr(entry, name) for name in _COLUMNS],
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()
