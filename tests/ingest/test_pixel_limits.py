"""Decompression bombs: a file declaring far more pixels than its bytes hold is refused; real samples are not."""

from __future__ import annotations

import time
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from allmicro_data.ingest.pixel_limits import PixelBomb, check_declared_pixels
from allmicro_data.ingest.readers import ReadError, open_image_file
from allmicro_data.settings import Settings
from tests.conftest import SAMPLES

BOMB_SIDE = 100_000


def pixel_bomb_tiff(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid tiled TIFF of side x side 8-bit zeros in ~0.5 MB: every 1024 x 1024 tile is the
    same zstd-compressed block of zeros, written as is (no pixel is ever compressed here)."""
    tile = (1024, 1024)
    block = imagecodecs.zstd_encode(np.zeros(tile, np.uint8).tobytes(), level=19)
    tiles = (-(-side // tile[0])) ** 2
    tifffile.imwrite(
        path,
        (block for _ in range(tiles)),
        shape=(side, side),
        dtype=np.uint8,
        tile=tile,
        compression="zstd",
    )
    return path


def _check(path: Path, settings: Settings) -> None:
    with open_image_file(path) as image_file:
        check_declared_pixels(
            path.name,
            image_file.series,
            path.stat().st_size,
            max_pixels=settings.max_image_pixels,
            max_ratio=settings.max_pixel_compression_ratio,
        )


def test_a_small_file_declaring_ten_gigapixels_is_refused_at_once(tmp_path: Path) -> None:
    bomb = pixel_bomb_tiff(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 2 * 1024**2
    started = time.monotonic()
    with pytest.raises(PixelBomb) as refused:
        _check(bomb, Settings(data_dir=tmp_path))
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert message.startswith("bomb.tif: declares 100000 x 100000 (yx) pixels")
    assert "far more pixels than the file holds" in message
    assert str(tmp_path) not in message


def test_the_absolute_cap_refuses_an_image_whatever_its_size(tmp_path: Path) -> None:
    image = tmp_path / "plain.tif"
    tifffile.imwrite(image, np.zeros((300, 400), np.uint16))
    _check(image, Settings(data_dir=tmp_path))
    with pytest.raises(PixelBomb, match="ALLMICRO_MAX_IMAGE_PIXELS"):
        _check(image, Settings(data_dir=tmp_path, max_image_pixels=100_000))


def test_small_files_may_declare_small_images_whatever_their_compression(tmp_path: Path) -> None:
    # 4096 x 4096 zeros compress to a few hundred bytes: far beyond the ratio, but cheap.
    blank = pixel_bomb_tiff(tmp_path / "blank.tif", side=4096)
    assert blank.stat().st_size * 1000 < 4096 * 4096
    _check(blank, Settings(data_dir=tmp_path))


def test_no_real_sample_is_taken_for_a_bomb(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    checked = 0
    for path in sorted(SAMPLES.rglob("*")):
        if not path.is_file() or path.suffix in (".json", ".md", "") or path.name == "NOTICE":
            continue
        try:
            _check(path, settings)
        except PixelBomb:
            raise
        except ReadError:
            continue  # needs its companions, or is not an image: covered by the corpus tests
        checked += 1
    assert checked >= 25
