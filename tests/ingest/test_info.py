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


def test_info_on_an_emi_alone_reads_the_ser_beside_it() -> None:
    # Given alone, the .emi brings its X_1.ser by TIA's naming rule; without it the .emi holds
    # no image and the entry is an error.
    emi = SAMPLES / "tia" / "64x64_TEM_images_acquire.emi"
    proc = _info(str(emi))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (entry,) = json.loads(proc.stdout)["files"]
    assert entry["error"] is None and entry["format"] == "FEI TIA EMI"
    assert [Path(c).name for c in entry["companions"]] == ["64x64_TEM_images_acquire_1.ser"]
    assert entry["series"][0]["shape"] == [64, 64]


def test_info_on_a_de_movie_alone_reads_its_info_txt_and_sums() -> None:
    movie = SAMPLES / "direct-electron" / "20241021_00405_movie.mrc"
    proc = _info(str(movie))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (entry,) = json.loads(proc.stdout)["files"]
    assert entry["error"] is None
    assert {Path(c).name for c in entry["companions"]} == {
        "20241021_00405_info.txt",
        "20241021_00405_final.mrc",
        "20241021_00405_0_Virt 0_sum.mrc",
        "20241021_00405_1_Virt 1_sum.mrc",
        "20241021_00405_ext1_Ext 1.mrc",
    }
    series = entry["series"][0]
    # What only the _info.txt says: the detector, the voltage and the acquisition time.
    assert "de_info" in series["vendor"]
    assert series["acquisition"]["detector"] == "DESim"
    assert series["acquisition"]["accelerating_voltage"] == 300000.0


def test_info_on_a_jeol_image_reads_the_asw_project_that_lists_it(tmp_path: Path) -> None:
    from tests.ingest.test_em_containers import _asw

    view = tmp_path / "Alloy 7" / "View 003"
    view.mkdir(parents=True)
    image = view / "Dummy-Data_0000000.img"
    image.write_bytes((SAMPLES / "jeol" / image.name).read_bytes())
    project = _asw(tmp_path / "Project.ASW", "Alloy 7\\View 003\\Dummy-Data_0000000.img")
    _asw(tmp_path / "Other.ASW", "Alloy 7\\View 004\\Dummy-Data_0000009.img")
    proc = _info(str(image))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (entry,) = json.loads(proc.stdout)["files"]
    assert entry["companions"] == [str(project)]
    asw = entry["series"][0]["vendor"]["original_metadata"]["asw"]
    assert asw["sample"]["SampleName"] == "Alloy 7"
    # The project given alone is read with the data file it lists, not as metadata only.
    proc = _info(str(project))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (entry,) = json.loads(proc.stdout)["files"]
    assert entry["error"] is None and entry["companions"] == [str(image)]
