"""Measurements on an image: ROIs saved on it (listed, exported as CSV), region statistics and
line profiles computed on the pyramid's full-resolution pixels: the routes of allmicro_data.rois."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from allmicro_data import rois
from allmicro_data.access import Caller, get_visible
from allmicro_data.api.deps import CallerDep, SessionDep, client_address
from allmicro_data.api.openapi_media import binary
from allmicro_data.api.streaming import content_disposition
from allmicro_data.api.viewing import ImageView, viewing
from allmicro_data.catalogue.models import Image, Roi
from allmicro_data.errors import Invalid

router = APIRouter(prefix="/api", tags=["measurements"])

# Bounded here so that an absurd body is refused before any work; the domain says the real limit.
PointIn = Annotated[list[float], Field(min_length=2, max_length=2, description="[x, y] pixels")]
Plane = Annotated[int, Field(ge=0, le=1_000_000)]


Kind = Literal["point", "line", "polyline", "angle", "rectangle", "ellipse", "polygon"]


class ShapeIn(BaseModel):
    kind: Kind = Field(
        description="how many points: point 1, line 2, angle 3, rectangle and "
        "ellipse 2 (opposite corners of the box), polyline 2 and polygon 3 up to 1000"
    )
    points: list[PointIn] = Field(
        min_length=1,
        max_length=rois.MAX_POINTS * 2,
        description="full-resolution pixels from the top-left corner; a rectangle or an "
        "ellipse by two opposite corners of its box",
    )
    z: Plane = 0
    t: Plane = 0
    c: Plane | None = Field(default=None, description="the channel measured (the first if none)")


class RoiIn(ShapeIn):
    name: str = Field(default="", max_length=rois.MAX_NAME_CHARS)


class MeasurementOut(BaseModel):
    calibrated: bool = Field(description="lengths in metres; false: in pixels (no pixel size)")
    length: float | None = Field(description="a line's, polyline's or angle's arms' length")
    angle_deg: float | None
    area: float | None = Field(description="a region's area: m², or pixels² uncalibrated")
    pixels: int | None = Field(description="the pixels inside the region, data bar excluded")
    mean: float | None
    std: float | None = Field(description="population standard deviation of the raw values")
    min: float | None
    max: float | None

    @classmethod
    def of(cls, found: rois.Measurement, frame: rois.Frame) -> MeasurementOut:
        s = found.statistics
        return cls(
            calibrated=frame.calibrated,
            length=found.length,
            angle_deg=found.angle_deg,
            area=found.area,
            pixels=None if s is None else s.pixels,
            mean=None if s is None else s.mean,
            std=None if s is None else s.std,
            min=None if s is None else s.min,
            max=None if s is None else s.max,
        )


class RoiOut(BaseModel):
    id: str
    image_id: str
    kind: str
    name: str
    points: list[list[float]]
    z: int
    t: int
    c: int | None
    created_by_id: str | None
    created_at: datetime
    measurement: MeasurementOut

    @classmethod
    def of(cls, roi: Roi, measurement: MeasurementOut) -> RoiOut:
        return cls(
            id=roi.id,
            image_id=roi.image_id,
            kind=roi.kind,
            name=roi.name,
            points=[[float(x), float(y)] for x, y in roi.points],
            z=roi.z,
            t=roi.t,
            c=roi.c,
            created_by_id=roi.created_by_id,
            created_at=roi.created_at,
            measurement=measurement,
        )


class ProfileSampleOut(BaseModel):
    x: int
    y: int
    distance: float = Field(description="from the line's start: metres, or pixels uncalibrated")
    value: float | None = Field(description="the raw value; null in the instrument's data bar")


class ProfileOut(BaseModel):
    calibrated: bool
    samples: list[ProfileSampleOut]


def _reader(request: Request, image: Image, z: int, t: int, c: int | None) -> rois.PixelReader:
    """Level-0 pixels of one plane and channel, through the viewers' pyramid and chunk caches."""
    state = viewing(request)
    pyramid = state.pyramid(ImageView.of(image))
    for axis, value in (("z", z), ("t", t), ("c", c or 0)):
        if value >= pyramid.size(axis):
            raise Invalid(f"{axis}={value} is outside 0..{pyramid.size(axis) - 1}")
    channelled = "c" in pyramid.axes

    def read(ys: tuple[int, int], xs: tuple[int, int]) -> np.ndarray[Any, Any]:
        data = pyramid.read(state.services.store, state.chunks, 0, {"z": z, "t": t}, ys, xs)
        return np.asarray(data[c or 0] if channelled else data)

    return read


