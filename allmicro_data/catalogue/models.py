"""Catalogue tables: who may see what, which originals are stored, which images they hold, jobs, audit."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so that migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalogue; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings with a CHECK, identical on both databases.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda e: [m.value for m in e],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class OrganisationKind(enum.StrEnum):
    LEAD_PARTNER = "lead_partner"
    PARTNER = "partner"
    COMPANY = "company"


class ProjectKind(enum.StrEnum):
    RESEARCH = "research"
    PILOT = "pilot"


class Role(enum.StrEnum):
    """Project roles, each including the rights of the ones before it."""

    VIEWER = "viewer"
    CONTRIBUTOR = "contributor"
    MANAGER = "manager"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class ImageStatus(enum.StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobKind(enum.StrEnum):
    INGEST = "ingest"


class Organisation(Base):
    __tablename__ = "organisation"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[OrganisationKind] = mapped_column(_enum(OrganisationKind, "organisation_kind"))
    country: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    users: Mapped[list[User]] = relationship(back_populates="organisation")


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisation.id"), index=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    # The UI language the user last signed in with (en, it, sl): their e-mails speak it.
    language: Mapped[str | None] = mapped_column(String(8))

    organisation: Mapped[Organisation] = relationship(back_populates="users")


class ExternalIdentity(Base):
    """An institutional account (an OpenID Connect issuer's subject, an LDAP directory's entry)
    that signs in as a user; such users may have no local password."""

    __tablename__ = "external_identity"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_external_identity_subject"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    issuer: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]


class TokenKind(enum.StrEnum):
    SESSION = "session"  # browser login, carried in a signed cookie
    BEARER = "bearer"  # from POST /api/auth/token
    PERSONAL = "personal"  # personal access tokens for instrument PCs and scripts


class AccessToken(Base):
    """A credential handed to a client. Only its sha256 is stored; the token is shown once."""

    __tablename__ = "access_token"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[TokenKind] = mapped_column(_enum(TokenKind, "token_kind"))
    name: Mapped[str] = mapped_column(String(200), default="")
    scope: Mapped[str] = mapped_column(String(32), default="all")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Project(Base):
    __tablename__ = "project"
    __table_args__ = (
        CheckConstraint(
            "kind = 'research' OR client_organisation_id IS NOT NULL", name="pilot_has_client"
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[ProjectKind] = mapped_column(_enum(ProjectKind, "project_kind"))
    # A pilot project is done for one client company; research projects have none.
    client_organisation_id: Mapped[str | None] = mapped_column(
        ForeignKey("organisation.id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Bytes of originals (stored plus in flight) the project may hold; None: no limit.
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Set by a global admin: nothing of the project may be deleted or purged (allmicro_data.lifecycle).
    legal_hold: Mapped[bool] = mapped_column(default=False)
    # In the trash since then (allmicro_data.lifecycle): hidden everywhere, purged later.
    deleted_at: Mapped[datetime | None]
    deleted_by_id: Mapped[str | None] = mapped_column(String(36))

    datasets: Mapped[list[Dataset]] = relationship(back_populates="project")
    memberships: Mapped[list[ProjectMembership]] = relationship(back_populates="project")


class ProjectMembership(Base):
    """A user, or a whole organisation, holding a role in a project."""

    __tablename__ = "project_membership"
    __table_args__ = (
        CheckConstraint(
            "(user_id IS NULL) <> (organisation_id IS NULL)", name="user_or_organisation"
        ),
        UniqueConstraint("project_id", "user_id", name="uq_membership_project_user"),
        UniqueConstraint("project_id", "organisation_id", name="uq_membership_project_org"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    organisation_id: Mapped[str | None] = mapped_column(
        ForeignKey("organisation.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[Role] = mapped_column(_enum(Role, "project_role"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    project: Mapped[Project] = relationship(back_populates="memberships")


class ProjectInvitation(Base):
    """A role in a project offered to an e-mail address; it becomes a membership when a user
    with that address is created or signs in. A manager adding someone by e-mail always gets
    one, so the answer never tells whether the address has an account."""

    __tablename__ = "project_invitation"
    __table_args__ = (UniqueConstraint("project_id", "email", name="uq_invitation_project_email"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320), index=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "project_role"))
    invited_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_dataset_project_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A delivery to the client: frozen from this moment (allmicro_data.delivery).
    delivered_at: Mapped[datetime | None]
    delivered_by_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id"))
    # In the trash since then (allmicro_data.lifecycle): hidden with what it holds.
    deleted_at: Mapped[datetime | None]
    deleted_by_id: Mapped[str | None] = mapped_column(String(36))

    project: Mapped[Project] = relationship(back_populates="datasets")
    files: Mapped[list[File]] = relationship(back_populates="dataset")
    images: Mapped[list[Image]] = relationship(back_populates="dataset")


class File(Base):
    """An original as uploaded: its bytes live, content-addressed and immutable, at storage_key."""

    __tablename__ = "file"
    # One row per bytes and dataset: uploads of the same file at the same moment share it.
    __table_args__ = (Index("uq_file_dataset_sha256", "dataset_id", "sha256", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    storage_key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    original_name: Mapped[str] = mapped_column(String(1024))
    relative_path: Mapped[str | None] = mapped_column(String(4096))
    # Files uploaded with the same group key form one acquisition (EMI+SER, MRC+mdoc, …).
    group_key: Mapped[str | None] = mapped_column(String(300))
    format: Mapped[str | None] = mapped_column(String(100))
    uploaded_by_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id"))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    # In the trash with the images read from it (allmicro_data.lifecycle).
    deleted_at: Mapped[datetime | None]

    dataset: Mapped[Dataset] = relationship(back_populates="files")


class ImageFile(Base):
    """Which originals an image was read from (one for most formats, several for EMI+SER and the like)."""

    __tablename__ = "image_file"

    image_id: Mapped[str] = mapped_column(
        ForeignKey("image.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[str] = mapped_column(ForeignKey("file.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(32), default="primary")


# Indexes that exist on PostgreSQL only (created with ddl_if and by the migrations).
POSTGRESQL_ONLY_INDEXES = frozenset({"ix_image_ready_search_trgm"})


def _ready_indexes(*specs: tuple[str, ...]) -> list[Index]:
    """Indexes over ready images only, named ix_image_ready_<name>; "lower(x)" is an expression."""
    indexes = []
    for name, *columns in specs:
        parts = [text(c) if "(" in c else c for c in columns]
        where = text("status = 'ready'")
        indexes.append(
            Index(f"ix_image_ready_{name}", *parts, sqlite_where=where, postgresql_where=where)
        )
    return indexes


class Image(Base):
    """One viewable series read from one or more originals, with its pyramid and metadata."""

    __tablename__ = "image"
    __table_args__ = (
        Index("ix_image_dataset_status", "dataset_id", "status"),
        # Search paths (allmicro_data/search.py). Callers only ever see ready images, so these
        # are partial indexes over them; scoped queries start from the visible datasets.
        *_ready_indexes(
            ("name", "name"),
            ("acquired", "acquired_at"),
            ("dataset_name", "dataset_id", "name"),
            ("dataset_acquired", "dataset_id", "acquired_at"),
            ("dataset_modality_acquired", "dataset_id", "lower(modality)", "acquired_at"),
            ("modality_acquired", "lower(modality)", "acquired_at"),
            ("dataset_pixel_size", "dataset_id", "pixel_size_x"),
            ("pixel_size", "pixel_size_x"),
        ),
        # Free text: trigrams answer LIKE '%word%' on PostgreSQL; SQLite scans.
        Index(  # one of POSTGRESQL_ONLY_INDEXES
            "ix_image_ready_search_trgm",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
            postgresql_where=text("status = 'ready'"),
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    name: Mapped[str] = mapped_column(String(1024))
    description: Mapped[str] = mapped_column(Text, default="")
    series_index: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[ImageStatus] = mapped_column(
        _enum(ImageStatus, "image_status"), default=ImageStatus.PROCESSING
    )
    error: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(100))

    # Pixels as stored in the pyramid: axes letters from "tczyx", shape in the same order.
    axes: Mapped[str | None] = mapped_column(String(8))
    shape: Mapped[list[Any] | None]
    dtype: Mapped[str | None] = mapped_column(String(16))

    # Normalised acquisition fields, SI units; null when the file does not carry them. One column
    # per entry of allmicro_data.acquisition.ACQUISITION_FIELDS, same name (a test checks).
    modality: Mapped[str | None] = mapped_column(String(32), index=True)
    vendor: Mapped[str | None] = mapped_column(String(100), index=True)
    instrument: Mapped[str | None] = mapped_column(String(200), index=True)
    acquired_at: Mapped[datetime | None] = mapped_column(index=True)
    # True when the instrument wrote its local wall-clock time without a zone: acquired_at then
    # holds that wall-clock time as if it were UTC (searchable by date, shown as local time).
    acquired_at_local: Mapped[bool | None]
    operator: Mapped[str | None] = mapped_column(String(200))
    pixel_size_x: Mapped[float | None] = mapped_column(Float, index=True)
    pixel_size_y: Mapped[float | None] = mapped_column(Float)
    pixel_size_z: Mapped[float | None] = mapped_column(Float)
    accelerating_voltage: Mapped[float | None] = mapped_column(Float)
    magnification: Mapped[float | None] = mapped_column(Float)
    working_distance: Mapped[float | None] = mapped_column(Float)
    horizontal_field_width: Mapped[float | None] = mapped_column(Float)
    detector: Mapped[str | None] = mapped_column(String(200))
    beam_current: Mapped[float | None] = mapped_column(Float)
    dwell_time: Mapped[float | None] = mapped_column(Float)
    exposure_time: Mapped[float | None] = mapped_column(Float)
    tilt_angle_deg: Mapped[float | None] = mapped_column(Float)
    camera_length: Mapped[float | None] = mapped_column(Float)
    objective: Mapped[str | None] = mapped_column(String(200))
    electron_dose: Mapped[float | None] = mapped_column(Float)  # e⁻/m²
    spot_size: Mapped[float | None] = mapped_column(Float)
    defocus: Mapped[float | None] = mapped_column(Float)  # metres, signed
    channels: Mapped[list[Any] | None]

    vendor_metadata: Mapped[dict[str, Any] | None]
    warnings: Mapped[list[Any] | None]
    # Lower-cased name, normalised fields and every vendor value, for free-text search.
    search_text: Mapped[str | None] = mapped_column(Text)

    # Where the pyramid lives in the object store, and what it looks like.
    pyramid_key: Mapped[str | None] = mapped_column(String(300))
    ngff_version: Mapped[str | None] = mapped_column(String(8))
    levels: Mapped[int | None] = mapped_column(Integer)
    ome_xml_key: Mapped[str | None] = mapped_column(String(300))
    # The part of the frame that is the sample, [y0, y1, x0, x1] in full-resolution pixels, when
    # the instrument burnt a data bar into the rest; null when the whole frame is the sample.
    image_region: Mapped[list[Any] | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # In the trash since then (allmicro_data.lifecycle): hidden everywhere, purged later.
    deleted_at: Mapped[datetime | None]
    deleted_by_id: Mapped[str | None] = mapped_column(String(36))

    dataset: Mapped[Dataset] = relationship(back_populates="images")


class Annotation(Base):
    """A tag (key None) or a key-value pair (sample, batch, client reference…) on an image or a
    dataset; searchable, and served in OME-XML as TagAnnotations and MapAnnotations."""

    __tablename__ = "annotation"
    __table_args__ = (
        CheckConstraint("(image_id IS NULL) <> (dataset_id IS NULL)", name="image_or_dataset"),
        Index("ix_annotation_key_value", "key", "value_lower"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    image_id: Mapped[str | None] = mapped_column(
        ForeignKey("image.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(String(1000))
    # For case-insensitive search on both databases without an expression index.
    value_lower: Mapped[str] = mapped_column(String(1000))
    created_by_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RenderingSetting(Base):
    """How an image is displayed: the image's default (user_id None, set by contributors) or one
    user's own choice. `settings` holds the viewer's display state (windows, gamma, LUT…)."""

    __tablename__ = "rendering_setting"
    __table_args__ = (UniqueConstraint("image_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    image_id: Mapped[str] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    settings: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Roi(Base):
    """A measurement or region drawn on an image, in full-resolution pixel coordinates; seen by
    everyone who can see the image, served in OME-XML as an ROI."""

    __tablename__ = "roi"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    image_id: Mapped[str] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    # point, line, polyline, angle, rectangle, ellipse, polygon
    kind: Mapped[str] = mapped_column(String(16))
    # [[x, y], …] in full-resolution pixels; a rectangle or ellipse by two opposite corners.
    points: Mapped[list[Any]]
    z: Mapped[int] = mapped_column(Integer, default=0)
    t: Mapped[int] = mapped_column(Integer, default=0)
    c: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_by_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    """A unit of background work. The row is the truth; queues only carry its id."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_status_not_before", "status", "not_before"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind, "job_kind"))
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.QUEUED
    )
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id"), index=True)
    file_id: Mapped[str | None] = mapped_column(ForeignKey("file.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    # A running job is owned by whoever holds an unexpired lease; an expired lease means the
    # worker died, and the job may be taken again.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]
    # When the job's id was last sent to a task queue (Celery); cleared when it is claimed, so
    # a queued job with none was never sent, or must be sent again (retry, expired lease).
    dispatched_at: Mapped[datetime | None]
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # A failed job someone has looked at and set aside: it leaves the lists of failed jobs.
    dismissed_at: Mapped[datetime | None]
    dismissed_by_id: Mapped[str | None] = mapped_column(String(36))


class ShareLink(Base):
    """A read-only link to one project or dataset, for people without an account."""

    __tablename__ = "share_link"
    __table_args__ = (
        CheckConstraint("(project_id IS NULL) <> (dataset_id IS NULL)", name="project_or_dataset"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    # Downloads through the link (files and archives); None: no limit.
    max_downloads: Mapped[int | None] = mapped_column(Integer)
    download_count: Mapped[int] = mapped_column(Integer, default=0)


class ProjectVisit(Base):
    """When a user last opened a project's results view: what is new is what came after."""

    __tablename__ = "project_visit"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("project.id", ondelete="CASCADE"), primary_key=True
    )
    visited_at: Mapped[datetime]


class AttemptCounter(Base):
    """Attempts of one kind (`bucket`, e.g. one share link's password) from one client in the
    current window; counted by conditional UPDATEs (allmicro_data.throttle), so that parallel
    attempts never pass a limit."""

    __tablename__ = "attempt_counter"

    bucket: Mapped[str] = mapped_column(String(100), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class AuditEvent(Base):
    """Who did what to which object, when and from where."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_project_at", "project_id", "at"),
        # Login throttling counts recent failures per client address.
        Index("ix_audit_event_address_action_at", "client_address", "action", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor_user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    actor: Mapped[str | None] = mapped_column(String(320))
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(36))
    client_address: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    success: Mapped[bool] = mapped_column(default=True)
    detail: Mapped[dict[str, Any] | None]


class UploadStatus(enum.StrEnum):
    RECEIVING = "receiving"
    # Every byte is in and the whole-file sha256 is known; the original is being stored.
    RECEIVED = "received"
    COMPLETE = "complete"
    FAILED = "failed"


class Upload(Base):
    """A resumable (tus) upload: its bytes are spooled under uploads_dir until the last one arrives."""

    __tablename__ = "upload"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    created_by_id: Mapped[str] = mapped_column(ForeignKey("user_account.id"), index=True)
    length: Mapped[int] = mapped_column(BigInteger)
    # Bytes received and acknowledged; the spool file may hold more after a crash (cut back).
    upload_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    # The Upload-Metadata header as sent, echoed back by HEAD.
    upload_metadata: Mapped[str] = mapped_column(Text, default="")
    original_name: Mapped[str] = mapped_column(String(1024))
    relative_path: Mapped[str | None] = mapped_column(String(4096))
    group_key: Mapped[str | None] = mapped_column(String(300))
    declared_sha256: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[UploadStatus] = mapped_column(
        _enum(UploadStatus, "upload_status"), default=UploadStatus.RECEIVING
    )
    error: Mapped[str | None] = mapped_column(Text)
    file_id: Mapped[str | None] = mapped_column(ForeignKey("file.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("job.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    completed_at: Mapped[datetime | None]


class ReplicaPending(Base):
    """A change a replica missed (it was down or failed): the to-do list that catches it up.

    One row per replica and key; a later miss of the same key replaces what the row asks for.
    """

    __tablename__ = "replica_pending"
    __table_args__ = (UniqueConstraint("store_url", "key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    store_url: Mapped[str] = mapped_column(String(1000))
    key: Mapped[str] = mapped_column(String(1024))
    # What the replica must end up holding; deleted means it must not hold the key at all.
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImageFixity(Base):
    """Catalogue totals of an image's checksum manifest; the manifest object lists every object."""

    __tablename__ = "image_fixity"

    image_id: Mapped[str] = mapped_column(
        ForeignKey("image.id", ondelete="CASCADE"), primary_key=True
    )
    manifest_key: Mapped[str] = mapped_column(String(300))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest_size: Mapped[int] = mapped_column(BigInteger)
    object_count: Mapped[int] = mapped_column(BigInteger)
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScrubStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ScrubRun(Base):
    """One scrub: which copies it checked, what it found and mended, for admins to review."""

    __tablename__ = "scrub_run"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # cli, schedule or api
    trigger: Mapped[str] = mapped_column(String(16))
    repair: Mapped[bool] = mapped_column(default=False)
    # Limited to one image; not a foreign key, so the record outlives the image.
    image_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[ScrubStatus] = mapped_column(
        _enum(ScrubStatus, "scrub_status"), default=ScrubStatus.RUNNING
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    objects: Mapped[int] = mapped_column(BigInteger, default=0)
    copies: Mapped[int] = mapped_column(BigInteger, default=0)
    ok: Mapped[int] = mapped_column(BigInteger, default=0)
    missing: Mapped[int] = mapped_column(BigInteger, default=0)
    corrupt: Mapped[int] = mapped_column(BigInteger, default=0)
    unreachable: Mapped[int] = mapped_column(BigInteger, default=0)
    repaired: Mapped[int] = mapped_column(BigInteger, default=0)
    unrecoverable: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    # The first problems found (capped), each {key, store, state, repaired, error}.
    problems: Mapped[list[Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
