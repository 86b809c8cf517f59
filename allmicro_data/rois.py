"""Measurements and regions drawn on an image: shapes checked, saved, measured on full-resolution
pixels (the burnt-in data bar left out), and exported as CSV and as OME ROIs.

Coordinates are full-resolution pixels with the frame's top-left corner at (0, 0): pixel (i, j)
covers x in [i, i + 1) and y in [j, j + 1), so its centre is (i + 0.5, j + 0.5). A region holds
the pixels whose centres lie inside it. Pixels are read through a callable, so this module
needs no storage: the API hands it the pyramid's level-0 reader.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allmicro_data.access import Caller, get_visible, require_role, scoped
from allmicro_data.audit import record
from allmicro_data.catalogue.models import Dataset, Image, Roi, Role
from allmicro_data.delivery import require_not_frozen
from allmicro_data.errors import Invalid, NotFound
from allmicro_data.names import unfit_character

# How many points each kind takes (at least, at most).
MAX_POINTS = 1000
KIND_POINTS: dict[str, tuple[int, int]] = {
    "point": (1, 1),
    "line": (2, 2),
    "polyline": (2, MAX_POINTS),
    "angle": (3, 3),
    "rectangle": (2, 2),
    "ellipse": (2, 2),
    "polygon": (3, MAX_POINTS),
}
REGION_KINDS = frozenset({"rectangle", "ellipse", "polygon"})
MAX_ROIS_PER_IMAGE = 1000
MAX_NAME_CHARS = 200
# A region is measured over at most this many pixels of its bounding box, read in bands of
# chunk rows: memory stays bounded by a band whatever the region.
MAX_REGION_PIXELS = 64 * 1024 * 1024
BAND_PIXELS = 4 * 1024 * 1024
# A CSV export reads at most this many pixels for all its regions; the rest go without statistics.
EXPORT_PIXELS = 4 * MAX_REGION_PIXELS
MAX_PROFILE_SAMPLES = 20_000
POLYGON_ROWS = 256  # rows whose edge crossings are computed at once
PROFILE_SEGMENT = 512  # samples read per box: a long diagonal never reads its whole bounding box

# Rows y0..y1 and columns x0..x1 (half-open) of the current plane and channel, as a 2-D array.
PixelReader = Callable[[tuple[int, int], tuple[int, int]], np.ndarray[Any, Any]]
Point = tuple[float, float]


@dataclass(frozen=True)
class Frame:
    """The image a shape is drawn on: its size, pixel size (metres, None when uncalibrated) and
    the part of it that is the sample ([y0, y1, x0, x1]), which measurements keep to."""

    width: int
    height: int
    pixel_size_x: float | None
    pixel_size_y: float | None
    region: tuple[int, int, int, int]

    @classmethod
    def of(cls, image: Image) -> Frame:
        axes, shape = image.axes or "", image.shape or []
        if "x" not in axes or "y" not in axes:
            raise NotFound(f"image {image.id} has no pixels to measure")
        width, height = int(shape[axes.index("x")]), int(shape[axes.index("y")])
        region = (0, height, 0, width)
        if image.image_region and len(image.image_region) == 4:
            y0, y1, x0, x1 = (int(v) for v in image.image_region)
            clipped = (max(0, y0), min(height, y1), max(0, x0), min(width, x1))
            if clipped[0] < clipped[1] and clipped[2] < clipped[3]:
                region = clipped
        sx, sy = image.pixel_size_x, image.pixel_size_y
        return cls(width, height, sx, sy or sx, region)

    @property
    def calibrated(self) -> bool:
        return bool(self.pixel_size_x and self.pixel_size_y)

    def metres(self, dx: float, dy: float) -> float:
        """The length of a step of (dx, dy) pixels, in metres (in pixels when uncalibrated)."""
        if not self.calibrated:
            return math.hypot(dx, dy)
        assert self.pixel_size_x is not None and self.pixel_size_y is not None
        return math.hypot(dx * self.pixel_size_x, dy * self.pixel_size_y)


@dataclass(frozen=True)
class Shape:
    kind: str
    points: tuple[Point, ...]


def checked_shape(kind: str, points: Sequence[Sequence[float]], frame: Frame) -> Shape:
    """The shape if its kind is known and its points are enough and inside the frame."""
    if kind not in KIND_POINTS:
        raise Invalid(f"unknown kind {kind!r}; one of {', '.join(KIND_POINTS)}")
    least, most = KIND_POINTS[kind]
    if not least <= len(points) <= most:
        wanted = str(least) if least == most else f"{least} to {most}"
        raise Invalid(f"a {kind} takes {wanted} points, not {len(points)}")
    clean: list[Point] = []
    for point in points:
        if len(point) != 2 or not all(math.isfinite(v) for v in point):
            raise Invalid("each point is [x, y] in full-resolution pixels")
        x, y = float(point[0]), float(point[1])
        if not (0 <= x <= frame.width and 0 <= y <= frame.height):
            raise Invalid(
                f"the point [{x:g}, {y:g}] is outside the image ({frame.width} by {frame.height} pixels)"
            )
        clean.append((x, y))
    if kind in ("rectangle", "ellipse"):
        (x0, y0), (x1, y1) = clean
        if x0 == x1 or y0 == y1:
            raise Invalid(f"a {kind} needs a width and a height")
    return Shape(kind, tuple(clean))


# ---------------------------------------------------------------- geometry


def length(shape: Shape, frame: Frame) -> float | None:
    """A line's or polyline's length (an angle's two arms), metres (pixels when uncalibrated)."""
    if shape.kind not in ("line", "polyline", "angle"):
        return None
    p = shape.points
    return sum(frame.metres(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(p))


def angle_deg(shape: Shape, frame: Frame) -> float | None:
    """An angle's opening at its middle point, in degrees, with the pixels' real aspect."""
    if shape.kind != "angle":
        return None
    sx = frame.pixel_size_x if frame.calibrated else 1.0
    sy = frame.pixel_size_y if frame.calibrated else 1.0
    assert sx is not None and sy is not None
    (ax, ay), (vx, vy), (bx, by) = shape.points
    u = ((ax - vx) * sx, (ay - vy) * sy)
    w = ((bx - vx) * sx, (by - vy) * sy)
    if u == (0, 0) or w == (0, 0):
        return None
    return abs(math.degrees(math.atan2(u[0] * w[1] - u[1] * w[0], u[0] * w[0] + u[1] * w[1])))


def area_pixels(shape: Shape) -> float | None:
    """A region's geometric area in pixels²."""
    p = shape.points
    if shape.kind == "rectangle":
        return abs(p[1][0] - p[0][0]) * abs(p[1][1] - p[0][1])
    if shape.kind == "ellipse":
        return math.pi * abs(p[1][0] - p[0][0]) / 2 * abs(p[1][1] - p[0][1]) / 2
    if shape.kind == "polygon":
        twice = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(p, p[1:] + p[:1], strict=True))
        return abs(twice) / 2
    return None


def area(shape: Shape, frame: Frame) -> float | None:
    """A region's area in m² (pixels² when uncalibrated)."""
    pixels = area_pixels(shape)
    if pixels is None or not frame.calibrated:
        return pixels
    assert frame.pixel_size_x is not None and frame.pixel_size_y is not None
    return pixels * frame.pixel_size_x * frame.pixel_size_y


# ---------------------------------------------------------------- pixels


@dataclass(frozen=True)
class Statistics:
    """Of the raw pixel values inside a region (data bar excluded); None without any pixel."""

    pixels: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


def _bounds(shape: Shape, frame: Frame) -> tuple[int, int, int, int] | None:
    """The rows and columns [y0, y1) by [x0, x1) whose centres may be inside, within the sample."""
    xs = [p[0] for p in shape.points]
    ys = [p[1] for p in shape.points]
    ry0, ry1, rx0, rx1 = frame.region
    # Column i is in when its centre i + 0.5 lies within [min x, max x]; rows alike.
    x0, x1 = max(rx0, math.ceil(min(xs) - 0.5)), min(rx1, math.floor(max(xs) - 0.5) + 1)
    y0, y1 = max(ry0, math.ceil(min(ys) - 0.5)), min(ry1, math.floor(max(ys) - 0.5) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


def region_mask(shape: Shape, ys: tuple[int, int], xs: tuple[int, int]) -> np.ndarray[Any, Any]:
    """Which pixels of rows ys and columns xs have their centres inside the region."""
    cy = np.arange(ys[0], ys[1], dtype=np.float64)[:, None] + 0.5
    cx = np.arange(xs[0], xs[1], dtype=np.float64)[None, :] + 0.5
    (ax, ay), (bx, by) = shape.points[0], shape.points[1]
    if shape.kind == "rectangle":
        inside_x = (cx >= min(ax, bx)) & (cx <= max(ax, bx))
        inside_y = (cy >= min(ay, by)) & (cy <= max(ay, by))
        return np.asarray(inside_y & inside_x)
    if shape.kind == "ellipse":
        rx, ry = abs(bx - ax) / 2, abs(by - ay) / 2
        ex, ey = (ax + bx) / 2, (ay + by) / 2
        return np.asarray(((cx - ex) / rx) ** 2 + ((cy - ey) / ry) ** 2 <= 1.0)
    return _polygon_mask(shape.points, ys, xs)


def _polygon_mask(
    vertices: Sequence[Point], ys: tuple[int, int], xs: tuple[int, int]
) -> np.ndarray[Any, Any]:
    """Scanline even-odd fill: a pixel is in when an odd number of the polygon's edges cross its
    row's centre line to the right of its centre. Work per row is its crossings, not the polygon's
    whole bounding box, so a band of a huge polygon costs only that band."""
    px = np.array([p[0] for p in vertices], dtype=np.float64)
    py = np.array([p[1] for p in vertices], dtype=np.float64)
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    cx = np.arange(xs[0], xs[1], dtype=np.float64) + 0.5
    mask = np.zeros((ys[1] - ys[0], xs[1] - xs[0]), dtype=bool)
    for top in range(ys[0], ys[1], POLYGON_ROWS):
        cy = np.arange(top, min(ys[1], top + POLYGON_ROWS), dtype=np.float64)[:, None] + 0.5
        crosses = (py > cy) != (qy > cy)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = px + (cy - py) * (qx - px) / (qy - py)
        for i in range(cy.shape[0]):
            hits = np.sort(at[i, crosses[i]])
            if hits.size:
                right = hits.size - np.searchsorted(hits, cx, side="right")
                mask[top - ys[0] + i] = right % 2 == 1
    return mask


def region_pixels(shape: Shape, frame: Frame) -> int:
    """How many pixels measuring a region reads: its bounding box within the sample."""
    bounds = _bounds(shape, frame)
    return 0 if bounds is None else (bounds[1] - bounds[0]) * (bounds[3] - bounds[2])


def statistics(shape: Shape, frame: Frame, read: PixelReader) -> Statistics:
    """Area statistics of a region over the raw pixels of the sample, read band by band."""
    bounds = _bounds(shape, frame)
    if bounds is None:
        return Statistics(0, None, None, None, None)
    y0, y1, x0, x1 = bounds
    width = x1 - x0
    if (y1 - y0) * width > MAX_REGION_PIXELS:
        raise Invalid(
            f"the region spans {(y1 - y0) * width} pixels; at most {MAX_REGION_PIXELS} are measured"
        )
    count, mean, m2 = 0, 0.0, 0.0
    low, high = math.inf, -math.inf
    rows = max(1, BAND_PIXELS // width)
    for top in range(y0, y1, rows):
        ys = (top, min(y1, top + rows))
        values = read(ys, (x0, x1))[region_mask(shape, ys, (x0, x1))].astype(np.float64)
        if values.size == 0:
            continue
        # Chan et al.'s pairwise update: exact, and no sum of squares to overflow or cancel.
        n, band_mean = values.size, float(values.mean())
        band_m2 = float(((values - band_mean) ** 2).sum())
        delta = band_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += band_m2 + delta * delta * count * n / total
        count = total
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    if count == 0:
        return Statistics(0, None, None, None, None)
    return Statistics(count, mean, math.sqrt(m2 / count), low, high)


@dataclass(frozen=True)
class ProfileSample:
    x: int  # the pixel's column
    y: int  # the pixel's row
    distance: float  # from the line's start, metres (pixels when uncalibrated)
    value: float | None  # None in the data bar


def profile_points(shape: Shape, frame: Frame) -> list[tuple[int, int, float]]:
    """The pixels a line passes, one sample per pixel of length: (column, row, distance)."""
    if shape.kind != "line":
        raise Invalid("a profile is taken along a line")
    (ax, ay), (bx, by) = shape.points
    n = min(MAX_PROFILE_SAMPLES, max(2, math.floor(math.hypot(bx - ax, by - ay)) + 1))
    samples = []
    for i in range(n):
        f = i / (n - 1)
        x, y = ax + (bx - ax) * f, ay + (by - ay) * f
        column = min(frame.width - 1, max(0, math.floor(x)))
        row = min(frame.height - 1, max(0, math.floor(y)))
        samples.append((column, row, frame.metres(x - ax, y - ay)))
    return samples


def profile(shape: Shape, frame: Frame, read: PixelReader) -> list[ProfileSample]:
    """The raw values along a line, read in short segments so a long diagonal stays cheap."""
    points = profile_points(shape, frame)
    ry0, ry1, rx0, rx1 = frame.region
    out: list[ProfileSample] = []
    for start in range(0, len(points), PROFILE_SEGMENT):
        segment = points[start : start + PROFILE_SEGMENT]
        xs = (min(p[0] for p in segment), max(p[0] for p in segment) + 1)
        ys = (min(p[1] for p in segment), max(p[1] for p in segment) + 1)
        box = read(ys, xs)
        for x, y, distance in segment:
            inside = ry0 <= y < ry1 and rx0 <= x < rx1
            value = float(box[y - ys[0], x - xs[0]]) if inside else None
            out.append(ProfileSample(x, y, distance, value))
    return out


# ---------------------------------------------------------------- units


# Lengths in the unit that gives a number of at least 1 (Å for TEM pixel sizes).
LENGTH_UNITS = (("m", 1.0), ("mm", 1e-3), ("µm", 1e-6), ("nm", 1e-9), ("Å", 1e-10))


def length_unit(metres: float) -> tuple[str, float]:
    """The unit, and its size in metres, that shows `metres` as a number of at least 1."""
    for unit, size in LENGTH_UNITS:
        if abs(metres) >= size * 0.9999:
            return unit, size
    return LENGTH_UNITS[-1]


def ascii_unit(unit: str) -> str:
    return {"µm": "um", "Å": "angstrom"}.get(unit, unit)


def profile_csv(samples: Sequence[ProfileSample], frame: Frame) -> str:
    """The profile as CSV: sample index, pixel column and row, distance, raw value."""
    total = samples[-1].distance if samples else 0.0
    if frame.calibrated:
        unit, size = length_unit(total)
        head = f"distance_{ascii_unit(unit)}"
    else:
        size, head = 1.0, "distance_px"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "x", "y", head, "value"])
    for i, s in enumerate(samples):
        value = "" if s.value is None else _number(s.value)
        writer.writerow([i, s.x, s.y, f"{s.distance / size:.6g}", value])
    return out.getvalue()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.9g}"