def _measured(
    request: Request, image: Image, roi: Roi | ShapeIn, frame: rois.Frame, stats: bool
) -> MeasurementOut:
    shape = (
        rois.shape_of(roi)
        if isinstance(roi, Roi)
        else rois.checked_shape(roi.kind, roi.points, frame)
    )
    read = _reader(request, image, roi.z, roi.t, roi.c) if stats else None
    return MeasurementOut.of(rois.measure(shape, frame, read), frame)


def _visible(session: SessionDep, caller: Caller, image_id: str) -> Image:
    return get_visible(session, caller, Image, image_id)


@router.get("/images/{image_id}/rois", response_model=list[RoiOut])
def list_rois(
    image_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> list[RoiOut]:
    """The ROIs saved on an image (at most 1000), oldest first, with their lengths, angles and
    areas; region statistics are in the CSV export and from POST …/measure."""
    found = rois.of_image(session, caller, image_id)
    image = _visible(session, caller, image_id)
    frame = rois.Frame.of(image)
    return [RoiOut.of(r, _measured(request, image, r, frame, stats=False)) for r in found]


@router.post("/images/{image_id}/rois", response_model=RoiOut, status_code=201)
def create_roi(
    image_id: str, body: RoiIn, request: Request, caller: CallerDep, session: SessionDep
) -> RoiOut:
    """Save a measurement or region on an image (contributors), with its measurement."""
    roi = rois.create(
        session,
        caller,
        image_id,
        kind=body.kind,
        points=body.points,
        name=body.name,
        z=body.z,
        t=body.t,
        c=body.c,
        client_address=client_address(request),
    )
    image = session.get_one(Image, roi.image_id)
    frame = rois.Frame.of(image)
    # A region too large to measure at once is still saved, without its statistics.
    stats = (
        roi.kind in rois.REGION_KINDS
        and rois.region_pixels(rois.shape_of(roi), frame) <= rois.MAX_REGION_PIXELS
    )
    measured = _measured(request, image, roi, frame, stats=stats)
    session.commit()
    return RoiOut.of(roi, measured)


@router.delete("/images/{image_id}/rois/{roi_id}", status_code=204, response_class=Response)
def delete_roi(
    image_id: str, roi_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Remove an ROI from an image (contributors)."""
    rois.delete(session, caller, image_id, roi_id, client_address(request))
    session.commit()
    return Response(status_code=204)


@router.get(
    "/images/{image_id}/rois.csv", response_class=Response, responses={200: binary("text/csv")}
)
def export_rois(
    image_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """The image's ROIs as CSV with their measurements: lengths and areas in the unit that suits
    the image's pixel size (named in the header), region statistics of the raw pixel values
    (left empty for regions over 64 Mpixel, and once the export has read 256 Mpixel)."""
    found = rois.of_image(session, caller, image_id)
    image = _visible(session, caller, image_id)
    frame = rois.Frame.of(image)
    rows = rois.measured_for_export(
        found, frame, lambda roi: _reader(request, image, roi.z, roi.t, roi.c)
    )
    return Response(
        rois.rois_csv(rows, frame),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition(f"{image.name}.rois.csv")},
    )


@router.post("/images/{image_id}/measure", response_model=MeasurementOut)
def measure_shape(
    image_id: str, body: ShapeIn, request: Request, caller: CallerDep, session: SessionDep
) -> MeasurementOut:
    """Measure a shape without saving it (anyone who sees the image): length, angle, area, and
    for a region the area, mean, std, min and max of the raw values of one plane and channel,
    from full-resolution pixels, the data bar excluded."""
    image = _visible(session, caller, image_id)
    frame = rois.Frame.of(image)
    return _measured(request, image, body, frame, stats=True)


@router.get(
    "/images/{image_id}/profile",
    response_model=ProfileOut,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def line_profile(
    image_id: str,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    x0: Annotated[float, Query(description="start, full-resolution pixels")],
    y0: Annotated[float, Query()],
    x1: Annotated[float, Query(description="end, full-resolution pixels")],
    y1: Annotated[float, Query()],
    z: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    t: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    c: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """The raw values along a line, one sample per pixel of length (the pixel each sample falls
    in, nearest neighbour, full resolution), as JSON or as CSV."""
    image = _visible(session, caller, image_id)
    frame = rois.Frame.of(image)
    shape = rois.checked_shape("line", [[x0, y0], [x1, y1]], frame)
    samples = rois.profile(shape, frame, _reader(request, image, z, t, c))
    if format == "csv":
        return Response(
            rois.profile_csv(samples, frame),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": content_disposition(f"{image.name}.profile.csv")},
        )
    return ProfileOut(
        calibrated=frame.calibrated,
        samples=[
            ProfileSampleOut(x=s.x, y=s.y, distance=s.distance, value=s.value) for s in samples
        ],
    )
