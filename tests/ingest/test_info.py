"""`allmicro info --json` keeps its contract: names, nulls, grouped companions, exit code 1 on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from allmicro_data.acquisition import ACQUISITION_FIELDS
from tests.ingest.conftest import SAMPLES

ACQUISITION_KEYS = {
    "modality", "vendor", "instrument", "acquired_at", "operator", "accelerating_voltage",
    "magnification", "working_distance", "horizontal_field_width", "detector", "beam_current",
    "dwell_time", "exposure_time", "tilt_angle_deg", "camera_length", "objective", "channels",
}  # fmt: skip


def _info(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allmicro_data.cli", "info", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_info_json_groups_emi_with_ser_and_reports_broken_files(tmp_path: Path) -> None:
    emi = SAMPLES / "tia" / "64x64_TEM_images_acquire.emi"
    broken = tmp_path / "broken.dm4"
    broken.write_bytes(b"\x00\x00\x00\x04" + bytes(60))
    proc = _info(str(emi), str(emi.with_name("64x64_TEM_images_acquire_1.ser")), str(broken))
    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    tia, bad = document["files"]
    assert tia["error"] is None and tia["format"] == "FEI TIA EMI"
    series = tia["series"][0]
    assert set(series) >= {
        "name",
        "axes",
        "shape",
        "dtype",
        "pixel_size",
        "acquisition",
        "vendor",
        "warnings",
    }
    # The names clients already read stay; every field of the table is there.
    assert set(series["acquisition"]) >= ACQUISITION_KEYS
    assert set(series["acquisition"]) == {f.name for f in ACQUISITION_FIELDS} | {"channels"}
    assert series["axes"] == "YX" and series["acquisition"]["accelerating_voltage"] == 200000.0
    assert series["acquisition"]["working_distance"] is None
    assert bad["error"].startswith("broken.dm4: ") and "\n" not in bad["error"]
