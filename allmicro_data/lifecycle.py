"""The data lifecycle: rename, move, delete into the trash, restore, and purge after the retention period.

A deleted image, dataset or project is only marked (`deleted_at`): access.scoped hides it, and
everything it holds, from every listing, search, viewer, download and share link. Managers see
it in the trash and may restore it until it is purged, `trash_retention_days` after deletion
(or at once, by a manager's "purge now"). Purging removes the rows and the stored objects: an
image's pyramid, OME-XML and manifest on every store of a replicated store, and an original's
bytes only when no other file row still names them (originals are content-addressed and shared).
A project under legal hold (set by a global admin) lets nothing of it be deleted or purged; a
delivered dataset (allmicro_data.delivery) is frozen: no rename, move or delete.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from allmicro_data.access import (
    Caller,
    Use,
    get_visible,
    managed_project_ids,
    require,
    require_admin,
    require_image_deletion,
    require_role,
)
from allmicro_data.audit import record
from allmicro_data.catalogue.db import session_scope
from allmicro_data.catalogue.models import (
    Annotation,
    Dataset,
    File,
    Image,
    ImageFile,
    ImageFixity,
    Job,
    Project,
    ProjectInvitation,
    ProjectMembership,
    ProjectVisit,
    Role,
    ShareLink,
    Upload,
    User,
    utcnow,
)
from allmicro_data.delivery import require_not_frozen
from allmicro_data.errors import Conflict, Invalid, NotFound
from allmicro_data.object_keys import image_prefix
from allmicro_data.quotas import NoRoomForUpload, project_usage
from allmicro_data.search import search_text
from allmicro_data.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:trash-retention"


class Kind(enum.StrEnum):
    """What can be in the trash."""

    IMAGE = "image"
    DATASET = "dataset"
    PROJECT = "project"


class LegalHold(Conflict):
    """The project is under legal hold: nothing of it may be deleted or purged."""

    title = "Legal hold"


@dataclass(frozen=True)
class Actor:
    """Who does it, for the audit log."""

    caller: Caller | None
    client_address: str | None = None

    @property
    def email(self) -> str:
        return self.caller.email if self.caller else SYSTEM_ACTOR

    @property
    def user_id(self) -> str | None:
        return self.caller.user_id if self.caller else None


def _audit(
    session: Session,
    actor: Actor,
    action: str,
    kind: str,
    object_id: str,
    project_id: str,
    detail: dict[str, Any] | None = None,
) -> None:
    record(
        session,
        action,
        actor=actor.email,
        actor_user_id=actor.user_id,
        object_type=kind,
        object_id=object_id,
        project_id=project_id,
        client_address=actor.client_address,
        detail=detail,
    )


def _require_no_hold(project: Project) -> None:
    if project.legal_hold:
        raise LegalHold(f"project {project.name!r} is under legal hold: nothing of it is deleted")


def _place(session: Session, image: Image) -> tuple[Dataset, Project]:
    dataset = session.get_one(Dataset, image.dataset_id)
    return dataset, session.get_one(Project, dataset.project_id)


# ---------------------------------------------------------------- rename and describe


def edit_image(
    session: Session,
    caller: Caller,
    image_id: str,
    *,
    name: str | None,
    description: str | None,
    client_address: str | None = None,
) -> Image:
    """Rename or describe an image (contributors), not in a delivered dataset."""
    image = get_visible(session, caller, Image, image_id)
    dataset, project = _place(session, image)
    require_role(session, caller, project.id, Role.CONTRIBUTOR)
    require_not_frozen(dataset)
    before = {"name": image.name, "description": image.description}
    if name is not None:
        if not name.strip():
            raise Invalid("an image needs a name")
        image.name = name.strip()
    if description is not None:
        image.description = description
    image.search_text = search_text(image)
    _audit(
        session,
        Actor(caller, client_address),
        "image.update",
        "image",
        image.id,
        project.id,
        {"before": before, "name": image.name},
    )
    session.flush()
    return image


def edited_dataset(
    session: Session, caller: Caller, dataset: Dataset, client_address: str | None = None
) -> None:
    """What every change of a dataset's name or description checks and records."""
    require_not_frozen(dataset)
    _audit(
        session,
        Actor(caller, client_address),
        "dataset.update",
        "dataset",
        dataset.id,
        dataset.project_id,
        {"name": dataset.name},
    )


