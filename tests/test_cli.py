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

from tests.conftest import SAMPLES, run_allmicro

FEI = SAMPLES / "fei" / "FEI-Helios-Ebeam-16bits.tif"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_allmicro(*args, env=env)


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


def test_admin_commands_manage_people_and_projects(tmp_path: Path) -> None:
    env = {
        "ALLMICRO_DATA_DIR": str(tmp_path),
        "ALLMICRO_NEW_USER_PASSWORD": "a password long enough",
        "PATH": "/usr/bin:/bin",
    }

    def cli(*args: str) -> str:
        result = run(*args, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert "up to date" in cli("db", "upgrade")
    cli("admin", "create-organisation", "Acme Coatings", "--kind", "company", "--country", "it")
    cli("admin", "create-user", "ceo@acme.example", "--organisation", "Acme Coatings")
    project = cli(
        "admin", "create-project", "Acme pilot", "--kind", "pilot", "--client", "Acme Coatings"
    )
    cli("admin", "add-member", project, "--organisation", "Acme Coatings", "--role", "viewer")
    cli("admin", "create-dataset", "Acme pilot", "Cross-sections")
    assert "org:Acme Coatings" in cli("admin", "list", "members", "--project", "Acme pilot")
    assert "IT" in cli("admin", "list", "organisations")
    token = cli("admin", "create-token", "ceo@acme.example", "--name", "SEM PC", "--scope", "read")
    assert token.startswith("amd_")
    assert "admin=True" in cli("admin", "set-user", "ceo@acme.example", "--admin")
    assert "reset" in cli("admin", "reset-password", "ceo@acme.example")
    weak = run(
        "admin",
        "reset-password",
        "ceo@acme.example",
        env={**env, "ALLMICRO_NEW_USER_PASSWORD": "short"},
    )
    assert weak.returncode == 1 and "at least" in weak.stderr
    cli("admin", "remove-member", "Acme pilot", "--organisation", "Acme Coatings")
    assert "org:" not in cli("admin", "list", "members", "--project", "Acme pilot")

    refused = run("admin", "create-project", "Pilot without client", "--kind", "pilot", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "allmicro: a pilot project names its client company"
    duplicate = run("admin", "create-organisation", "Acme Coatings", "--kind", "company", env=env)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    assert "Traceback" not in duplicate.stderr
