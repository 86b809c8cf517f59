"""The measurement rules of allmicro_data.rois without a server: the data bar is left out of
region statistics and profiles, huge regions are read in bounded bands or refused, shapes are
checked, and OME ROIs land where the schema wants them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from allmicro_data import rois
from allmicro_data.catalogue.models import Roi
from allmicro_data.errors import Invalid

# A 40 x 30 frame whose last 10 rows are the instrument's data bar.
PIXELS = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
FRAME = rois.Frame(width=30, height=40, pixel_size_x=2e-9, pixel_size_y=2e-9, region=(0, 30, 0, 30))


def reader(reads: list[tuple[tuple[int, int], tuple[int, int]]]) -> rois.PixelReader:
    def read(ys: tuple[int, int], xs: tuple[int, int]) -> np.ndarray[Any, Any]:
        reads.append((ys, xs))
        return PIXELS[ys[0] : ys[1], xs[0] : xs[1]]

    return read


def test_region_statistics_leave_out_the_data_bar() -> None:
    shape = rois.checked_shape("rectangle", [[0, 20], [30, 40]], FRAME)
    found = rois.statistics(shape, FRAME, reader([]))
    values = PIXELS[20:30, :].astype(float)  # rows 30..39 are the data bar
    assert found.pixels == values.size
    assert found.mean == pytest.approx(values.mean())
    assert found.std == pytest.approx(values.std())
    assert (found.min, found.max) == (values.min(), values.max())
    inside_bar = rois.checked_shape("rectangle", [[0, 31], [30, 40]], FRAME)
    assert rois.statistics(inside_bar, FRAME, reader([])).pixels == 0


def test_a_profile_has_no_values_in_the_data_bar() -> None:
    shape = rois.checked_shape("line", [[5.5, 0.5], [5.5, 39.5]], FRAME)
    samples = rois.profile(shape, FRAME, reader([]))
    assert [s.y for s in samples] == list(range(40))
    assert [s.value for s in samples[:30]] == PIXELS[:30, 5].tolist()
    assert all(s.value is None for s in samples[30:])
    assert samples[-1].distance == pytest.approx(39 * 2e-9)
    text = rois.profile_csv(samples, FRAME)
    assert text.splitlines()[0] == "index,x,y,distance_nm,value"
    assert text.splitlines()[-1] == "39,5,39,78,"


def test_large_regions_are_read_in_bands_and_huge_ones_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rois, "BAND_PIXELS", 60)  # two rows of 30 per read
    reads: list[tuple[tuple[int, int], tuple[int, int]]] = []
    shape = rois.checked_shape("ellipse", [[0, 0], [30, 30]], FRAME)
    banded = rois.statistics(shape, FRAME, reader(reads))
    assert len(reads) == 15 and all(ys[1] - ys[0] <= 2 for ys, _ in reads)
    monkeypatch.setattr(rois, "BAND_PIXELS", 10**9)
    whole = rois.statistics(shape, FRAME, reader([]))
    assert banded.pixels == whole.pixels
    assert banded.mean == pytest.approx(whole.mean) and banded.std == pytest.approx(whole.std)
    monkeypatch.setattr(rois, "MAX_REGION_PIXELS", 100)
    with pytest.raises(Invalid, match="at most 100"):
        rois.statistics(shape, FRAME, reader([]))


@pytest.mark.parametrize(
    ("kind", "points"),
    [
        ("star", [[1, 1]]),
        ("line", [[1, 1], [31, 1]]),
        ("line", [[1, 1], [float("nan"), 1]]),
        ("point", [[1, 1], [2, 2]]),
        ("polygon", [[1, 1], [2, 2]]),
        ("polyline", [[1, 1]] * (rois.MAX_POINTS + 1)),
        ("ellipse", [[1, 1], [1, 5]]),
    ],
)
def test_bad_shapes_are_invalid(kind: str, points: list[list[float]]) -> None:
    with pytest.raises(Invalid):
        rois.checked_shape(kind, points, FRAME)


def test_lengths_angles_and_areas_use_each_axis_pixel_size() -> None:
    frame = rois.Frame(10, 10, pixel_size_x=1e-9, pixel_size_y=2e-9, region=(0, 10, 0, 10))
    line = rois.checked_shape("line", [[0, 0], [3, 2]], frame)
    assert rois.length(line, frame) == pytest.approx(5e-9)
    angle = rois.checked_shape("angle", [[4, 0], [0, 0], [0, 2]], frame)
    assert rois.angle_deg(angle, frame) == pytest.approx(90)
    polygon = rois.checked_shape("polygon", [[0, 0], [4, 0], [4, 2], [0, 2]], frame)
    assert rois.area(polygon, frame) == pytest.approx(8 * 2e-18)
    assert rois.length_unit(5e-10) == ("Å", 1e-10)
    assert rois.length_unit(2.5e-6) == ("µm", 1e-6)


def test_ome_rois_follow_the_documents_namespace_and_the_schemas_order() -> None:
    from lxml import etree

    ns = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
    document = (
        f'<OME xmlns="{ns}"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" '
        'Type="uint8" SizeX="30" SizeY="40" SizeZ="1" SizeC="1" SizeT="1"><MetadataOnly/>'
        '</Pixels><AnnotationRef ID="Annotation:0"/></Image><StructuredAnnotations>'
        '<TagAnnotation ID="Annotation:0"><Value>x</Value></TagAnnotation>'
        "</StructuredAnnotations></OME>"
    ).encode()
    row = Roi(id="r1", kind="rectangle", points=[[1, 2], [5, 8]], z=0, t=0, c=None, name="a")
    served = etree.fromstring(rois.with_rois(document, [row]))
    assert [etree.QName(e).localname for e in served] == ["Image", "StructuredAnnotations", "ROI"]
    image = served[0]
    assert [etree.QName(e).localname for e in image] == ["Pixels", "ROIRef", "AnnotationRef"]
    assert all(etree.QName(e).namespace == ns for e in served.iter() if isinstance(e.tag, str))
    rectangle = served.find(f"{{{ns}}}ROI/{{{ns}}}Union/{{{ns}}}Rectangle")
    assert rectangle is not None
    assert [rectangle.get(k) for k in ("X", "Y", "Width", "Height")] == ["1.0", "2.0", "4.0", "6.0"]
    assert rois.with_rois(document, []) == document


def test_an_export_reads_a_bounded_number_of_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rois, "MAX_REGION_PIXELS", 400)
    monkeypatch.setattr(rois, "EXPORT_PIXELS", 500)
    rows = [
        Roi(id=name, kind=kind, points=points, z=0, t=0, c=None, name=name)
        for name, kind, points in (
            ("small", "rectangle", [[0, 0], [10, 10]]),  # 100 pixels
            ("too large alone", "rectangle", [[0, 0], [30, 20]]),  # 600
            ("within", "rectangle", [[0, 0], [20, 15]]),  # 300: 400 read so far
            ("past the budget", "rectangle", [[0, 0], [15, 10]]),  # 150
            ("a line", "line", [[0, 0], [10, 0]]),
        )
    ]
    reads: list[tuple[tuple[int, int], tuple[int, int]]] = []
    found = rois.measured_for_export(rows, FRAME, lambda roi: reader(reads))
    stats = {roi.id: m.statistics for roi, m in found}
    assert stats["small"] is not None and stats["small"].pixels == 100
    assert stats["within"] is not None and stats["within"].pixels == 300
    assert stats["too large alone"] is None and stats["past the budget"] is None
    assert stats["a line"] is None
    assert dict(found)[rows[4]].length == pytest.approx(10 * 2e-9)
    assert sum((ys[1] - ys[0]) * (xs[1] - xs[0]) for ys, xs in reads) == 400
    text = rois.rois_csv(found, FRAME)
    assert text.splitlines()[0].startswith("id,name,kind,z,t,c,points,length_nm")
    assert len(text.splitlines()) == 6


def test_ome_rois_go_into_a_document_without_pixels_too() -> None:
    from lxml import etree

    document = b'<OME><Image ID="Image:0"><AnnotationRef ID="Annotation:0"/></Image></OME>'
    row = Roi(id="r2", kind="point", points=[[3, 4]], z=0, t=0, c=None, name="")
    served = etree.fromstring(rois.with_rois(document, [row]))
    assert [e.tag for e in served] == ["Image", "ROI"]
    assert [e.tag for e in served[0]] == ["ROIRef", "AnnotationRef"]