def set_legal_hold(
    session: Session, caller: Caller, project: Project, hold: bool, client_address: str | None
) -> None:
    """Set or lift a project's legal hold (global admins)."""
    require_admin(caller)
    if project.legal_hold == hold:
        return
    project.legal_hold = hold
    _audit(
        session,
        Actor(caller, client_address),
        "project.legal_hold",
        "project",
        project.id,
        project.id,
        {"legal_hold": hold},
    )


# ---------------------------------------------------------------- moving


def _acquisition(session: Session, image: Image) -> tuple[list[Image], list[File]]:
    """The image with every image read from the same originals (the series of one file), and
    those originals: what moves together, since a file belongs to one dataset."""
    images: dict[str, Image] = {image.id: image}
    files: dict[str, File] = {}
    frontier = [image.id]
    while frontier:
        file_rows = session.scalars(
            select(File)
            .join(ImageFile, ImageFile.file_id == File.id)
            .where(ImageFile.image_id.in_(frontier))
        ).all()
        new_files = [f for f in file_rows if f.id not in files]
        files.update({f.id: f for f in new_files})
        if not new_files:
            break
        image_rows = session.scalars(
            select(Image)
            .join(ImageFile, ImageFile.image_id == Image.id)
            .where(ImageFile.file_id.in_([f.id for f in new_files]))
        ).all()
        frontier = [i.id for i in image_rows if i.id not in images]
        images.update({i.id: i for i in image_rows})
    return list(images.values()), list(files.values())


def _require_room(session: Session, target: Project, source: Project, size: int) -> None:
    """Moving between projects counts the originals against the target's quota."""
    if target.id == source.id or target.quota_bytes is None or size == 0:
        return
    usage = project_usage(session, target)
    if usage.used_bytes + size > target.quota_bytes:
        raise NoRoomForUpload(
            f"project {target.name!r} has a storage quota of {target.quota_bytes} bytes and "
            f"holds {usage.used_bytes}: the {size} bytes of originals moved would exceed it"
        )


def move_image(
    session: Session,
    caller: Caller,
    image_id: str,
    target_dataset_id: str,
    client_address: str | None = None,
) -> list[Image]:
    """Move an image into another dataset (the caller manages both projects; contributors may
    move within one project). The images read from the same originals, and those originals,
    move with it; stored objects stay where they are. The images moved."""
    image = get_visible(session, caller, Image, image_id)
    source_dataset, source = _place(session, image)
    target_dataset = get_visible(session, caller, Dataset, target_dataset_id)
    target = session.get_one(Project, target_dataset.project_id)
    needed = Role.CONTRIBUTOR if source.id == target.id else Role.MANAGER
    require_role(session, caller, source.id, needed)
    require_role(session, caller, target.id, needed)
    if target_dataset.id == source_dataset.id:
        return [image]
    require_not_frozen(source_dataset)
    require_not_frozen(target_dataset)
    images, files = _acquisition(session, image)
    if any(i.dataset_id != source_dataset.id for i in images) or any(
        f.dataset_id != source_dataset.id for f in files
    ):
        raise Conflict("the image's originals are shared with another dataset")
    clash = session.scalar(
        select(File.original_name).where(
            File.dataset_id == target_dataset.id, File.sha256.in_([f.sha256 for f in files])
        )
    )
    if clash is not None:
        raise Conflict(f"the target dataset already holds these bytes as {clash!r}")
    _require_room(session, target, source, sum(f.size for f in files))
    for moved in images:
        moved.dataset_id = target_dataset.id
    for f in files:
        f.dataset_id = target_dataset.id
    if files:
        session.execute(
            update(Job)
            .where(Job.file_id.in_([f.id for f in files]))
            .values(dataset_id=target_dataset.id)
        )
    actor = Actor(caller, client_address)
    detail = {
        "from_dataset_id": source_dataset.id,
        "to_dataset_id": target_dataset.id,
        "image_ids": [i.id for i in images],
        "file_ids": [f.id for f in files],
    }
    _audit(session, actor, "image.move", "image", image.id, source.id, detail)
    if target.id != source.id:
        _audit(session, actor, "image.move", "image", image.id, target.id, detail)
    session.flush()
    return images


