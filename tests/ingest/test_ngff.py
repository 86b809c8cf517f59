"""The pyramid format package: metadata written by the writer parses back to the same layout, and settings pick it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from allmicro_data.ingest.ngff import ChunkCodec, pyramid_options, read_pyramid_metadata
from allmicro_data.ingest.pyramid import write_pyramid
from allmicro_data.ingest.readers.array import ArraySeries
from allmicro_data.ingest.readers.base import PixelSize
from allmicro_data.settings import Settings
from allmicro_data.storage.local import LocalStore
from tests.ingest.test_pyramid import KEY, sem_like

LAYOUTS = [("0.4", None), ("0.5", True), ("0.5", False)]


@pytest.mark.parametrize(("ngff", "shard"), LAYOUTS)
def test_written_metadata_parses_back_to_the_layout_the_writer_planned(
    tmp_path: Path, ngff: str, shard: bool | None
) -> None:
    store = LocalStore(tmp_path)
    series = ArraySeries(
        sem_like((700, 1100)), "yx", pixel_size=PixelSize(x=2e-9, y=3e-9), name="sem"
    )
    info = write_pyramid(series, store, KEY, ngff=ngff, chunk=128, codec="zstd:5", shard=shard)

    meta = read_pyramid_metadata(store, KEY)

    assert meta.ngff_version == ngff and meta.zarr_format == (2 if ngff == "0.4" else 3)
    assert meta.axes == "yx" and meta.name == "sem"
    assert [level.shape for level in meta.levels] == info.level_shapes
    assert [level.chunks for level in meta.levels] == info.chunk_shapes == [(128, 128)] * 3
    assert all(level.dtype == "uint16" and level.direct for level in meta.levels)
    assert all(level.decoder is not None for level in meta.levels)
    if shard:
        # One shard per chunk row of a level: the row's chunks side by side.
        assert [level.shards for level in meta.levels] == [(128, 1152), (128, 640), (128, 384)]
        assert meta.levels[0].object_key((3, 5)) == "0/c/3/0"
        assert meta.levels[0].shard_slot((3, 5)) == 5
    else:
        assert all(level.shards is None for level in meta.levels)
        assert meta.levels[1].object_key((2, 4)) == ("1/2/4" if ngff == "0.4" else "1/c/2/4")
    # Scales in micrometres, doubling per level.
    assert meta.scales == [
        [pytest.approx(0.003 * 2**k), pytest.approx(0.002 * 2**k)] for k in range(3)
    ]
    assert [c.window for c in meta.channels] == info.windows
    assert meta.channels[0].label == "channel 0" and meta.channels[0].colour == "FFFFFF"
    assert meta.colour_model == "greyscale"


def test_metadata_that_is_not_ngff_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    write_pyramid(ArraySeries(sem_like((300, 300)), "yx"), store, KEY)
    attrs = json.loads(store.get_bytes(f"{KEY}/.zattrs"))
    del attrs["multiscales"][0]["axes"]
    store.put_bytes(f"{KEY}/.zattrs", json.dumps(attrs).encode())

    with pytest.raises(ValueError, match="axes"):
        read_pyramid_metadata(store, KEY)


def test_pyramid_settings_become_the_writers_options() -> None:
    default = pyramid_options(Settings())
    assert default == {"ngff": "0.4", "chunk": None, "codec": "blosc-zstd:1", "shard": None}

    chosen = Settings(
        pyramid_ngff="0.5", pyramid_chunk=256, pyramid_codec="zstd:7", pyramid_shard=False
    )
    assert pyramid_options(chosen) == {
        "ngff": "0.5",
        "chunk": 256,
        "codec": "zstd:7",
        "shard": False,
    }
    # NGFF 0.4 has no shards, whatever the switch says.
    assert pyramid_options(Settings(pyramid_shard=True))["shard"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {"pyramid_ngff": "0.6"},
        {"pyramid_codec": "lzma"},
        {"pyramid_codec": "zstd:23"},
        {"pyramid_codec": "blosc-lz4:10"},
        {"pyramid_chunk": 255},
        {"pyramid_chunk": 0},
    ],
)
def test_pyramid_settings_that_the_writer_cannot_honour_fail_at_start(
    bad: dict[str, object],
) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["zstd", "zstd:0", "zstd:22", "blosc-zstd", "blosc-lz4:9"])
def test_every_codec_the_settings_accept_the_writer_accepts(codec: str) -> None:
    settings = Settings(pyramid_codec=codec)
    assert ChunkCodec.parse(settings.pyramid_codec).label.startswith(codec.split(":")[0])
