"""Scratch directories of jobs in the system temp folder: locked while in use, swept once left behind.

An ingest job lays its originals out in a directory of its own (with S3, a whole copy of each).
A job process that is killed cannot remove it, so every such directory carries a lock (flock,
which the kernel releases when the process dies, whatever killed it): at job start and at server
start, directories whose lock nobody holds belong to dead processes and are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

INGEST_PREFIX = "allmicro-ingest-"
LOCK_NAME = ".allmicro-lock"
# A directory is made before its lock is taken: one this young may be about to be locked.
GRACE_SECONDS = 60.0

try:
    import fcntl
except ImportError:  # Windows: no flock; nothing is swept there
    fcntl = None  # type: ignore[assignment]


@contextmanager
def scratch_directory(prefix: str = INGEST_PREFIX) -> Iterator[Path]:
    """A new directory in the temp folder, locked for as long as the block runs, then removed."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    lock_fd: int | None = None
    try:
        if fcntl is not None:
            lock_fd = os.open(workdir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


def sweep_scratch(prefix: str = INGEST_PREFIX, directory: Path | None = None) -> int:
    """Remove scratch directories no live process holds; how many were removed."""
    if fcntl is None:
        return 0
    root = directory or Path(tempfile.gettempdir())
    removed = 0
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return 0
    for path in candidates:
        try:
            if not path.is_dir() or path.is_symlink():
                continue
            if time.time() - path.stat().st_mtime < GRACE_SECONDS:
                continue
            if _held(path):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        except OSError as exc:
            log.info("scratch directory %s left alone: %s", path, exc)
    if removed:
        log.info("removed %d scratch directories left by stopped jobs in %s", removed, root)
    return removed


def _held(path: Path) -> bool:
    """Whether a live process holds the directory's lock (a directory without one is left
    from before locks were taken, or was never locked: nobody holds it)."""
    assert fcntl is not None
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