def move_dataset(
    session: Session,
    caller: Caller,
    dataset_id: str,
    target_project_id: str,
    client_address: str | None = None,
) -> Dataset:
    """Move a dataset into another project (the caller manages both); within the target's quota."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    source = session.get_one(Project, dataset.project_id)
    target = get_visible(session, caller, Project, target_project_id)
    require_role(session, caller, source.id, Role.MANAGER)
    require_role(session, caller, target.id, Role.MANAGER)
    if target.id == source.id:
        return dataset
    require_not_frozen(dataset)
    taken = session.scalar(
        select(Dataset.id).where(Dataset.project_id == target.id, Dataset.name == dataset.name)
    )
    if taken is not None:
        raise Conflict(f"project {target.name!r} already has a dataset {dataset.name!r}")
    size = session.scalar(
        select(func.coalesce(func.sum(File.size), 0)).where(File.dataset_id == dataset.id)
    )
    _require_room(session, target, source, int(size or 0))
    dataset.project_id = target.id
    # A link to the dataset was made by a manager of the project it leaves.
    session.execute(
        update(ShareLink)
        .where(ShareLink.dataset_id == dataset.id, ShareLink.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    actor = Actor(caller, client_address)
    detail = {"from_project_id": source.id, "to_project_id": target.id}
    _audit(session, actor, "dataset.move", "dataset", dataset.id, source.id, detail)
    _audit(session, actor, "dataset.move", "dataset", dataset.id, target.id, detail)
    session.flush()
    return dataset


# ---------------------------------------------------------------- into the trash


def delete_image(
    session: Session, caller: Caller, image_id: str, client_address: str | None = None
) -> Image:
    """Put an image in the trash (managers; contributors their own uploads), with the
    originals no other image still shows."""
    image = get_visible(session, caller, Image, image_id)
    dataset, project = _place(session, image)
    require_image_deletion(session, caller, image, project.id)
    require_not_frozen(dataset)
    _require_no_hold(project)
    now = utcnow()
    image.deleted_at = now
    image.deleted_by_id = caller.user_id
    session.flush()
    file_ids = select(ImageFile.file_id).where(ImageFile.image_id == image.id)
    still_shown = (
        select(ImageFile.file_id)
        .join(Image, Image.id == ImageFile.image_id)
        .where(Image.deleted_at.is_(None))
    )
    session.execute(
        update(File)
        .where(File.id.in_(file_ids), File.id.not_in(still_shown), File.deleted_at.is_(None))
        .values(deleted_at=now)
    )
    _audit(
        session,
        Actor(caller, client_address),
        "image.delete",
        "image",
        image.id,
        project.id,
        {"name": image.name, "dataset_id": dataset.id},
    )
    return image


def delete_dataset(
    session: Session, caller: Caller, dataset_id: str, client_address: str | None = None
) -> Dataset:
    """Put a dataset in the trash with everything it holds (managers)."""
    dataset = get_visible(session, caller, Dataset, dataset_id)
    project = session.get_one(Project, dataset.project_id)
    require_role(session, caller, project.id, Role.MANAGER)
    require_not_frozen(dataset)
    _require_no_hold(project)
    dataset.deleted_at = utcnow()
    dataset.deleted_by_id = caller.user_id
    _audit(
        session,
        Actor(caller, client_address),
        "dataset.delete",
        "dataset",
        dataset.id,
        project.id,
        {"name": dataset.name},
    )
    return dataset


def delete_project(
    session: Session, caller: Caller, project_id: str, client_address: str | None = None
) -> Project:
    """Put a project in the trash with everything it holds (managers); not one that holds a
    delivery."""
    project = get_visible(session, caller, Project, project_id)
    require_role(session, caller, project.id, Role.MANAGER)
    _require_no_hold(project)
    delivered = session.scalar(
        select(Dataset.name).where(
            Dataset.project_id == project.id,
            Dataset.deleted_at.is_(None),
            Dataset.delivered_at.is_not(None),
        )
    )
    if delivered is not None:
        raise Conflict(f"the project holds the delivered dataset {delivered!r}")
    project.deleted_at = utcnow()
    project.deleted_by_id = caller.user_id
    _audit(
        session,
        Actor(caller, client_address),
        "project.delete",
        "project",
        project.id,
        project.id,
        {"name": project.name},
    )
    return project


# ---------------------------------------------------------------- the trash


@dataclass(frozen=True)
class TrashEntry:
    """Something in the trash, where it was, who deleted it and when it will be purged."""

    kind: Kind
    id: str
    name: str
    project_id: str
    project_name: str
    dataset_id: str | None
    dataset_name: str | None
    deleted_at: datetime
    deleted_by: str | None
    purge_at: datetime
    legal_hold: bool


def retention(days: float) -> timedelta:
    return timedelta(days=days)


def trash(
    session: Session, caller: Caller, retention_days: float, project_id: str | None = None
) -> list[TrashEntry]:
    """What the caller may restore or purge (managers: their projects; global admins: all),
    newest first; things inside a deleted dataset or project go with it and are not listed."""
    require(caller, Use.WRITE)
    managed = managed_project_ids(caller)
    keep = retention(retention_days)
    projects = select(Project).where(Project.id.in_(managed))
    if project_id is not None:
        projects = projects.where(Project.id == project_id)
    by_id = {p.id: p for p in session.scalars(projects)}
    if project_id is not None and project_id not in by_id:
        raise NotFound(f"project {project_id} not found")
    emails = dict(session.execute(select(User.id, User.email)).tuples().all())
    entries: list[TrashEntry] = []

    def entry(
        kind: Kind,
        id_: str,
        name: str,
        project: Project,
        dataset: Dataset | None,
        at: datetime,
        by: str | None,
    ) -> None:
        entries.append(
            TrashEntry(
                kind=kind,
                id=id_,
                name=name,
                project_id=project.id,
                project_name=project.name,
                dataset_id=dataset.id if dataset else None,
                dataset_name=dataset.name if dataset else None,
                deleted_at=at,
                deleted_by=emails.get(by) if by else None,
                purge_at=at + keep,
                legal_hold=project.legal_hold,
            )
        )

    ids = list(by_id)
    for project in by_id.values():
        if project.deleted_at is not None:
            entry(
                Kind.PROJECT,
                project.id,
                project.name,
                project,
                None,
                project.deleted_at,
                project.deleted_by_id,
            )
    live_ids = [i for i in ids if by_id[i].deleted_at is None]
    datasets = session.scalars(select(Dataset).where(Dataset.project_id.in_(live_ids))).all()
    for dataset in datasets:
        if dataset.deleted_at is not None:
            entry(
                Kind.DATASET,
                dataset.id,
                dataset.name,
                by_id[dataset.project_id],
                None,
                dataset.deleted_at,
                dataset.deleted_by_id,
            )
    live_datasets = {d.id: d for d in datasets if d.deleted_at is None}
    images = session.scalars(
        select(Image).where(
            Image.dataset_id.in_(list(live_datasets)), Image.deleted_at.is_not(None)
        )
    ).all()
    for image in images:
        dataset = live_datasets[image.dataset_id]
        assert image.deleted_at is not None
        entry(
            Kind.IMAGE,
            image.id,
            image.name,
            by_id[dataset.project_id],
            dataset,
            image.deleted_at,
            image.deleted_by_id,
        )
    entries.sort(key=lambda e: (e.deleted_at, e.id), reverse=True)
    return entries


def _get(session: Session, kind: Kind, object_id: str) -> Image | Dataset | Project | None:
    if kind is Kind.IMAGE:
        return session.get(Image, object_id)
    if kind is Kind.DATASET:
        return session.get(Dataset, object_id)
    return session.get(Project, object_id)


def _project_id(session: Session, found: Image | Dataset | Project) -> str:
    if isinstance(found, Image):
        return session.get_one(Dataset, found.dataset_id).project_id
    if isinstance(found, Dataset):
        return found.project_id
    return found.id


def _trashed(
    session: Session, caller: Caller, kind: Kind, object_id: str
) -> tuple[Image | Dataset | Project, str]:
    """A thing in the trash and its project's id, if the caller manages that project."""
    require(caller, Use.WRITE)
    found = _get(session, kind, object_id)
    if found is None or found.deleted_at is None:
        raise NotFound(f"{kind} {object_id} is not in the trash")
    project_id = _project_id(session, found)
    try:
        require_role(session, caller, project_id, Role.MANAGER)
    except NotFound:
        raise NotFound(f"{kind} {object_id} is not in the trash") from None
    return found, project_id