# ---------------------------------------------------------------- saved ROIs


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if (ch := unfit_character(cleaned)) is not None:
        raise Invalid(f"a name must be one line of text; it holds U+{ord(ch):04X}")
    if len(cleaned) > MAX_NAME_CHARS:
        raise Invalid(f"a name is at most {MAX_NAME_CHARS} characters")
    return cleaned


def of_image(session: Session, caller: Caller, image_id: str) -> list[Roi]:
    """The ROIs on an image the caller may see (NotFound otherwise), oldest first."""
    get_visible(session, caller, Image, image_id)
    stmt = select(Roi).where(Roi.image_id == image_id).order_by(Roi.created_at, Roi.id)
    return list(session.scalars(scoped(stmt, Roi, caller)))


def rows_of(session: Session, image_id: str) -> list[Roi]:
    """The ROIs of an image already found visible (the served OME-XML)."""
    stmt = select(Roi).where(Roi.image_id == image_id).order_by(Roi.created_at, Roi.id)
    return list(session.scalars(stmt))


def _editable(session: Session, caller: Caller, image_id: str) -> tuple[Image, Dataset]:
    image = get_visible(session, caller, Image, image_id)
    dataset = session.get_one(Dataset, image.dataset_id)
    require_role(session, caller, dataset.project_id, Role.CONTRIBUTOR)
    require_not_frozen(dataset)
    return image, dataset


