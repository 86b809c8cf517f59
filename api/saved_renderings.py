"""Display settings people save: an image's rendering default (set by its project's contributors)
and each user's own choice for an image (anyone who may see it). Both are stored as the tile
query parameters of the viewer (c, window, colors, gamma, cmap, invert, log), checked as tiles
check them, so what is saved always renders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data.access import Caller, Use, get_visible, project_role, require, require_role
from allmicro_data.api.rendering import parse_settings
from allmicro_data.catalogue.models import Dataset, Image, RenderingSetting, Role
from allmicro_data.errors import Invalid


class DisplaySettings(BaseModel):
    """A view's display: the same names and syntax as the IIIF image requests' parameters."""

    model_config = ConfigDict(extra="forbid")

    c: str | None = Field(default=None, max_length=300, description="visible channels, e.g. 0,2")
    window: str | None = Field(
        default=None, max_length=2000, description="per channel lo,hi; separated by ;"
    )
    colors: str | None = Field(default=None, max_length=1000, description="per channel RRGGBB")
    gamma: float | None = Field(default=None, description="display gamma, 0.05..20")
    cmap: str | None = Field(default=None, max_length=20, description="colour map")
    invert: bool = Field(default=False, description="dark for bright")
    log: bool = Field(default=False, description="logarithmic intensities")

    @model_validator(mode="after")
    def renders(self) -> DisplaySettings:
        # The tile parser's checks (lo < hi, colours, gamma range, known maps): one set of rules.
        try:
            parse_settings(
                c=self.c,
                window=self.window,
                colors=self.colors,
                gamma=self.gamma,
                cmap=self.cmap,
                invert=self.invert,
                log=self.log,
            )
        except Invalid as error:
            raise ValueError(str(error)) from None
        return self


class SavedRendering(BaseModel):
    settings: DisplaySettings | None = Field(description="null: nothing saved")
    updated_at: datetime | None
    may_edit: bool = Field(description="whether the caller may save or remove these settings")


def _image(session: Session, caller: Caller, image_id: str) -> tuple[Image, str]:
    image = get_visible(session, caller, Image, image_id)
    dataset = session.get(Dataset, image.dataset_id)
    assert dataset is not None
    return image, dataset.project_id


def _row(session: Session, image_id: str, user_id: str | None) -> RenderingSetting | None:
    stmt = select(RenderingSetting).where(RenderingSetting.image_id == image_id)
    stmt = stmt.where(
        RenderingSetting.user_id.is_(None)
        if user_id is None
        else RenderingSetting.user_id == user_id
    )
    # NULL user ids are distinct to a unique constraint: the oldest default wins, as on write.
    return session.scalars(stmt.order_by(RenderingSetting.updated_at)).first()


def _out(row: RenderingSetting | None, may_edit: bool) -> SavedRendering:
    if row is None:
        return SavedRendering(settings=None, updated_at=None, may_edit=may_edit)
    try:
        settings: DisplaySettings | None = DisplaySettings.model_validate(row.settings)
    except ValueError:
        settings = None  # saved under rules since tightened: as if nothing were saved
    return SavedRendering(settings=settings, updated_at=row.updated_at, may_edit=may_edit)


def _may_set_default(session: Session, caller: Caller, project_id: str) -> bool:
    role = project_role(session, caller, project_id)
    return caller.may(Use.WRITE) and role is not None and role.allows(Role.CONTRIBUTOR)


def image_default(session: Session, caller: Caller, image_id: str) -> SavedRendering:
    image, project_id = _image(session, caller, image_id)
    return _out(_row(session, image.id, None), _may_set_default(session, caller, project_id))


def own(session: Session, caller: Caller, image_id: str) -> SavedRendering:
    image, _ = _image(session, caller, image_id)
    return _out(_row(session, image.id, caller.user_id), caller.may(Use.WRITE))


def _fits(image: Image, settings: DisplaySettings) -> None:
    """Invalid unless the settings name only channels the image has."""
    axes, shape = image.axes or "", image.shape or []
    channels = int(shape[axes.index("c")]) if "c" in axes and len(shape) == len(axes) else 1
    parsed = parse_settings(c=settings.c, window=settings.window, colors=settings.colors)
    if (
        any(c >= channels for c in parsed.channels or ())
        or len(parsed.windows) > channels
        or len(parsed.colours) > channels
    ):
        raise Invalid(f"this image has {channels} channel(s), numbered from 0")


def _save(session: Session, image_id: str, user_id: str | None, settings: dict[str, Any]) -> None:
    # Every key, unset ones as null: saved settings are a whole view, never laid over another.
    row = _row(session, image_id, user_id)
    if row is None:
        session.add(RenderingSetting(image_id=image_id, user_id=user_id, settings=settings))
    else:
        row.settings = settings
    session.flush()


def set_image_default(
    session: Session, caller: Caller, image_id: str, settings: DisplaySettings
) -> SavedRendering:
    """The image's default for everyone (contributors and managers of its project)."""
    require(caller, Use.WRITE)
    image, project_id = _image(session, caller, image_id)
    require_role(session, caller, project_id, Role.CONTRIBUTOR)
    _fits(image, settings)
    _save(session, image.id, None, settings.model_dump())
    return _out(_row(session, image.id, None), True)


def set_own(
    session: Session, caller: Caller, image_id: str, settings: DisplaySettings
) -> SavedRendering:
    """The caller's own display of an image (anyone who may see it, with a full credential)."""
    require(caller, Use.WRITE)
    image, _ = _image(session, caller, image_id)
    _fits(image, settings)
    _save(session, image.id, caller.user_id, settings.model_dump())
    return _out(_row(session, image.id, caller.user_id), True)


def remove_image_default(session: Session, caller: Caller, image_id: str) -> None:
    require(caller, Use.WRITE)
    image, project_id = _image(session, caller, image_id)
    require_role(session, caller, project_id, Role.CONTRIBUTOR)
    while (row := _row(session, image.id, None)) is not None:
        session.delete(row)
        session.flush()


def remove_own(session: Session, caller: Caller, image_id: str) -> None:
    require(caller, Use.WRITE)
    image, _ = _image(session, caller, image_id)
    row = _row(session, image.id, caller.user_id)
    if row is not None:
        session.delete(row)
        session.flush()