def restore(
    session: Session, caller: Caller, kind: Kind, object_id: str, client_address: str | None = None
) -> str:
    """Take something out of the trash (managers of its project); its project's id. What holds
    it must not be in the trash itself."""
    found, project_id = _trashed(session, caller, kind, object_id)
    project = session.get_one(Project, project_id)
    if kind is not Kind.PROJECT and project.deleted_at is not None:
        raise Conflict("restore its project first")
    if isinstance(found, Image):
        dataset = session.get_one(Dataset, found.dataset_id)
        if dataset.deleted_at is not None:
            raise Conflict("restore its dataset first")
        file_ids = select(ImageFile.file_id).where(ImageFile.image_id == found.id)
        session.execute(update(File).where(File.id.in_(file_ids)).values(deleted_at=None))
    name = found.name
    found.deleted_at = None
    found.deleted_by_id = None
    _audit(
        session,
        Actor(caller, client_address),
        f"{kind}.restore",
        kind.value,
        object_id,
        project_id,
        {"name": name},
    )
    session.flush()
    return project_id


def take_out_of_trash(session: Session, original: File) -> None:
    """An original in the trash uploaded again into its dataset: it and the images read from
    it are restored (what the uploader sends is what they want to see)."""
    images = select(ImageFile.image_id).where(ImageFile.file_id == original.id)
    session.execute(
        update(Image)
        .where(Image.id.in_(images), Image.deleted_at.is_not(None))
        .values(deleted_at=None, deleted_by_id=None)
    )
    original.deleted_at = None
    log.info("original %s uploaded again: taken out of the trash with its images", original.id)