def _plane_checked(image: Image, z: int, t: int, c: int | None) -> None:
    axes, shape = image.axes or "", image.shape or []
    for axis, value in (("z", z), ("t", t), ("c", c)):
        size = int(shape[axes.index(axis)]) if axis in axes else 1
        if value is not None and not 0 <= value < size:
            raise Invalid(f"{axis}={value} is outside 0..{size - 1}")


def create(
    session: Session,
    caller: Caller,
    image_id: str,
    *,
    kind: str,
    points: Sequence[Sequence[float]],
    name: str = "",
    z: int = 0,
    t: int = 0,
    c: int | None = None,
    client_address: str | None = None,
) -> Roi:
    """Save a shape on an image (contributors; not on a delivered dataset)."""
    image, dataset = _editable(session, caller, image_id)
    shape = checked_shape(kind, points, Frame.of(image))
    _plane_checked(image, z, t, c)
    held = session.scalar(select(func.count()).select_from(Roi).where(Roi.image_id == image.id))
    if (held or 0) >= MAX_ROIS_PER_IMAGE:
        raise Invalid(f"an image holds at most {MAX_ROIS_PER_IMAGE} ROIs")
    roi = Roi(
        image_id=image.id,
        kind=shape.kind,
        points=[list(p) for p in shape.points],
        z=z,
        t=t,
        c=c,
        name=_clean_name(name),
        created_by_id=caller.user_id,
    )
    session.add(roi)
    session.flush()
    _audit(session, caller, "image.roi.create", image, dataset, roi, client_address)
    return roi


