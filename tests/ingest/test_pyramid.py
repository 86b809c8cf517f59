"""The streaming pyramid writer: NGFF validity, exact level 0, block means, scales, determinism, visibility."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from allmicro_data.ingest.pyramid import PyramidInfo, level_shapes, write_pyramid
from allmicro_data.ingest.pyramid_downsample import downsample
from allmicro_data.ingest.readers.array import ArraySeries, RawFileSeries
from allmicro_data.ingest.readers.base import PixelSize
from allmicro_data.storage.base import StoredObject
from allmicro_data.storage.local import LocalStore

KEY = "images/abc/image.ome.zarr"


def sem_like(shape: tuple[int, ...], seed: int = 0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    return rng.normal(9000, 1500, shape).clip(0, 65535).astype(np.uint16)


def block_mean(data: np.ndarray[Any, Any], axes: Iterable[int]) -> np.ndarray[Any, Any]:
    """Reference 2x block mean in float64: odd edges average only the pixels that exist."""
    out = data.astype(np.float64)
    for axis in axes:
        n = out.shape[axis]
        even = out.take(range(0, n, 2), axis=axis)
        odd = out.take(range(1, n, 2), axis=axis)
        if odd.shape[axis] < even.shape[axis]:
            last = even.take([-1], axis=axis)
            odd = np.concatenate([odd, last], axis=axis)
        out = (even + odd) / 2
    return out


def open_level(store: LocalStore, key: str, level: int) -> np.ndarray[Any, Any]:
    return np.asarray(zarr.open_group(store.root / key, mode="r")[str(level)][...])


def validate(store: LocalStore, key: str, version: str) -> Any:
    if version == "0.4":
        from ome_zarr_models.v04 import Image
    else:
        from ome_zarr_models.v05 import Image
    image = Image.from_zarr(zarr.open_group(store.root / key, mode="r"))
    nodes = list(Reader(parse_url(str(store.root / key)))())
    assert nodes and nodes[0].data, "ome-zarr's reader found no multiscale image"
    return image, nodes[0]


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_2d_pyramid_validates_keeps_level0_exact_and_level1_is_the_block_mean(
    tmp_path: Path, ngff: str
) -> None:
    data = sem_like((1201, 1703))
    series = ArraySeries(data, "yx", name="sem", pixel_size=PixelSize(x=2e-9, y=2e-9))
    store = LocalStore(tmp_path)
    info = write_pyramid(series, store, KEY, ngff=ngff, chunk=256)

    assert info.level_shapes == [(1201, 1703), (601, 852), (301, 426)]
    assert info.chunk_shapes == [(256, 256), (256, 256), (256, 256)]
    _, node = validate(store, KEY, ngff)
    assert [tuple(d.shape) for d in node.data] == info.level_shapes
    assert np.array_equal(open_level(store, KEY, 0), data)
    level1 = open_level(store, KEY, 1)
    assert np.abs(level1 - block_mean(data, (0, 1))).max() <= 0.5
    level2 = open_level(store, KEY, 2)
    assert np.abs(level2 - block_mean(level1, (0, 1))).max() <= 0.5

    attrs = json.loads((tmp_path / KEY / (".zattrs" if ngff == "0.4" else "zarr.json")).read_text())
    ome = attrs if ngff == "0.4" else attrs["attributes"]["ome"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]]
    assert np.allclose(scales, [[0.002, 0.002], [0.004, 0.004], [0.008, 0.008]])
    assert [a["unit"] for a in ome["multiscales"][0]["axes"]] == ["micrometer"] * 2
    lo, hi = np.percentile(data, [0.1, 99.9])
    (window,) = info.windows
    assert window[0] == pytest.approx(lo, rel=0.01) and window[1] == pytest.approx(hi, rel=0.01)
    assert ome["omero"]["channels"][0]["window"]["start"] == window[0]


def test_volume_downsamples_z_y_and_x_with_odd_edges(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(0, 3, (141, 300, 1100)).astype(np.float32)
    series = ArraySeries(data, "zyx", is_volume=True, pixel_size=PixelSize(2e-10, 2e-10, 2e-10))
    store = LocalStore(tmp_path)
    info = write_pyramid(series, store, KEY, chunk=64)

    assert info.level_shapes == [(141, 300, 1100), (71, 150, 550), (36, 75, 275)]
    assert info.chunk_shapes[0] == (64, 64, 64)
    validate(store, KEY, "0.4")
    assert np.array_equal(open_level(store, KEY, 0), data)
    level1 = open_level(store, KEY, 1)
    np.testing.assert_allclose(level1, block_mean(data, (0, 1, 2)), atol=1e-5)
    level2 = open_level(store, KEY, 2)
    np.testing.assert_allclose(level2, block_mean(level1, (0, 1, 2)), atol=1e-5)


def test_stack_and_time_series_downsample_only_y_and_x(tmp_path: Path) -> None:
    data = sem_like((2, 2, 3, 700, 650))
    store = LocalStore(tmp_path)
    info = write_pyramid(ArraySeries(data, "tczyx"), store, KEY, chunk=256)

    assert info.level_shapes == [(2, 2, 3, 700, 650), (2, 2, 3, 350, 325)]
    assert info.chunk_shapes[0] == (1, 1, 1, 256, 256)
    assert len(info.windows) == 2
    validate(store, KEY, "0.4")
    assert np.array_equal(open_level(store, KEY, 0), data)
    assert np.abs(open_level(store, KEY, 1) - block_mean(data, (3, 4))).max() <= 0.5


def test_rgb_is_stored_as_three_uint8_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, (3, 600, 530), dtype=np.uint8)
    store = LocalStore(tmp_path)
    info = write_pyramid(ArraySeries(data, "cyx", rgb=True), store, KEY, ngff="0.5")

    assert info.dtype == "uint8" and len(info.windows) == 3
    validate(store, KEY, "0.5")
    assert np.array_equal(open_level(store, KEY, 0), data)
    attrs = json.loads((tmp_path / KEY / "zarr.json").read_text())["attributes"]["ome"]
    assert [c["color"] for c in attrs["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]


def test_sharded_0_5_writes_one_object_per_chunk_row(tmp_path: Path) -> None:
    data = sem_like((1100, 1300))
    store = LocalStore(tmp_path)
    info = write_pyramid(ArraySeries(data, "yx"), store, KEY, ngff="0.5", chunk=256)

    assert info.sharded
    level0_chunks = [o.key for o in info.objects if o.key.startswith(f"{KEY}/0/c/")]
    assert len(level0_chunks) == 5  # ceil(1100 / 256) rows, each one shard
    assert np.array_equal(open_level(store, KEY, 0), data)
    assert np.abs(open_level(store, KEY, 1) - block_mean(data, (0, 1))).max() <= 0.5


def test_unsharded_0_5_and_0_4_hold_the_same_pixels(tmp_path: Path) -> None:
    data = sem_like((700, 900))
    store = LocalStore(tmp_path)
    write_pyramid(ArraySeries(data, "yx"), store, "a", ngff="0.5", shard=False, codec="zstd")
    write_pyramid(ArraySeries(data, "yx"), store, "b", ngff="0.4", codec="blosc-lz4")
    for level in (0, 1):
        assert np.array_equal(open_level(store, "a", level), open_level(store, "b", level))
    assert (tmp_path / "a" / "0" / "c" / "0" / "0").is_file()


def test_converting_twice_gives_byte_identical_objects(tmp_path: Path) -> None:
    data = sem_like((900, 1000))
    first = write_pyramid(ArraySeries(data, "yx"), LocalStore(tmp_path / "1"), KEY, chunk=256)
    second = write_pyramid(ArraySeries(data, "yx"), LocalStore(tmp_path / "2"), KEY, chunk=256)
    assert first.objects == second.objects
    on_disk = sorted(p.relative_to(tmp_path / "1").as_posix() for p in (tmp_path / "1").rglob("*"))
    assert [o.key for o in first.objects] == [p for p in on_disk if (tmp_path / "1" / p).is_file()]


def test_objects_report_size_and_sha256_of_every_stored_object(tmp_path: Path) -> None:
    import hashlib

    store = LocalStore(tmp_path)
    info = write_pyramid(ArraySeries(sem_like((600, 600)), "yx"), store, KEY, ome_xml="<OME/>")
    assert f"{KEY}/OME/METADATA.ome.xml" in {o.key for o in info.objects}
    for obj in info.objects:
        content = (tmp_path / obj.key).read_bytes()
        assert obj.size == len(content)
        assert obj.sha256 == hashlib.sha256(content).hexdigest()


class PlainStore:
    """An ObjectStore that is not a LocalStore, so the writer takes its generic path."""

    def __init__(self, inner: LocalStore, fail_after: int | None = None) -> None:
        self.inner = inner
        self.fail_after = fail_after
        self.puts = 0

    @property
    def url(self) -> str:
        return self.inner.url

    def put(self, key: str, stream: BinaryIO | Iterable[bytes]) -> StoredObject:
        self.puts += 1
        if self.fail_after is not None and self.puts > self.fail_after:
            raise OSError("disk went away")
        return self.inner.put(key, stream)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        return self.put(key, [data])

    def open(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self.inner.open(key, start, end)

    def get_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self.inner.get_bytes(key, start, end)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)


def test_generic_object_store_gets_the_same_objects_as_local_store(tmp_path: Path) -> None:
    data = sem_like((800, 700))
    local = write_pyramid(ArraySeries(data, "yx"), LocalStore(tmp_path / "l"), KEY, ngff="0.5")
    generic = write_pyramid(
        ArraySeries(data, "yx"), PlainStore(LocalStore(tmp_path / "g")), KEY, ngff="0.5"
    )
    assert local.objects == generic.objects


def test_failed_write_leaves_no_visible_image_and_a_rerun_replaces_it(tmp_path: Path) -> None:
    data = sem_like((1000, 1000))
    local = LocalStore(tmp_path)
    # An earlier, complete pyramid with other chunking is being replaced.
    old = write_pyramid(ArraySeries(data, "yx"), local, KEY, chunk=128)
    with pytest.raises(OSError):
        write_pyramid(ArraySeries(data, "yx"), PlainStore(local, fail_after=10), KEY, chunk=256)
    assert not (tmp_path / KEY / ".zattrs").exists()
    with pytest.raises(Exception):  # noqa: B017 - any error: the image must not open
        validate(local, KEY, "0.4")

    info = write_pyramid(ArraySeries(data, "yx"), local, KEY, chunk=256)
    validate(local, KEY, "0.4")
    stored = sorted(local.list(f"{KEY}/"))
    assert stored == [o.key for o in info.objects]
    assert len(stored) < len(old.objects)
    assert np.array_equal(open_level(local, KEY, 0), data)


def test_existing_levels_are_copied_not_recomputed(tmp_path: Path) -> None:
    data = sem_like((2100, 2000))
    # A file pyramid whose level 1 is recognisably not the block mean of level 0.
    carried = np.full((1050, 1000), 7, dtype=np.uint16)
    series = ArraySeries(data, "yx", levels=[ArraySeries(carried, "yx")])
    store = LocalStore(tmp_path)
    info = write_pyramid(series, store, KEY)

    assert info.reused_levels == 1
    assert info.level_shapes == [(2100, 2000), (1050, 1000), (525, 500), (263, 250)]
    validate(store, KEY, "0.4")
    assert np.array_equal(open_level(store, KEY, 1), carried)
    assert np.all(open_level(store, KEY, 2) == 7)


def test_label_images_downsample_by_mode(tmp_path: Path) -> None:
    labels = np.zeros((600, 800), dtype=np.uint16)
    labels[100:301, 100:501] = 3
    labels[::2, ::2] = np.where(labels[::2, ::2] == 3, 5, labels[::2, ::2])
    store = LocalStore(tmp_path)
    info = write_pyramid(ArraySeries(labels, "yx"), store, KEY, method="mode")

    assert info.method == "mode"
    level1 = open_level(store, KEY, 1)
    assert set(np.unique(level1)) <= {0, 3, 5}
    # Inside the object three of four pixels are 3 and one is 5: the mode is 3, never a mean.
    assert np.all(level1[60:140, 60:240] == 3)


def test_progress_rises_to_one(tmp_path: Path) -> None:
    seen: list[float] = []
    write_pyramid(
        ArraySeries(sem_like((1500, 600)), "yx"),
        LocalStore(tmp_path),
        KEY,
        chunk=64,
        progress=seen.append,
    )
    assert seen[-1] == 1.0
    assert seen == sorted(seen) and all(0.0 <= f <= 1.0 for f in seen)


def test_raw_file_series_reads_regions_of_a_c_ordered_file(tmp_path: Path) -> None:
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    path = tmp_path / "raw.bin"
    path.write_bytes(b"H" * 100 + data.tobytes())
    series = RawFileSeries(path, 100, data.shape, "float32", "zyx", is_volume=True)
    for region in [
        (slice(1, 3), slice(None), slice(None)),
        (slice(0, 5), slice(2, 4), slice(None)),
        (slice(2, 4), slice(1, 5), slice(3, 6)),
        None,
    ]:
        expected = data if region is None else data[region]
        assert np.array_equal(series.read(region), expected)
    series.close()


def test_series_that_read_into_buffers_give_the_same_pyramid(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, (70, 130, 300)).astype(np.float32)
    path = tmp_path / "vol.raw"
    path.write_bytes(b"\0" * 64 + data.tobytes())
    raw = RawFileSeries(path, 64, data.shape, "float32", "zyx", is_volume=True)
    from_file = write_pyramid(raw, LocalStore(tmp_path / "f"), KEY, chunk=32, ngff="0.5")
    in_memory = write_pyramid(
        ArraySeries(data, "zyx", is_volume=True),
        LocalStore(tmp_path / "m"),
        KEY,
        chunk=32,
        ngff="0.5",
    )
    raw.close()
    # Only the image name (the file's) differs, in the root group's attributes.
    root = f"{KEY}/zarr.json"
    assert [o for o in from_file.objects if o.key != root] == [
        o for o in in_memory.objects if o.key != root
    ]


def test_downsample_rounds_half_up_and_averages_only_existing_edge_pixels() -> None:
    block = np.array([[1, 2, 7], [2, 2, 8], [9, 9, 9]], dtype=np.uint8)
    out = downsample(block, (2, 2))
    # (1+2+2+2)/4 = 1.75 -> 2; (7+8)/2 = 7.5 -> 8; (9+9)/2 = 9; 9
    assert out.tolist() == [[2, 8], [9, 9]]
    signed = np.array([[-3, -2]], dtype=np.int16)
    assert downsample(signed, (1, 2)).tolist() == [[-2]]  # -2.5 rounds half up to -2


def test_level_shapes_stop_at_512() -> None:
    assert level_shapes((16384, 16384), "yx")[-1] == (512, 512)
    assert len(level_shapes((16384, 16384), "yx")) == 6
    assert level_shapes((512, 1024, 1024), "zyx", volume=True) == [
        (512, 1024, 1024),
        (256, 512, 512),
    ]
    assert level_shapes((500, 400), "yx") == [(500, 400)]


def test_info_keeps_the_fields_the_pipeline_uses(tmp_path: Path) -> None:
    info = write_pyramid(ArraySeries(sem_like((300, 300)), "yx"), LocalStore(tmp_path), KEY)
    assert isinstance(info, PyramidInfo)
    assert (info.key, info.ngff_version, info.axes, info.dtype) == (KEY, "0.4", "yx", "uint16")
    assert info.level_shapes == [(300, 300)]


@pytest.mark.parametrize("spec", ["zstd:3", "blosc-zstd:1", "blosc-lz4:5"])
@pytest.mark.parametrize("dtype", ["uint16", "float32", "uint8"])
def test_chunk_encoder_writes_the_bytes_of_the_codec_the_metadata_names(
    spec: str, dtype: str
) -> None:
    from allmicro_data.ingest.ngff import ChunkCodec, ChunkEncoder

    codec = ChunkCodec.parse(spec)
    data = sem_like((2, 300, 500)).astype(dtype)
    view = data[:, ::2, 7:400]  # not C-ordered, as pieces of a band are
    encoded = ChunkEncoder(codec).encode(view)
    assert encoded == codec.numcodec().encode(np.ascontiguousarray(view))
    decoded = np.frombuffer(codec.numcodec().decode(encoded), dtype=dtype)
    assert np.array_equal(decoded.reshape(view.shape), view)


FREED_AND_TAKEN_AGAIN = """
import resource, sys
from allmicro_data.ingest.pyramid import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    row = [b"x" * (7 << 20) for _ in range(12)]  # a shard row of encoded chunks, 84 MiB
    del row
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[-1])
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_memory_a_shard_row_frees_is_taken_again_without_fresh_pages() -> None:
    """The writer keeps freed memory for the next row, which otherwise faults fresh pages in."""

    def faults(mode: str) -> int:
        script = [sys.executable, "-c", FREED_AND_TAKEN_AGAIN, mode]
        return int(subprocess.run(script, check=True, capture_output=True, text=True).stdout)

    rows_pages = 84 * 2**20 // 4096
    assert faults("default") > rows_pages // 2  # glibc's own thresholds give the row back
    assert faults("keep") < rows_pages // 100
