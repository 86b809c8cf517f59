"""Spool files of uploads: every byte lands where it belongs and is hashed once, with direct I/O and without."""

from __future__ import annotations

import hashlib
import os
import random
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from allmicro_data.spool import ALIGN, STAGE_BYTES, STAGES, SpoolWriter


class Hashing:
    """The digest callback as uploads use it: a thread of its own hashes each staged view."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.pool = ThreadPoolExecutor(1)

    def __call__(self, view: memoryview) -> Future[None]:
        return self.pool.submit(self._update, view)

    def _update(self, view: memoryview) -> None:
        self.sha256.update(view)
        view.release()

    def hexdigest(self) -> str:
        self.pool.submit(lambda: None).result()
        return self.sha256.hexdigest()


def direct_io_works(directory: Path) -> bool:
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        return False
    probe = directory / "probe"
    probe.touch()
    try:
        fd = os.open(probe, os.O_WRONLY | flag)
    except OSError:
        return False
    os.close(fd)
    return True


@pytest.fixture(params=["direct", "cached"])
def direct(request: pytest.FixtureRequest, tmp_path: Path) -> bool:
    if request.param == "direct" and not direct_io_works(tmp_path):
        pytest.skip(f"{tmp_path} has no direct I/O")
    return request.param == "direct"


def test_appends_from_any_offset_in_blocks_of_any_size(tmp_path: Path, direct: bool) -> None:
    rng = random.Random(7)
    head = os.urandom(ALIGN * 3 + 1234)  # what earlier requests left: not on a block boundary
    path = tmp_path / "upload.part"
    path.write_bytes(head)
    expected = bytearray(head)
    hashing = Hashing()
    with path.open("r+b", buffering=0) as handle:
        writer = SpoolWriter(path, handle.fileno(), len(head), hashing, direct=direct)
        assert writer.direct is direct
        try:
            for _ in range(12 * STAGES):
                blocks = [
                    os.urandom(rng.choice((1, 17, ALIGN, ALIGN + 1, 300_000, STAGE_BYTES + 5)))
                ]
                writer.append(blocks)
                expected += blocks[0]
                assert writer.appended == len(expected)
                assert writer.written <= writer.appended
                if rng.random() < 0.3:
                    writer.sync()
                    assert writer.written == len(expected)
                    assert path.read_bytes() == expected
            writer.sync()
        finally:
            writer.close()
    assert path.read_bytes() == expected
    # Every byte appended went to the digest once, in order; the head (hashed by an earlier
    # request) did not.
    assert hashing.hexdigest() == hashlib.sha256(expected[len(head) :]).hexdigest()


def test_a_reset_goes_on_from_where_the_file_was_cut(tmp_path: Path, direct: bool) -> None:
    path = tmp_path / "upload.part"
    path.touch()
    first = os.urandom(STAGE_BYTES + 3 * ALIGN + 99)
    second = os.urandom(2 * STAGE_BYTES + 7)
    with path.open("r+b", buffering=0) as handle:
        writer = SpoolWriter(path, handle.fileno(), 0, Hashing(), direct=direct)
        try:
            writer.append([first])
            writer.append([os.urandom(ALIGN * 5)])  # bytes of a request that is abandoned
            writer.sync()
            handle.truncate(len(first))
            writer.reset(len(first))
            writer.append([second[:1000], second[1000:]])
            writer.sync()
        finally:
            writer.close()
    assert path.read_bytes() == first + second


def test_bytes_not_yet_synced_are_not_counted_as_written(tmp_path: Path, direct: bool) -> None:
    path = tmp_path / "upload.part"
    path.touch()
    with path.open("r+b", buffering=0) as handle:
        writer = SpoolWriter(path, handle.fileno(), 0, Hashing(), direct=direct)
        try:
            writer.append([os.urandom(ALIGN + 10)])
            # Whatever the mode, `written` never claims a byte that is not in the file.
            assert path.stat().st_size >= writer.written
            writer.sync()
            assert path.stat().st_size == writer.written == ALIGN + 10
        finally:
            writer.close()
