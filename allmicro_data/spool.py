"""Appending received bytes to an upload's spool file, with direct I/O where the system has it.

An upload is written once and never read back while it arrives, so the page cache only costs
here: copying every byte into it, dirtying and writing back its pages, then dropping them took
the server more CPU than receiving the bytes from the socket (the server's share of two cores
on a 2 GiB upload, bench/upload.py). With O_DIRECT (Linux) the disk takes the bytes straight
from one page-aligned staging buffer. Direct writes must start and end on ALIGN boundaries of
the file, so bytes past the last boundary wait in the buffer until more arrive, and sync()
puts them in the file by an ordinary write; the next direct write over that block rewrites
the same bytes (the kernel writes back and drops the cached page first, which keeps the two
views of the file coherent). Where direct I/O is missing or refused (tmpfs, other systems),
ordinary writes are used, with the kernel asked to start writeback early.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from collections.abc import Sequence

log = logging.getLogger(__name__)

# File offsets and sizes of direct writes, and the staging buffer's address (mmap gives pages),
# are multiples of this: every block device's logical block size divides it.
ALIGN = 4096
STAGE_BYTES = 4 * 1024 * 1024
_O_DIRECT: int | None = getattr(os, "O_DIRECT", None)
# On Linux, POSIX_FADV_DONTNEED on freshly written pages queues them for writeback at once
# (and lets the page cache drop them once clean: the spool is never read back).
_START_WRITEBACK: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)


class SpoolWriter:
    """Appends to one open spool file from a given offset; `written` bytes are in the file.

    `fd` is the file opened for ordinary reads and writes; the writer opens its own
    descriptor for direct writes when it can and closes it in close().
    """

    def __init__(self, path: os.PathLike[str] | str, fd: int, offset: int, direct: bool = True):
        self._fd = fd
        self._direct_fd: int | None = None
        self._stage: mmap.mmap | None = None
        if direct and _O_DIRECT is not None:
            try:
                self._direct_fd = os.open(path, os.O_WRONLY | _O_DIRECT)
            except OSError as exc:
                log.info("spool %s: no direct I/O here (%s); writing through the cache", path, exc)
            else:
                self._stage = mmap.mmap(-1, STAGE_BYTES)
        # The staging buffer holds the file's bytes [_base, _base + _fill); _base is aligned.
        self._base = 0
        self._fill = 0
        self.appended = 0
        self.written = 0
        self.reset(offset)

    @property
    def direct(self) -> bool:
        return self._direct_fd is not None

    def reset(self, offset: int) -> None:
        """Append from offset next (the file already holds every byte before it)."""
        self.appended = self.written = offset
        self._base = offset - offset % ALIGN if self.direct else offset
        self._fill = offset - self._base
        if self._fill:
            assert self._stage is not None
            head = os.pread(self._fd, self._fill, self._base)
            if len(head) != self._fill:
                raise OSError(errno.EIO, f"the spool file is shorter than {offset} bytes")
            self._stage[: self._fill] = head

    def append(self, blocks: Sequence[bytes]) -> None:
        if self._stage is None:
            self._append_cached(blocks)
            return
        stage = self._stage
        for block in blocks:
            view = memoryview(block)
            while view:
                room = STAGE_BYTES - self._fill
                taken = view[:room]
                stage[self._fill : self._fill + len(taken)] = taken
                self._fill += len(taken)
                self.appended += len(taken)
                view = view[len(taken) :]
                if self._fill == STAGE_BYTES:
                    self._write_direct()

    def sync(self) -> None:
        """Put every byte appended so far in the file (an ordinary write for the bytes past
        the last aligned block); until then `written` may lag behind."""
        if self._stage is not None:
            self._write_direct()
        if self._stage is not None and self._fill:
            _write_all(self._fd, self._stage, 0, self._fill, self._base)
        self.written = self.appended

    def close(self) -> None:
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        if self._stage is not None:
            self._stage.close()
            self._stage = None

    def _append_cached(self, blocks: Sequence[bytes]) -> None:
        start = self.appended
        for block in blocks:
            _write_all(self._fd, block, 0, len(block), self.appended)
            self.appended += len(block)
        self.written = self.appended
        if _START_WRITEBACK is not None and self.appended > start:
            # The kernel starts writing these pages to disk now, in the background, so that
            # the fsync before the original is stored finds little left to write.
            os.posix_fadvise(self._fd, start, self.appended - start, _START_WRITEBACK)

    def _write_direct(self) -> None:
        """Write the buffer's whole aligned blocks directly; keep the rest at its start."""
        assert self._stage is not None and self._direct_fd is not None
        whole = self._fill - self._fill % ALIGN
        if not whole:
            return
        try:
            _write_all(self._direct_fd, self._stage, 0, whole, self._base)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # The filesystem wants another alignment, or no direct I/O at all: go on without.
            log.info("spool: direct writes refused (%s); writing through the cache", exc)
            _write_all(self._fd, self._stage, 0, self._fill, self._base)
            self.written = self.appended
            self.close()
            return
        rest = self._fill - whole
        self._stage[:rest] = self._stage[whole : whole + rest]
        self._base += whole
        self._fill = rest
        self.written = self._base


def _write_all(fd: int, buffer: bytes | mmap.mmap, start: int, end: int, offset: int) -> None:
    """pwrite buffer[start:end] at offset, however many calls it takes."""
    view = memoryview(buffer)[start:end]
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done
