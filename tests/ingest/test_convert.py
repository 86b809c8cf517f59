"""`allmicro convert`: options, refusal to overwrite, and nothing visible after a killed conversion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from allmicro_data.ingest.convert import convert_file
from tests.conftest import run_allmicro

OPTIONS = ["--ngff", "0.5", "--chunk", "256", "--codec", "zstd:5", "--workers", "1"]


@pytest.fixture
def sem_tiff(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    data = rng.normal(9000, 1500, (1300, 1100)).clip(0, 65535).astype(np.uint16)
    path = tmp_path / "sem.tif"
    tifffile.imwrite(path, data, tile=(256, 256), photometric="minisblack")
    return path, data


def test_cli_converts_with_the_chosen_version_chunk_and_codec(
    tmp_path: Path, sem_tiff: tuple[Path, np.ndarray]
) -> None:
    source, data = sem_tiff
    target = tmp_path / "out.zarr"
    result = run_allmicro("convert", str(source), str(target), *OPTIONS, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "NGFF 0.5" in result.stderr
    level0 = zarr.open_group(target, mode="r")["0"]
    assert level0.chunks == (256, 256)
    assert level0.metadata.codecs[0].to_dict()["name"] == "sharding_indexed"
    assert np.array_equal(level0[...], data)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]


def test_cli_no_shard_writes_one_object_per_chunk_and_shard_needs_ngff_0_5(
    tmp_path: Path, sem_tiff: tuple[Path, np.ndarray]
) -> None:
    source, data = sem_tiff
    target = tmp_path / "plain.zarr"
    options = ["--ngff", "0.5", "--chunk", "256", "--no-shard"]
    result = run_allmicro("convert", str(source), str(target), *options, timeout=120)
    assert result.returncode == 0, result.stderr
    level0 = zarr.open_group(target, mode="r")["0"]
    assert level0.metadata.codecs[0].to_dict()["name"] != "sharding_indexed"
    assert np.array_equal(level0[...], data)
    # 1300 x 1100 in 256² chunks: 6 rows of 5 chunks, each its own object.
    assert len(list((target / "0" / "c").rglob("*"))) == 6 + 6 * 5

    refused = run_allmicro(
        "convert", str(source), str(tmp_path / "v04.zarr"), "--shard", timeout=120
    )
    assert refused.returncode != 0
    assert "sharding needs NGFF 0.5" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "v04.zarr").exists()


def test_convert_refuses_an_existing_target_and_bad_options(
    tmp_path: Path, sem_tiff: tuple[Path, np.ndarray]
) -> None:
    source, _ = sem_tiff
    (tmp_path / "taken.zarr").mkdir()
    with pytest.raises(FileExistsError):
        convert_file(source, tmp_path / "taken.zarr")
    for options in ({"codec": "gzip"}, {"chunk": 33}, {"ngff": "0.3"}, {"workers": 0}):
        with pytest.raises(ValueError):
            convert_file(source, tmp_path / "new.zarr", **options)  # type: ignore[arg-type]
        assert not (tmp_path / "new.zarr").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new")] == []


def test_killed_conversion_leaves_nothing_visible_and_a_rerun_succeeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    data = rng.integers(0, 4000, (3000, 2000), dtype=np.uint16)
    source = tmp_path / "big.tif"
    tifffile.imwrite(source, data, tile=(256, 256), photometric="minisblack")
    target = tmp_path / "out.zarr"
    # The child announces when part of the pyramid is on disk, then stalls until killed.
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from allmicro_data.ingest.convert import convert_file

        def progress(fraction):
            if fraction > 0.2:
                print("midway", flush=True)
                time.sleep(600)

        convert_file(Path({str(source)!r}), Path({str(target)!r}), chunk=128, progress=progress)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "midway"
        staging = [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]
        assert staging and any(f.is_file() for f in staging[0].rglob("*"))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert not target.exists()

    info = convert_file(source, target, chunk=128)
    assert np.array_equal(zarr.open_group(target, mode="r")["0"][...], data)
    assert info.level_shapes[0] == (3000, 2000)
    # The dead run's staging directory is cleared by the rerun.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]
