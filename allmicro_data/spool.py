"""Appending received bytes to an upload's spool file through staging buffers, with direct I/O where the system has it.

Request bodies arrive as pieces of ~250 KB. Each piece is copied once, into one of a few
page-aligned staging buffers; a full buffer is handed, as one piece of memory, to the hash (a
callback that returns a future) and written to the file, both at once, and is filled again only
once its hash is done. This is the only copy the server makes of the bytes, and hashing 4 MiB at a
time keeps the hash thread from queueing for the interpreter lock between small pieces.

An upload is written once and never read back while it arrives, so the page cache only costs
here: copying every byte into it, dirtying and writing back its pages, then dropping them took
the server more CPU than receiving the bytes from the socket (bench/upload.py). With O_DIRECT
(Linux) the disk takes the bytes straight from the staging buffer. Direct writes must start and
end on ALIGN boundaries of the file, so the bytes past the last boundary move to the next buffer
to wait for more, and sync() puts them in the file by an ordinary write; the next direct write
over that block rewrites the same bytes (the kernel writes back and drops the cached page first,
which keeps the two views of the file coherent). Where direct I/O is missing or refused (tmpfs,
other systems), ordinary writes are used, with the kernel asked to start writeback early.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait

import numpy as np

from allmicro_data.storage.local import start_writeback

log = logging.getLogger(__name__)

# File offsets and sizes of direct writes, and the buffers' addresses (mmap gives pages), are
# multiples of this: every block device's logical block size divides it.
ALIGN = 4096
STAGE_BYTES = 4 * 1024 * 1024
# Buffers per upload: one being filled, the others being hashed and written.
STAGES = 4
_O_DIRECT: int | None = getattr(os, "O_DIRECT", None)

Digest = Callable[[memoryview], "Future[None]"]


class _StagePool:
    """Staging buffers kept for the next requests: a new buffer costs a page fault and a
    zeroed page per 4 KiB the first time it is filled, ~1000 per buffer."""

    KEPT = 4 * STAGES

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        private = getattr(mmap, "MAP_PRIVATE", None)
        if private is not None:  # POSIX: private memory, not a shared-memory file
            return mmap.mmap(-1, STAGE_BYTES, flags=private | mmap.MAP_ANONYMOUS)
        return mmap.mmap(-1, STAGE_BYTES)

    def give_back(self, stage: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self.KEPT:
                self._free.append(stage)
                return
        stage.close()


_stage_pool = _StagePool()


class SpoolWriter:
    """Appends to one open spool file from a given offset, handing every appended byte to
    `digest` once, in order; `written` bytes are in the file.

    `fd` is the file opened for ordinary reads and writes; the writer opens its own descriptor
    for direct writes when it can. `digest` gets a view of a staging buffer and must release it
    when done (the future it returns says when). Not thread-safe: one thread appends.
    """

    def __init__(
        self,
        path: os.PathLike[str] | str,
        fd: int,
        offset: int,
        digest: Digest,
        *,
        direct: bool = True,
    ) -> None:
        self._fd = fd
        self._digest = digest
        self._direct_fd: int | None = None
        if direct and _O_DIRECT is not None:
            try:
                self._direct_fd = os.open(path, os.O_WRONLY | _O_DIRECT)
            except OSError as exc:
                log.info("spool %s: no direct I/O here (%s); writing through the cache", path, exc)
        self._stages = [_stage_pool.take() for _ in range(STAGES)]
        # Views of the buffers to copy into; released before the buffers go back (close).
        self._views = [np.frombuffer(stage, dtype=np.uint8) for stage in self._stages]
        self._hashing: list[list[Future[None]]] = [[] for _ in range(STAGES)]
        # The current buffer holds the file's bytes [_base, _base + _fill), of which those
        # before _hashed went to digest already (or were in the file before: the head).
        self._current = 0
        self._base = 0
        self._fill = 0
        self._hashed = 0
        self.appended = 0
        self.written = 0
        try:
            self.reset(offset)
        except BaseException:
            self.close()
            raise

    @property
    def direct(self) -> bool:
        return self._direct_fd is not None

    def reset(self, offset: int) -> None:
        """Append from offset next (the file already holds every byte before it)."""
        self._wait_for_digests()
        self.appended = self.written = offset
        self._base = offset - offset % ALIGN if self.direct else offset
        self._fill = self._hashed = offset - self._base
        if self._fill:
            head = os.pread(self._fd, self._fill, self._base)
            if len(head) != self._fill:
                raise OSError(errno.EIO, f"the spool file is shorter than {offset} bytes")
            self._stages[self._current][: self._fill] = head

    def append(self, blocks: Sequence[bytes]) -> None:
        for block in blocks:
            data = np.frombuffer(block, dtype=np.uint8)
            while len(data):
                taken = data[: STAGE_BYTES - self._fill]
                # numpy copies without the interpreter lock, which an mmap's slice assignment
                # holds throughout: the event loop and the renders run meanwhile.
                self._views[self._current][self._fill : self._fill + len(taken)] = taken
                self._fill += len(taken)
                self.appended += len(taken)
                data = data[len(taken) :]
                if self._fill == STAGE_BYTES:
                    self._hand_over()

    def sync(self) -> None:
        """Hand every appended byte to digest and put it in the file (the bytes past the last
        aligned block by an ordinary write); until then `written` may lag behind."""
        self._hand_over()
        if self._fill:
            _write_all(self._fd, self._stages[self._current], 0, self._fill, self._base)
        self.written = self.appended

    def close(self) -> None:
        """Wait for the digests still running and free the buffers."""
        self._wait_for_digests()
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        self._views = []
        for stage in self._stages:
            _stage_pool.give_back(stage)
        self._stages = []

    def _hand_over(self) -> None:
        """Digest and write the current buffer's bytes, then go on in the next buffer with
        the bytes a direct write had to leave (less than ALIGN)."""
        stage = self._stages[self._current]
        if self._fill > self._hashed:
            view = memoryview(stage)[self._hashed : self._fill]
            self._hashing[self._current].append(self._digest(view))
            self._hashed = self._fill
        whole = self._fill - self._fill % ALIGN if self.direct else self._fill
        if whole:
            self._write(stage, whole)
        rest = self._fill - whole
        following = (self._current + 1) % STAGES
        self._wait_for_digests(following)
        self._stages[following][:rest] = stage[whole : whole + rest]
        self._current = following
        self._base += whole
        self._fill = self._hashed = rest
        self.written = self._base

    def _write(self, stage: mmap.mmap, whole: int) -> None:
        if self._direct_fd is None:
            _write_all(self._fd, stage, 0, whole, self._base)
            # The fsync before the original is stored then finds little left to write (and
            # the page cache may drop the pages once clean: the spool is never read back).
            start_writeback(self._fd, self._base, whole)
            return
        try:
            _write_all(self._direct_fd, stage, 0, whole, self._base)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # The filesystem wants another alignment, or no direct I/O at all: go on without.
            log.info("spool: direct writes refused (%s); writing through the cache", exc)
            os.close(self._direct_fd)
            self._direct_fd = None
            _write_all(self._fd, stage, 0, whole, self._base)

    def _wait_for_digests(self, index: int | None = None) -> None:
        for i in range(STAGES) if index is None else (index,):
            if self._hashing[i]:
                wait(self._hashing[i])
                self._hashing[i] = []


def _write_all(fd: int, buffer: mmap.mmap, start: int, end: int, offset: int) -> None:
    """pwrite buffer[start:end] at offset, however many calls it takes."""
    view = memoryview(buffer)[start:end]
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done
