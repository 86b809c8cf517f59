"""OME-XML built for every sample series validates against the OME schema and carries its calibration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import ome_types
import pytest

from allmicro_data.ingest.ome_xml import ACQUISITION_NS, VENDOR_NS, build_ome_xml
from allmicro_data.ingest.readers import open_image_file
from tests.conftest import REPO
from tests.ingest.conftest import SAMPLES, manifest

PRIMARY = [f for f in manifest()["files"] if f.get("role") == "primary"]


@pytest.mark.parametrize("entry", PRIMARY, ids=[f["path"] for f in PRIMARY])
def test_built_ome_xml_validates_and_keeps_calibration(entry: dict[str, object]) -> None:
    path = SAMPLES / str(entry["path"])
    companions = [SAMPLES / str(c) for c in entry.get("companions", [])]  # type: ignore[attr-defined]
    with open_image_file(path, companions) as image_file:
        series = image_file.series[image_file.primary_series]
        xml = build_ome_xml(series, path.name)
        document = ome_types.from_xml(xml, validate=True)
        pixels = document.images[0].pixels
        sizes = dict(zip(series.axes, series.shape, strict=True))
        assert (pixels.size_x, pixels.size_y) == (sizes["x"], sizes["y"])
        assert pixels.size_c == sizes.get("c", 1) and pixels.size_z == sizes.get("z", 1)
        if series.pixel_size.x is not None:
            assert pixels.physical_size_x_unit.value == "nm"
            assert np.isclose(pixels.physical_size_x * 1e-9, series.pixel_size.x)
        else:
            assert pixels.physical_size_x is None
        namespaces = {a.namespace for a in document.structured_annotations.map_annotations}
        assert namespaces == {ACQUISITION_NS, VENDOR_NS}
        if series.acquisition.instrument:
            assert document.instruments[0].microscope.model == series.acquisition.instrument
        # The reader's own document, when it offers one, must validate too.
        own = series.ome_xml()
        if own is not None:
            ome_types.validate_xml(own)


def test_vendor_keys_become_map_annotation_pairs() -> None:
    path = SAMPLES / "fei" / "FEI-Helios-Ebeam-16bits.tif"
    with open_image_file(Path(path)) as image_file:
        xml = build_ome_xml(image_file.series[0], path.name)
    document = ome_types.from_xml(xml)
    vendor = next(
        a for a in document.structured_annotations.map_annotations if a.namespace == VENDOR_NS
    )
    pairs = {m.k: m.value for m in vendor.value.ms}
    assert pairs["fei.Beam.HV"] == "5000"
    assert pairs["fei.System.SystemType"] == 'Helios NanoLab" 660'
    assert document.images[0].acquisition_date is not None


# Builds the OME-XML of every primary sample in a fresh interpreter, as a job process does: with
# the ingest package imported first, or ("with-units") with ome-types' pint registry loaded.
_BUILD_ALL = """
import hashlib, json, sys
if sys.argv[1] == "with-units":
    import ome_types.units
from allmicro_data.ingest.ome_xml import build_ome_xml
from allmicro_data.ingest.readers import open_image_file
from tests.ingest.conftest import SAMPLES, manifest
digests = []
for entry in manifest()["files"]:
    if entry.get("role") != "primary":
        continue
    companions = [SAMPLES / c for c in entry.get("companions", [])]
    with open_image_file(SAMPLES / entry["path"], companions) as image_file:
        series = image_file.series[image_file.primary_series]
        xml = build_ome_xml(series, entry["path"])
    digests.append(hashlib.sha256(xml.encode()).hexdigest())
units = sys.modules.get("ome_types.units")
print(json.dumps({"digests": digests, "pint_registry": getattr(units, "ureg", None) is not None}))
"""


def test_job_processes_skip_the_unit_registry_and_build_the_same_documents() -> None:
    runs = {}
    for mode in ("as-a-job", "with-units"):
        done = subprocess.run(
            [sys.executable, "-c", _BUILD_ALL, mode],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
            timeout=300,
        )
        runs[mode] = json.loads(done.stdout.splitlines()[-1])
    assert not runs["as-a-job"]["pint_registry"]
    assert runs["with-units"]["pint_registry"]
    assert len(runs["as-a-job"]["digests"]) == len(PRIMARY) > 10
    assert runs["as-a-job"]["digests"] == runs["with-units"]["digests"]