# ---------------------------------------------------------------- purging


@dataclass
class Purged:
    """What a purge removed."""

    images: int = 0
    files: int = 0
    objects: int = 0
    originals: int = 0


def _delete_prefix(store: ObjectStore, prefix: str) -> int:
    keys = list(store.list(prefix))
    for key in keys:
        store.delete(key)  # a replicated store deletes on every replica (or queues it)
    return len(keys)


def _purge_images(
    session: Session, store: ObjectStore, images: Iterable[Image], out: Purged
) -> None:
    for image in images:
        out.objects += _delete_prefix(store, image_prefix(image.id))
        file_ids = list(
            session.scalars(select(ImageFile.file_id).where(ImageFile.image_id == image.id))
        )
        session.execute(delete(ImageFixity).where(ImageFixity.image_id == image.id))
        session.execute(delete(ImageFile).where(ImageFile.image_id == image.id))
        session.execute(delete(Annotation).where(Annotation.image_id == image.id))
        session.delete(image)
        out.images += 1
        session.flush()
        # An original goes with its last image, when it is itself in the trash.
        orphans = session.scalars(
            select(File).where(
                File.id.in_(file_ids),
                File.deleted_at.is_not(None),
                File.id.not_in(select(ImageFile.file_id)),
            )
        ).all()
        _purge_files(session, store, orphans, out)


def _purge_files(session: Session, store: ObjectStore, files: Iterable[File], out: Purged) -> None:
    for f in files:
        key = f.storage_key
        session.execute(
            update(Upload).where(Upload.file_id == f.id).values(file_id=None, job_id=None)
        )
        jobs = select(Job.id).where(Job.file_id == f.id)
        session.execute(update(Upload).where(Upload.job_id.in_(jobs)).values(job_id=None))
        session.execute(delete(Job).where(Job.file_id == f.id))
        session.execute(delete(ImageFile).where(ImageFile.file_id == f.id))
        session.delete(f)
        out.files += 1
        session.flush()
        # Content-addressed: the same bytes may be an original of another dataset too.
        if session.scalar(select(File.id).where(File.storage_key == key).limit(1)) is None:
            with contextlib.suppress(ObjectNotFound):
                store.delete(key)
            out.originals += 1