def delete(
    session: Session, caller: Caller, image_id: str, roi_id: str, client_address: str | None
) -> None:
    """Remove an ROI from an image (contributors); NotFound for an ROI not on it."""
    image, dataset = _editable(session, caller, image_id)
    roi = session.get(Roi, roi_id)
    if roi is None or roi.image_id != image.id:
        raise NotFound(f"roi {roi_id} not found")
    _audit(session, caller, "image.roi.delete", image, dataset, roi, client_address)
    session.delete(roi)


def _audit(
    session: Session,
    caller: Caller,
    action: str,
    image: Image,
    dataset: Dataset,
    roi: Roi,
    client_address: str | None,
) -> None:
    record(
        session,
        action,
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="image",
        object_id=image.id,
        project_id=dataset.project_id,
        client_address=client_address,
        detail={"roi": roi.id, "kind": roi.kind, "name": roi.name},
    )


def shape_of(roi: Roi) -> Shape:
    return Shape(roi.kind, tuple((float(x), float(y)) for x, y in roi.points))


# ---------------------------------------------------------------- exports


@dataclass(frozen=True)
class Measurement:
    """What a shape measures: lengths in metres, areas in m² (pixels when uncalibrated)."""

    length: float | None
    angle_deg: float | None
    area: float | None
    statistics: Statistics | None


