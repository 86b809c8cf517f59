"""Deliveries: a dataset handed to its client, frozen from then on, with a cover document.

A manager marks a dataset as delivered; from that moment no upload, rename, move or deletion
changes it (`require_not_frozen`, called by every act that changes a dataset or what it holds).
The cover document lists each original with its checksum and the acquisition facts of the
images read from it, and names the facility that delivers. Every download of a delivered
dataset's originals leaves a receipt in the audit log (`record_receipt`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data import access, notifications
from allmicro_data.audit import record
from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Image,
    ImageFile,
    ImageStatus,
    Organisation,
    Project,
    Role,
    User,
    utcnow,
)
from allmicro_data.errors import Conflict, NotFound

log = logging.getLogger(__name__)


class DeliveryFrozen(Conflict):
    """The dataset was delivered to its client: what it holds no longer changes."""

    title = "Delivered dataset"


def is_frozen(dataset: Dataset) -> bool:
    return dataset.delivered_at is not None


def require_not_frozen(dataset: Dataset) -> None:
    """DeliveryFrozen (409) if the dataset is a delivery: no uploads, edits, moves or deletions."""
    if dataset.delivered_at is not None:
        raise DeliveryFrozen(
            f"dataset {dataset.id} was delivered on {dataset.delivered_at:%Y-%m-%d} "
            "and can no longer be changed"
        )


def mark_delivered(
    session: Session,
    caller: access.Caller,
    dataset_id: str,
    client_address: str | None,
    *,
    recipients: Sequence[str] = (),
    link_url: str | None = None,
) -> Dataset:
    """Freeze a dataset as a delivery (managers of its project). Marking it again changes nothing."""
    dataset = access.get_visible(session, caller, Dataset, dataset_id, access.Use.SEE)
    access.require_role(session, caller, dataset.project_id, Role.MANAGER)
    if dataset.delivered_at is not None:
        return dataset
    dataset.delivered_at = utcnow()
    dataset.delivered_by_id = caller.user_id
    files = session.scalars(
        select(File).where(File.dataset_id == dataset.id, File.deleted_at.is_(None))
    ).all()
    record(
        session,
        "delivery.mark",
        actor=caller.email,
        actor_user_id=caller.user_id,
        object_type="dataset",
        object_id=dataset.id,
        project_id=dataset.project_id,
        client_address=client_address,
        size=sum(f.size for f in files),
        detail={"files": len(files)},
    )
    session.flush()
    _notify_ready(session, dataset, recipients, link_url)
    return dataset


def _notify_ready(
    session: Session, dataset: Dataset, recipients: Sequence[str], link_url: str | None
) -> None:
    """Tell the client that the delivery is ready; sent after the commit."""
    try:
        notifications.delivery_ready(session, dataset.id, recipients=recipients, link_url=link_url)
    except Exception:
        # A mail problem must not undo the delivery; the log keeps the reason.
        log.exception("delivery %s: the notification failed", dataset.id)


def record_receipt(
    session: Session,
    dataset: Dataset,
    *,
    files: list[File],
    size: int,
    actor: str | None,
    actor_user_id: str | None,
    share_link_id: str | None,
    client_address: str | None,
) -> None:
    """A download receipt for a delivered dataset: who (or which link), what, how many bytes."""
    if dataset.delivered_at is None:
        return
    record(
        session,
        "delivery.receipt",
        actor=actor,
        actor_user_id=actor_user_id,
        object_type="dataset",
        object_id=dataset.id,
        project_id=dataset.project_id,
        client_address=client_address,
        size=size,
        detail={
            "share_link_id": share_link_id,
            "files": [{"id": f.id, "name": f.original_name, "sha256": f.sha256} for f in files],
        },
    )


@dataclass(frozen=True)
class CoverFile:
    name: str
    size: int
    sha256: str
    uploaded_at: datetime
    images: list[dict[str, Any]]  # name, instrument, modality, acquired_at, pixel size x


@dataclass(frozen=True)
class CoverDocument:
    """What the printable cover of a delivery says."""

    project_name: str
    dataset_name: str
    description: str
    delivered_at: datetime | None
    delivered_by: str | None
    facility: str | None  # the organisation of the manager who delivered
    client: str | None  # the pilot project's client organisation
    files: list[CoverFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def cover_document(session: Session, dataset: Dataset) -> CoverDocument:
    """The cover of a dataset's delivery (the caller has been allowed to read the dataset)."""
    project = session.get(Project, dataset.project_id)
    if project is None:
        raise NotFound(f"dataset {dataset.id} not found")
    deliverer = session.get(User, dataset.delivered_by_id) if dataset.delivered_by_id else None
    facility = session.get(Organisation, deliverer.organisation_id) if deliverer else None
    client = (
        session.get(Organisation, project.client_organisation_id)
        if project.client_organisation_id
        else None
    )
    # What is in the trash (allmicro_data.lifecycle) was not delivered.
    originals = session.scalars(
        select(File)
        .where(File.dataset_id == dataset.id, File.deleted_at.is_(None))
        .order_by(File.original_name, File.id)
    ).all()
    rows = session.execute(
        select(ImageFile.file_id, Image)
        .join(Image, Image.id == ImageFile.image_id)
        .where(
            Image.dataset_id == dataset.id,
            Image.status == ImageStatus.READY,
            Image.deleted_at.is_(None),
        )
        .order_by(Image.name)
    ).all()
    images: dict[str, list[dict[str, Any]]] = {}
    for file_id, image in rows:
        images.setdefault(file_id, []).append(
            {
                "name": image.name,
                "instrument": image.instrument,
                "modality": image.modality,
                "acquired_at": image.acquired_at,
                "pixel_size_x": image.pixel_size_x,
            }
        )
    return CoverDocument(
        project_name=project.name,
        dataset_name=dataset.name,
        description=dataset.description or project.description,
        delivered_at=dataset.delivered_at,
        delivered_by=(deliverer.display_name or deliverer.email) if deliverer else None,
        facility=facility.name if facility else None,
        client=client.name if client else None,
        files=[
            CoverFile(f.original_name, f.size, f.sha256, f.uploaded_at, images.get(f.id, []))
            for f in originals
        ],
    )
