"""Pages for reports: a dataset's images as a table of their metadata (sortable, columns chosen,
rows selected for download or comparison) and 2-4 images side by side with linked pan and zoom."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from allmicro_data.access import Caller, scoped
from allmicro_data.acquisition import ACQUISITION_FIELDS
from allmicro_data.api.deps import OptionalCallerDep, ServicesDep, SessionDep
from allmicro_data.api.routers import catalogue
from allmicro_data.api.schemas import ImageOut
from allmicro_data.api.web import formatting
from allmicro_data.api.web.i18n import translations
from allmicro_data.api.web.pages import (
    OPENSEADRAGON,
    field_labels,
    html_errors,
    render,
    request_language,
    to_login,
)
from allmicro_data.catalogue.models import File, ImageFile
from allmicro_data.errors import Invalid
from allmicro_data.paging import Window

router = APIRouter(include_in_schema=False)

TABLE_PAGE_SIZE = 500
COMPARE_MIN, COMPARE_MAX = 2, 4
# The acquisition fields the table offers, in this order; those marked True are shown until the
# person chooses otherwise (their choice is kept in the browser).
TABLE_FIELDS: tuple[tuple[str, bool], ...] = (
    ("acquired_at", True),
    ("modality", True),
    ("instrument", True),
    ("accelerating_voltage", True),
    ("magnification", True),
    ("detector", True),
    ("vendor", False),
    ("operator", False),
    ("working_distance", False),
    ("horizontal_field_width", False),
    ("beam_current", False),
    ("dwell_time", False),
    ("exposure_time", False),
    ("tilt_angle_deg", False),
)


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    shown: bool  # by default
    numeric: bool


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    sort: str  # what the column sorts by: a number, an ISO date or lower-case text; "" if none


@dataclass(frozen=True, slots=True)
class Row:
    image: ImageOut
    file_ids: list[str]
    cells: list[Cell]


def _columns(gettext: Callable[[str], str]) -> list[Column]:
    labels = field_labels(gettext)
    kinds = {f.name: f.kind for f in ACQUISITION_FIELDS}
    fields = [Column(key, labels[key], shown, kinds[key] is float) for key, shown in TABLE_FIELDS]
    return [
        fields[0],
        Column("pixel_size", gettext("Pixel size"), True, True),
        Column("size", gettext("Size"), True, True),
        *fields[1:],
        Column("format", gettext("Format"), False, False),
        Column("dtype", gettext("Data type"), False, False),
    ]


def _cell(image: ImageOut, column: Column, language: str) -> Cell:
    shape = dict(zip(image.axes or "", image.shape or [], strict=False))
    if column.key == "pixel_size":
        shown = formatting.pixel_size(image.pixel_size, language)
        x = image.pixel_size.x
        return Cell(shown or "—", "" if x is None else repr(x))
    if column.key == "size":
        if "x" not in shape or "y" not in shape:
            return Cell("—", "")
        extra = "".join(
            f" \N{MULTIPLICATION SIGN} {shape[a]} {a}"
            for a in ("z", "c", "t")
            if shape.get(a, 1) > 1
        )
        return Cell(
            f"{shape['x']} \N{MULTIPLICATION SIGN} {shape['y']} px{extra}",
            str(shape["x"] * shape["y"]),
        )
    if column.key in ("format", "dtype"):
        value = getattr(image, column.key)
        return Cell(value or "—", (value or "").lower())
    value = getattr(image.acquisition, column.key)
    if value is None or value == "":
        return Cell("—", "")
    (show,) = [shown for key, shown in formatting.FIELDS if key == column.key]
    if isinstance(value, datetime):
        return Cell(show(value, language), value.isoformat())
    if isinstance(value, float | int):
        return Cell(show(value, language), repr(float(value)))
    return Cell(show(value, language), str(value).lower())


def _file_ids(session: SessionDep, caller: Caller, image_ids: list[str]) -> dict[str, list[str]]:
    """The originals of each image that the caller may download."""
    stmt = (
        select(ImageFile)
        .join(File, File.id == ImageFile.file_id)
        .where(ImageFile.image_id.in_(image_ids))
        .order_by(File.uploaded_at, File.id)
    )
    found: dict[str, list[str]] = {i: [] for i in image_ids}
    for link in session.scalars(scoped(stmt, File, caller)):
        found[link.image_id].append(link.file_id)
    return found


@router.get("/datasets/{dataset_id}/table", response_class=HTMLResponse)
@html_errors
def dataset_table(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """The dataset's images, one row each, with their metadata as columns."""
    if caller is None:
        return to_login(request)
    dataset = catalogue.get_dataset(dataset_id=dataset_id, caller=caller, session=session)
    project = catalogue.get_project(project_id=dataset.project_id, caller=caller, session=session)
    images = catalogue.list_dataset_images(
        dataset_id=dataset.id,
        caller=caller,
        session=session,
        sort="name",
        window=Window(limit=TABLE_PAGE_SIZE, offset=(page - 1) * TABLE_PAGE_SIZE),
    )
    language = request_language(request)
    columns = _columns(translations(language).gettext)
    files = _file_ids(session, caller, [i.id for i in images.items])
    rows = [
        Row(image, files[image.id], [_cell(image, c, language) for c in columns])
        for image in images.items
    ]
    return render(
        request,
        services,
        "dataset_table.html",
        {
            "project": project,
            "dataset": dataset,
            "columns": columns,
            "rows": rows,
            "total": images.total,
            "page": page,
            "pages": max(1, math.ceil(images.total / TABLE_PAGE_SIZE)),
            "compare_min": COMPARE_MIN,
            "compare_max": COMPARE_MAX,
        },
        caller=caller,
    )


@router.get("/compare", response_class=HTMLResponse)
@html_errors
def compare_page(
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    images: str | None = None,
    image: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """2-4 images side by side (`?images=a,b` or, from the table's form, `?image=a&image=b`),
    their viewers linked: in physical units when every image is calibrated, else relatively."""
    if caller is None:
        return to_login(request)
    # Counted here, not by query validation: a person who ticked five rows gets a page saying
    # so, not a JSON error.
    ids = [i.strip() for i in (images or "").split(",") if i.strip()] + list(image or [])
    if not COMPARE_MIN <= len(ids) <= COMPARE_MAX:
        raise Invalid(f"choose {COMPARE_MIN} to {COMPARE_MAX} images to compare")
    shown = [catalogue.get_image(image_id=i, caller=caller, session=session) for i in ids]
    language = request_language(request)
    gettext = translations(language).gettext
    panels: list[dict[str, Any]] = [
        {
            "id": i.id,
            "name": i.name,
            "infoUrl": f"/iiif/3/{i.id}/info.json",
            "pixelSize": formatting.pixel_size(i.pixel_size, language),
            # The catalogue's x pixel size: the viewers link by it even where the IIIF
            # physical dimensions service is left out (pixels not quite square).
            "metresPerPixel": i.pixel_size.x,
        }
        for i in shown
    ]
    config = {
        "images": panels,
        "osdImages": "/static/vendor/openseadragon/images/",
        "language": language,
        "strings": {
            "viewerFailed": gettext("The viewer could not load this image."),
            "physical": gettext("Linked in physical units"),
            "relative": gettext(
                "Linked in relative coordinates (not every image has a pixel size)"
            ),
        },
    }
    return render(
        request,
        services,
        "compare.html",
        {"panels": panels, "viewer_ready": OPENSEADRAGON.is_file(), "compare_config": config},
        caller=caller,
    )
