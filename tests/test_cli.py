"""The `allmicro` command: convert output is valid OME-Zarr, info follows its contract, db upgrade works."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04 import Image as NgffImage
from sqlalchemy import create_engine, inspect

from tests.conftest import ALLMICRO, SAMPLES

FEI = SAMPLES / "fei" / "FEI-Helios-Ebeam-16bits.tif"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ALLMICRO, *args], capture_output=True, text=True, timeout=300, env=env)


def test_convert_writes_valid_ome_zarr_identical_at_level_0(tmp_path: Path) -> None:
    out = tmp_path / "fei.ome.zarr"
    result = run("convert", str(FEI), str(out))
    assert result.returncode == 0, result.stderr

    group = zarr.open_group(str(out), mode="r")
    NgffImage.from_zarr(group)  # raises when the metadata breaks the NGFF 0.4 model
    nodes = list(Reader(parse_url(str(out)))())
    assert nodes, "ome-zarr's reader found no image"
    level0 = np.asarray(nodes[0].data[0])
    expected = tifffile.imread(FEI)
    assert level0.dtype == expected.dtype
    np.testing.assert_array_equal(level0, expected)


def test_convert_refuses_unreadable_input_with_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"\x00" * 1000)
    result = run("convert", str(junk), str(tmp_path / "junk.zarr"))
    assert result.returncode != 0
    assert "junk.tif" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_json_follows_the_contract(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"")
    result = run("info", "--json", str(FEI), str(junk))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    good, bad = document["files"]
    assert good["error"] is None
    assert good["format"]
    (series,) = good["series"]
    assert series["axes"] == "YX"
    assert series["shape"] == [471, 512]
    assert series["dtype"] == "uint16"
    assert set(series["pixel_size"]) == {"x", "y", "z"}
    for key in ("modality", "vendor", "instrument", "acquired_at", "accelerating_voltage"):
        assert key in series["acquisition"]
    assert bad["error"] and "junk.mrc" in bad["error"]
    assert bad["series"] == []
    assert "junk.mrc" in result.stderr


def test_db_upgrade_creates_the_catalogue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    env = {
        "ALLMICRO_DATABASE_URL": url,
        "ALLMICRO_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = run("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"organisation", "user_account", "project", "dataset", "file", "image", "job"} <= tables
    assert "audit_event" in tables and "alembic_version" in tables
