"""Renaming, moving, the trash and annotations: the routes of allmicro_data.lifecycle and .annotations."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from allmicro_data import lifecycle
from allmicro_data.access import Caller, get_visible, require_role
from allmicro_data.annotations import Annotations, normalised, replace
from allmicro_data.api.deps import CallerDep, ServicesDep, SessionDep, client_address
from allmicro_data.api.schemas import DatasetOut, ImageOut, Name, PairOut
from allmicro_data.audit import record
from allmicro_data.catalogue.models import Dataset, Image, Role
from allmicro_data.delivery import require_not_frozen
from allmicro_data.search import search_text

router = APIRouter(prefix="/api", tags=["lifecycle"])


class ImagePatch(BaseModel):
    name: Name | None = Field(default=None, min_length=1, max_length=1024)
    description: str | None = Field(default=None, max_length=20000)


class MoveImageIn(BaseModel):
    dataset_id: str = Field(description="the dataset the image moves into")


class MovedOut(BaseModel):
    image_ids: list[str] = Field(description="the images moved: the series of the same originals")


class MoveDatasetIn(BaseModel):
    project_id: str = Field(description="the project the dataset moves into")


class AnnotationsIn(BaseModel):
    tags: list[str] = Field(default_factory=list, max_length=200)
    annotations: list[PairOut] = Field(
        default_factory=list, max_length=200, description="key-value pairs"
    )


class AnnotationsOut(BaseModel):
    tags: list[str]
    annotations: list[PairOut]

    @classmethod
    def of(cls, found: Annotations) -> AnnotationsOut:
        return cls(tags=found.tags, annotations=[PairOut(key=k, value=v) for k, v in found.pairs])


class TrashEntryOut(BaseModel):
    kind: lifecycle.Kind
    id: str
    name: str
    project_id: str
    project_name: str
    dataset_id: str | None
    dataset_name: str | None
    deleted_at: datetime
    deleted_by: str | None = Field(description="e-mail of who deleted it")
    purge_at: datetime = Field(description="when the retention period ends and it is purged")
    legal_hold: bool = Field(description="its project is under legal hold: never purged")


class PurgedOut(BaseModel):
    images: int
    files: int
    objects: int = Field(description="pyramid, OME-XML and manifest objects removed")
    originals: int = Field(description="originals removed (no other file named their bytes)")


def _forget_views(request: Request) -> None:
    # Viewing remembers who may see which image for a few seconds; in this process, forget it
    # at once (other processes within viewing.DECISION_SECONDS).
    viewing = getattr(request.app.state, "viewing", None)
    if viewing is not None:
        viewing.images.clear()


# ---------------------------------------------------------------- rename, move


@router.patch("/images/{image_id}", response_model=ImageOut)
def update_image(
    image_id: str, body: ImagePatch, request: Request, caller: CallerDep, session: SessionDep
) -> ImageOut:
    """Rename an image or edit its description (contributors), unless its dataset was delivered."""
    image = lifecycle.edit_image(
        session,
        caller,
        image_id,
        name=body.name,
        description=body.description,
        client_address=client_address(request),
    )
    return ImageOut.of(image)


@router.post("/images/{image_id}/move", response_model=MovedOut)
def move_image(
    image_id: str, body: MoveImageIn, request: Request, caller: CallerDep, session: SessionDep
) -> MovedOut:
    """Move an image into another dataset: contributors within a project, managers of both
    projects between projects (within the target's quota). The series read from the same
    originals move with it; stored objects stay as they are."""
    moved = lifecycle.move_image(
        session, caller, image_id, body.dataset_id, client_address(request)
    )
    _forget_views(request)
    return MovedOut(image_ids=[i.id for i in moved])


@router.post("/datasets/{dataset_id}/move", response_model=DatasetOut)
def move_dataset(
    dataset_id: str, body: MoveDatasetIn, request: Request, caller: CallerDep, session: SessionDep
) -> DatasetOut:
    """Move a dataset into another project (managers of both, within the target's quota);
    share links to it are revoked."""
    dataset = lifecycle.move_dataset(
        session, caller, dataset_id, body.project_id, client_address(request)
    )
    _forget_views(request)
    return DatasetOut.of(dataset)


# ---------------------------------------------------------------- the trash


@router.delete("/images/{image_id}", status_code=204, response_class=Response)
def delete_image(
    image_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Move an image to the trash (managers; a contributor the images of their own uploads)."""
    lifecycle.delete_image(session, caller, image_id, client_address(request))
    session.commit()
    _forget_views(request)
    return Response(status_code=204)


@router.delete("/datasets/{dataset_id}", status_code=204, response_class=Response)
def delete_dataset(
    dataset_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Move a dataset, with everything in it, to the trash (managers)."""
    lifecycle.delete_dataset(session, caller, dataset_id, client_address(request))
    session.commit()
    _forget_views(request)
    return Response(status_code=204)


@router.delete("/projects/{project_id}", status_code=204, response_class=Response)
def delete_project(
    project_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Move a project, with everything in it, to the trash (managers)."""
    lifecycle.delete_project(session, caller, project_id, client_address(request))
    session.commit()
    _forget_views(request)
    return Response(status_code=204)


@router.get("/trash", response_model=list[TrashEntryOut])
def list_trash(
    caller: CallerDep, session: SessionDep, services: ServicesDep, project_id: str | None = None
) -> list[TrashEntryOut]:
    """What is in the trash of the projects the caller manages (all for global admins), newest
    first, with who deleted it and when it will be purged."""
    entries = lifecycle.trash(
        session, caller, services.settings.trash_retention_days, project_id=project_id
    )
    return [TrashEntryOut(**entry.__dict__) for entry in entries]


@router.post("/trash/{kind}/{object_id}/restore", status_code=204, response_class=Response)
def restore_from_trash(
    kind: lifecycle.Kind, object_id: str, request: Request, caller: CallerDep, session: SessionDep
) -> Response:
    """Take an image, dataset or project out of the trash (managers of its project)."""
    lifecycle.restore(session, caller, kind, object_id, client_address(request))
    return Response(status_code=204)


@router.post("/trash/{kind}/{object_id}/purge", response_model=PurgedOut)
def purge_from_trash(
    kind: lifecycle.Kind,
    object_id: str,
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> PurgedOut:
    """Purge something in the trash now (managers of its project; not under legal hold): its
    pyramids on every replica, and originals no other file names."""
    purged = lifecycle.purge_now(
        session, services.store, caller, kind, object_id, client_address(request)
    )
    return PurgedOut(
        images=purged.images, files=purged.files, objects=purged.objects, originals=purged.originals
    )


# ---------------------------------------------------------------- annotations


def _annotations(body: AnnotationsIn) -> Annotations:
    return normalised(body.tags, [(p.key, p.value) for p in body.annotations])


def set_image_annotations(
    session: SessionDep, caller: Caller, image_id: str, wanted: Annotations, address: str | None
) -> Annotations:
    """Replace an image's tags and pairs (contributors), keeping its free-text search in step."""
    image = get_visible(session, caller, Image, image_id)
    dataset = session.get_one(Dataset, image.dataset_id)
    require_role(session, caller, dataset.project_id, Role.CONTRIBUTOR)
    require_not_frozen(dataset)
    replace(session, wanted, image_id=image.id, created_by_id=caller.user_id)
    image.search_text = search_text(image)
    record(
        session,
        "image.annotate",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="image",
        object_id=image.id,
        project_id=dataset.project_id,
        client_address=address,
        detail={"tags": wanted.tags, "pairs": [list(p) for p in wanted.pairs]},
    )
    return wanted


def set_dataset_annotations(
    session: SessionDep, caller: Caller, dataset_id: str, wanted: Annotations, address: str | None
) -> Annotations:
    """Replace a dataset's tags and pairs (contributors); its images are found by them too."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    require_role(session, caller, dataset.project_id, Role.CONTRIBUTOR)
    require_not_frozen(dataset)
    replace(session, wanted, dataset_id=dataset.id, created_by_id=caller.user_id)
    record(
        session,
        "dataset.annotate",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="dataset",
        object_id=dataset.id,
        project_id=dataset.project_id,
        client_address=address,
        detail={"tags": wanted.tags, "pairs": [list(p) for p in wanted.pairs]},
    )
    return wanted


@router.put("/images/{image_id}/annotations", response_model=AnnotationsOut)
def put_image_annotations(
    image_id: str, body: AnnotationsIn, request: Request, caller: CallerDep, session: SessionDep
) -> AnnotationsOut:
    """Set an image's tags and key-value pairs (sample, batch, client reference…): the whole
    list, replacing what it had (contributors)."""
    found = set_image_annotations(
        session, caller, image_id, _annotations(body), client_address(request)
    )
    return AnnotationsOut.of(found)


@router.put("/datasets/{dataset_id}/annotations", response_model=AnnotationsOut)
def put_dataset_annotations(
    dataset_id: str, body: AnnotationsIn, request: Request, caller: CallerDep, session: SessionDep
) -> AnnotationsOut:
    """Set a dataset's tags and key-value pairs, replacing what it had (contributors)."""
    found = set_dataset_annotations(
        session, caller, dataset_id, _annotations(body), client_address(request)
    )
    return AnnotationsOut.of(found)
