"""OME-XML built for every sample series validates against the OME schema and carries its calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ome_types
import pytest

from allmicro_data.ingest.ome_xml import ACQUISITION_NS, VENDOR_NS, build_ome_xml
from allmicro_data.ingest.readers import open_image_file
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
