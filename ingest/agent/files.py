"""The local files the agent sends: paths Windows accepts at any length, and their sha256, in a thread while they are sent."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from allmicro_data.ingest.agent.errors import AgentError

HASH_BLOCK = 8 * 1024 * 1024


def native(path: Path) -> str:
    """A path string the OS accepts even past Windows' 260-character limit."""
    text = str(path.absolute())
    if os.name == "nt" and len(text) >= 240 and not text.startswith("\\\\?\\"):
        if text.startswith("\\\\"):
            return "\\\\?\\UNC\\" + text[2:]
        return "\\\\?\\" + text
    return text


def sha256_of(
    path: Path,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(native(path), "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
            if progress is not None:
                progress(n)
            if stop is not None and stop.is_set():
                raise AgentError("hashing stopped")
    return digest.hexdigest()


class HashInBackground:
    """The whole file's sha256, computed in a thread while its bytes are being sent.

    hashlib releases the GIL, so this runs beside the sending thread on another core. After a
    restart it hashes from the start again: the acknowledged prefix must be in the digest too.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stop = threading.Event()
        self._sha256: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agent-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._sha256 = sha256_of(self._path, stop=self._stop)
        except BaseException as exc:  # re-raised in the thread that asks for the digest
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, OSError | AgentError):
                raise self._error
            raise AgentError(f"hashing {self._path} failed: {self._error}")
        assert self._sha256 is not None
        return self._sha256

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()