def _purge_dataset(session: Session, store: ObjectStore, dataset: Dataset, out: Purged) -> None:
    images = session.scalars(select(Image).where(Image.dataset_id == dataset.id)).all()
    _purge_images(session, store, images, out)
    files = session.scalars(select(File).where(File.dataset_id == dataset.id)).all()
    _purge_files(session, store, files, out)
    jobs = select(Job.id).where(Job.dataset_id == dataset.id)
    session.execute(update(Upload).where(Upload.job_id.in_(jobs)).values(job_id=None))
    session.execute(delete(Job).where(Job.dataset_id == dataset.id))
    session.execute(delete(Upload).where(Upload.dataset_id == dataset.id))
    session.execute(delete(ShareLink).where(ShareLink.dataset_id == dataset.id))
    session.execute(delete(Annotation).where(Annotation.dataset_id == dataset.id))
    session.delete(dataset)
    session.flush()


def _purge_project(session: Session, store: ObjectStore, project: Project, out: Purged) -> None:
    for dataset in session.scalars(select(Dataset).where(Dataset.project_id == project.id)).all():
        _purge_dataset(session, store, dataset, out)
    for model in (ShareLink, ProjectMembership, ProjectInvitation, ProjectVisit):
        session.execute(delete(model).where(model.project_id == project.id))  # type: ignore[attr-defined]
    session.delete(project)
    session.flush()


def purge(
    session: Session,
    store: ObjectStore,
    kind: Kind,
    found: Image | Dataset | Project,
    project_id: str,
    actor: Actor,
) -> Purged:
    """Remove something in the trash for good: rows, pyramids, and originals nobody else names."""
    project = session.get_one(Project, project_id)
    _require_no_hold(project)
    out = Purged()
    name = found.name
    if isinstance(found, Image):
        _purge_images(session, store, [found], out)
    elif isinstance(found, Dataset):
        _purge_dataset(session, store, found, out)
    else:
        _purge_project(session, store, found, out)
    _audit(
        session,
        actor,
        f"{kind}.purge",
        kind.value,
        found.id if not isinstance(found, Project) else project_id,
        project_id,
        {
            "name": name,
            "images": out.images,
            "files": out.files,
            "objects": out.objects,
            "originals_removed": out.originals,
        },
    )
    log.info(
        "purged %s %s: %d images, %d files, %d objects, %d originals removed",
        kind,
        found.id if not isinstance(found, Project) else project_id,
        out.images,
        out.files,
        out.objects,
        out.originals,
    )
    return out


def purge_now(
    session: Session,
    store: ObjectStore,
    caller: Caller,
    kind: Kind,
    object_id: str,
    client_address: str | None = None,
) -> Purged:
    """A manager's "purge now" of something in the trash, before its retention runs out."""
    found, project_id = _trashed(session, caller, kind, object_id)
    return purge(session, store, kind, found, project_id, Actor(caller, client_address))


def purge_expired(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    retention_days: float,
    now: datetime | None = None,
) -> int:
    """Purge everything deleted longer than the retention ago, each in its own transaction
    (projects under legal hold are left alone); how many things were purged."""
    cutoff = (now or utcnow()) - retention(retention_days)
    held = select(Project.id).where(Project.legal_hold.is_(True))
    held_datasets = select(Dataset.id).where(Dataset.project_id.in_(held))
    expired = {
        Kind.PROJECT: select(Project.id).where(
            Project.deleted_at <= cutoff, Project.id.not_in(held)
        ),
        Kind.DATASET: select(Dataset.id).where(
            Dataset.deleted_at <= cutoff, Dataset.project_id.not_in(held)
        ),
        Kind.IMAGE: select(Image.id).where(
            Image.deleted_at <= cutoff, Image.dataset_id.not_in(held_datasets)
        ),
    }
    purged = 0
    for kind, stmt in expired.items():
        with session_scope(sessions) as session:
            ids = list(session.scalars(stmt))
        for object_id in ids:
            try:
                with session_scope(sessions) as session:
                    found = _get(session, kind, object_id)
                    if found is None or found.deleted_at is None:
                        continue  # restored, or purged by another process, meanwhile
                    project_id = _project_id(session, found)
                    purge(session, store, kind, found, project_id, Actor(None))
                purged += 1
            except Exception:
                log.exception("purging %s %s failed; it is tried again later", kind, object_id)
    return purged


class TrashPurger:
    """The server's periodic purge of what has been in the trash longer than the retention."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        retention_days: float,
        every: float,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.retention_days = retention_days
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="trash-purge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                purge_expired(self.sessions, self.store, self.retention_days)
            except Exception:
                log.exception("trash purge failed")