def measure(shape: Shape, frame: Frame, read: PixelReader | None) -> Measurement:
    stats = statistics(shape, frame, read) if read and shape.kind in REGION_KINDS else None
    return Measurement(length(shape, frame), angle_deg(shape, frame), area(shape, frame), stats)


def measured_for_export(
    rows: Sequence[Roi], frame: Frame, reader_for: Callable[[Roi], PixelReader]
) -> list[tuple[Roi, Measurement]]:
    """Each ROI with its measurement; a region too large for one measurement, or past the
    export's pixel budget, goes without statistics so that an export stays bounded."""
    budget = EXPORT_PIXELS
    out = []
    for roi in rows:
        shape = shape_of(roi)
        read = None
        if roi.kind in REGION_KINDS:
            cost = region_pixels(shape, frame)
            if cost <= min(budget, MAX_REGION_PIXELS):
                budget -= cost
                read = reader_for(roi)
        out.append((roi, measure(shape, frame, read)))
    return out


def rois_csv(rows: Iterable[tuple[Roi, Measurement]], frame: Frame) -> str:
    """The saved ROIs with their measurements, lengths in µm, nm or Å by the image's scale."""
    found = list(rows)
    if frame.calibrated:
        assert frame.pixel_size_x is not None
        unit, size = length_unit(frame.pixel_size_x * 100)
        name = ascii_unit(unit)
        length_head, area_head = f"length_{name}", f"area_{name}2"
    else:
        size, length_head, area_head = 1.0, "length_px", "area_px2"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            *("id", "name", "kind", "z", "t", "c", "points", length_head, "angle_deg", area_head),
            *("pixels", "mean", "std", "min", "max"),
        ]
    )
    for roi, m in found:
        s = m.statistics
        points = " ".join(f"{x:g},{y:g}" for x, y in roi.points)
        writer.writerow(
            [roi.id, roi.name, roi.kind, roi.z, roi.t, "" if roi.c is None else roi.c, points]
            + [_fmt(m.length, size), _fmt(m.angle_deg, 1.0), _fmt(m.area, size * size)]
            + ["" if s is None else s.pixels]
            + [_fmt(None if s is None else v, 1.0) for v in _values(s)]
        )
    return out.getvalue()


