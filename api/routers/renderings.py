"""Saved display settings of an image: its default for everyone, and each user's own."""

from __future__ import annotations

from fastapi import APIRouter, Response

from allmicro_data.api import saved_renderings
from allmicro_data.api.deps import CallerDep, SessionDep
from allmicro_data.api.saved_renderings import DisplaySettings, SavedRendering

router = APIRouter(prefix="/api", tags=["viewing"])


@router.get("/images/{image_id}/rendering", response_model=SavedRendering)
def get_image_rendering(image_id: str, caller: CallerDep, session: SessionDep) -> SavedRendering:
    """The image's display default, which its viewer opens with (null when none is saved)."""
    return saved_renderings.image_default(session, caller, image_id)


@router.put("/images/{image_id}/rendering", response_model=SavedRendering)
def put_image_rendering(
    image_id: str, body: DisplaySettings, caller: CallerDep, session: SessionDep
) -> SavedRendering:
    """Save the image's display default for everyone who views it (contributors, managers)."""
    saved = saved_renderings.set_image_default(session, caller, image_id, body)
    session.commit()
    return saved


@router.delete("/images/{image_id}/rendering", status_code=204, response_class=Response)
def delete_image_rendering(image_id: str, caller: CallerDep, session: SessionDep) -> Response:
    """Remove the image's display default: it opens with the server's again."""
    saved_renderings.remove_image_default(session, caller, image_id)
    session.commit()
    return Response(status_code=204)


@router.get("/images/{image_id}/rendering/mine", response_model=SavedRendering)
def get_own_rendering(image_id: str, caller: CallerDep, session: SessionDep) -> SavedRendering:
    """The caller's own display of the image (null when none is saved); it wins over the
    image's default."""
    return saved_renderings.own(session, caller, image_id)


@router.put("/images/{image_id}/rendering/mine", response_model=SavedRendering)
def put_own_rendering(
    image_id: str, body: DisplaySettings, caller: CallerDep, session: SessionDep
) -> SavedRendering:
    """Save the caller's own display of the image."""
    saved = saved_renderings.set_own(session, caller, image_id, body)
    session.commit()
    return saved


@router.delete("/images/{image_id}/rendering/mine", status_code=204, response_class=Response)
def delete_own_rendering(image_id: str, caller: CallerDep, session: SessionDep) -> Response:
    """Forget the caller's own display of the image."""
    saved_renderings.remove_own(session, caller, image_id)
    session.commit()
    return Response(status_code=204)
