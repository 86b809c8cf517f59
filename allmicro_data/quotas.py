"""Upload limits: the largest upload, bytes a user may have in flight, spool space reserved for every upload in flight, and project quotas.

An unfinished upload holds a reservation: the bytes it declared and has not yet sent. A new
upload is accepted only when the spool's free space, less every reservation, covers its own
declared length, so that uploads accepted together can all finish. The same checks apply to
resumable (tus) and one-shot uploads; a tus upload's declared length is checked when it is
created, before any byte is sent.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allmicro_data.audit import record
from allmicro_data.catalogue.models import Dataset, File, Project, Upload, UploadStatus, utcnow
from allmicro_data.errors import DomainError, Invalid
from allmicro_data.settings import Settings

log = logging.getLogger(__name__)

# The statuses of an upload whose bytes are not yet an original.
UNFINISHED = (UploadStatus.RECEIVING, UploadStatus.RECEIVED)
# A user over their in-flight limit may try again once an upload finishes or expires.
IN_FLIGHT_RETRY_SECONDS = 60


class UploadLimitExceeded(DomainError):
    """The upload is larger than a limit allows, however long the client waits."""

    status = 413
    title = "Request entity too large"


class NoRoomForUpload(DomainError):
    """There is no room for the upload now: the spool's free space, net of what uploads in
    flight have reserved, or the project's quota (tus and WebDAV answer 507)."""

    status = 507
    title = "Insufficient storage"


class TooMuchInFlight(DomainError):
    """The user has too many bytes or uploads unfinished; finishing one makes room."""

    status = 429
    title = "Too many requests"
    retry_after = IN_FLIGHT_RETRY_SECONDS


@dataclass(frozen=True, slots=True)
class InFlight:
    """Unfinished uploads: how many, the bytes they declared, and the bytes still to come."""

    uploads: int = 0
    declared_bytes: int = 0
    remaining_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ProjectUsage:
    """What a project holds against its quota (None: no quota)."""

    quota_bytes: int | None
    stored_bytes: int
    in_flight_bytes: int

    @property
    def used_bytes(self) -> int:
        return self.stored_bytes + self.in_flight_bytes


def in_flight(
    session: Session,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
    excluding: str | None = None,
) -> InFlight:
    """Unfinished, unexpired uploads of a user, into a project, or (neither given) of everyone."""
    stmt = select(
        func.count(Upload.id),
        func.coalesce(func.sum(Upload.length), 0),
        func.coalesce(func.sum(Upload.length - Upload.upload_offset), 0),
    ).where(Upload.status.in_(UNFINISHED), Upload.expires_at > utcnow())
    if user_id is not None:
        stmt = stmt.where(Upload.created_by_id == user_id)
    if project_id is not None:
        stmt = stmt.where(
            Upload.dataset_id.in_(select(Dataset.id).where(Dataset.project_id == project_id))
        )
    if excluding is not None:
        stmt = stmt.where(Upload.id != excluding)
    count, declared, remaining = session.execute(stmt).one()
    return InFlight(int(count), int(declared), int(remaining))


def project_usage(
    session: Session, project: Project, *, excluding: str | None = None
) -> ProjectUsage:
    """Bytes of originals stored in the project's datasets plus those its uploads declared."""
    stored = session.scalar(
        select(func.coalesce(func.sum(File.size), 0)).where(
            File.dataset_id.in_(select(Dataset.id).where(Dataset.project_id == project.id))
        )
    )
    flying = in_flight(session, project_id=project.id, excluding=excluding)
    return ProjectUsage(project.quota_bytes, int(stored or 0), flying.declared_bytes)


def check_upload(
    session: Session,
    settings: Settings,
    *,
    user_id: str,
    project: Project,
    length: int,
    spool: Path,
    excluding: str | None = None,
) -> None:
    """Refuse an upload of `length` bytes by user_id into project that a limit does not allow.

    `excluding` names an upload already recorded (its own reservation is the one checked).
    """
    if length > settings.max_upload_bytes:
        raise UploadLimitExceeded(
            f"the upload declares {length} bytes; the largest upload accepted is "
            f"{settings.max_upload_bytes} bytes (ALLMICRO_MAX_UPLOAD_BYTES)"
        )
    if length > settings.max_user_inflight_bytes:
        raise UploadLimitExceeded(
            f"the upload declares {length} bytes; one user may have at most "
            f"{settings.max_user_inflight_bytes} bytes of uploads unfinished at a time "
            "(ALLMICRO_MAX_USER_INFLIGHT_BYTES)"
        )
    mine = in_flight(session, user_id=user_id, excluding=excluding)
    if mine.declared_bytes + length > settings.max_user_inflight_bytes:
        raise TooMuchInFlight(
            f"you have {mine.uploads} uploads unfinished declaring {mine.declared_bytes} bytes; "
            f"with this one of {length} bytes that is over the limit of "
            f"{settings.max_user_inflight_bytes} bytes per user: finish or cancel one first"
        )
    if mine.uploads + 1 > settings.max_user_inflight_uploads:
        raise TooMuchInFlight(
            f"you have {mine.uploads} uploads unfinished, the most one user may have at a time "
            f"is {settings.max_user_inflight_uploads}: finish or cancel one first"
        )
    if project.quota_bytes is not None:
        usage = project_usage(session, project, excluding=excluding)
        if usage.used_bytes + length > project.quota_bytes:
            raise NoRoomForUpload(
                f"project {project.name!r} has a storage quota of {project.quota_bytes} bytes: "
                f"{usage.stored_bytes} stored and {usage.in_flight_bytes} in uploads under way "
                f"leave {max(0, project.quota_bytes - usage.used_bytes)}, not the {length} "
                "this upload declares; ask an admin to raise the quota"
            )
    spool.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(spool).free
    reserved = in_flight(session, excluding=excluding).remaining_bytes
    if free - reserved - settings.upload_min_free_bytes < length:
        log.warning(
            "upload of %d bytes refused: %d bytes free on the spool, %d reserved by uploads in "
            "flight, %d kept free",
            length,
            free,
            reserved,
            settings.upload_min_free_bytes,
        )
        raise NoRoomForUpload(
            f"the server has no room for {length} more bytes now (uploads under way have "
            "reserved the rest of its free space); try again later"
        )


def set_project_quota(
    session: Session,
    project: Project,
    quota_bytes: int | None,
    *,
    actor: str,
    actor_user_id: str | None,
) -> None:
    """Set or lift (None) a project's quota; uploads already stored stay, new ones are refused
    while the project is over it."""
    if quota_bytes is not None and quota_bytes < 0:
        raise Invalid("a quota is a number of bytes, 0 or more")
    previous = project.quota_bytes
    project.quota_bytes = quota_bytes
    record(
        session,
        "project.quota",
        actor=actor,
        actor_user_id=actor_user_id,
        object_type="project",
        object_id=project.id,
        project_id=project.id,
        detail={"quota_bytes": quota_bytes, "previous": previous},
    )
    log.info("project %s quota set to %s bytes by %s", project.id, quota_bytes, actor)


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(text: str) -> int | None:
    """A quota as an operator types it: bytes (1000000), with a unit (500GB, 2TiB), or "none"."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    match = _SIZE.match(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise Invalid(
            f"{text!r} is not a size: give bytes (e.g. 500000000000, 500GB, 2TiB) or none"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])