def _values(s: Statistics | None) -> list[float | None]:
    return [None] * 4 if s is None else [s.mean, s.std, s.min, s.max]


def _fmt(value: float | None, size: float) -> str:
    return "" if value is None else f"{value / size:.9g}"


def with_rois(document: bytes, rows: Sequence[Roi], series_index: int = 0) -> bytes:
    """The OME-XML with the image's ROIs as OME ROIs (built with ome-types' models), referenced
    from its Image; the stored document is left as ingest wrote it."""
    if not rows:
        return document
    # ome-types costs a second of CPU to import: only when a document carries ROIs.
    from lxml import etree
    from ome_types import model, to_xml

    built = model.OME(rois=[_ome_roi(roi) for roi in rows])
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    root = etree.fromstring(document, parser)
    images = root.findall("{*}Image")
    if not images:
        return document
    ns = etree.QName(root).namespace
    made = etree.fromstring(to_xml(built).encode(), parser)
    new_rois = made.findall("{*}ROI")
    for element in (e for roi in new_rois for e in roi.iter()):
        if isinstance(element.tag, str):
            local = etree.QName(element).localname
            element.tag = f"{{{ns}}}{local}" if ns else local
    # Schema order: … Image*, StructuredAnnotations?, ROI*, BinaryOnly?
    anchor = root.findall("{*}ROI") or root.findall("{*}StructuredAnnotations") or images
    after = anchor[-1]
    for roi in new_rois:
        after.addnext(roi)
        after = roi
    image = images[series_index] if series_index < len(images) else images[0]
    # Schema order within an Image: … Pixels, ROIRef*, MicrobeamManipulationRef*, AnnotationRef*
    refs = [
        etree.Element(f"{{{ns}}}ROIRef" if ns else "ROIRef", {"ID": roi.get("ID")})
        for roi in new_rois
    ]
    anchors = image.findall("{*}ROIRef") or image.findall("{*}Pixels")
    if anchors:
        after = anchors[-1]
        for ref in refs:
            after.addnext(ref)
            after = ref
    else:  # no Pixels (not schema-valid to begin with): before any later reference
        later = image.findall("{*}MicrobeamManipulationRef") + image.findall("{*}AnnotationRef")
        for ref in refs:
            if later:
                later[0].addprevious(ref)
            else:
                image.append(ref)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _ome_roi(roi: Roi) -> Any:
    from ome_types import model

    p = [(float(x), float(y)) for x, y in roi.points]
    common: dict[str, Any] = {"id": f"Shape:allmicro-{roi.id}", "the_z": roi.z, "the_t": roi.t}
    if roi.c is not None:
        common["the_c"] = roi.c
    if roi.name:
        common["text"] = roi.name
    joined = " ".join(f"{x:g},{y:g}" for x, y in p)
    shape: Any
    if roi.kind == "point":
        shape = model.Point(x=p[0][0], y=p[0][1], **common)
    elif roi.kind == "line":
        shape = model.Line(x1=p[0][0], y1=p[0][1], x2=p[1][0], y2=p[1][1], **common)
    elif roi.kind in ("polyline", "angle"):
        shape = model.Polyline(points=joined, **common)
    elif roi.kind == "rectangle":
        x, y = min(p[0][0], p[1][0]), min(p[0][1], p[1][1])
        w, h = abs(p[1][0] - p[0][0]), abs(p[1][1] - p[0][1])
        shape = model.Rectangle(x=x, y=y, width=w, height=h, **common)
    elif roi.kind == "ellipse":
        cx, cy = (p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2
        rx, ry = abs(p[1][0] - p[0][0]) / 2, abs(p[1][1] - p[0][1]) / 2
        shape = model.Ellipse(x=cx, y=cy, radius_x=rx, radius_y=ry, **common)
    else:
        shape = model.Polygon(points=joined, **common)
    return model.ROI(
        id=f"ROI:allmicro-{roi.id}",
        name=roi.name or None,
        description=roi.kind,
        union=[shape],
    )
