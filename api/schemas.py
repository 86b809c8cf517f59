"""Pydantic models at the API edge; routes return these, never ORM objects."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    model_validator,
)
from sqlalchemy.orm import Session

from allmicro_data.acquisition import ACQUISITION_FIELDS, wall_clock
from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Image,
    Job,
    Organisation,
    Project,
    ProjectInvitation,
    ProjectMembership,
    User,
)
from allmicro_data.directory import Totals
from allmicro_data.names import check_name

# A name people give (project, dataset, organisation, token, share link, archive…): it ends up in
# lists, logs, CSV rows and Content-Disposition headers, so one line without control characters.
Name = Annotated[str, AfterValidator(check_name)]


class Health(BaseModel):
    status: str
    version: str
    database: str


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105
    expires_at: datetime | None = None


class OrganisationRef(BaseModel):
    id: str
    name: str
    kind: str


class MeOut(BaseModel):
    id: str
    email: str
    display_name: str
    is_admin: bool
    organisation: OrganisationRef


class ProjectIn(BaseModel):
    name: Name = Field(min_length=1, max_length=200)
    kind: str = Field(default="research", pattern="^(research|pilot)$")
    client_organisation_id: str | None = None
    description: str = Field(default="", max_length=20000)


class ProjectOut(BaseModel):
    id: str
    name: str
    kind: str
    description: str
    client_organisation_id: str | None
    created_at: datetime
    legal_hold: bool = Field(
        default=False, description="nothing of the project may be deleted or purged"
    )

    @classmethod
    def of(cls, p: Project) -> ProjectOut:
        return cls(
            id=p.id,
            name=p.name,
            kind=p.kind.value,
            description=p.description,
            client_organisation_id=p.client_organisation_id,
            created_at=p.created_at,
            legal_hold=p.legal_hold,
        )


class TotalsOut(BaseModel):
    datasets: int
    images: int
    files: int
    bytes: int

    @classmethod
    def of(cls, t: Totals) -> TotalsOut:
        return cls(datasets=t.datasets, images=t.images, files=t.files, bytes=t.bytes)


class ProjectDetailOut(ProjectOut):
    totals: TotalsOut
    role: str | None = Field(description="the caller's role (admins: manager)")
    quota_bytes: int | None = Field(
        default=None,
        description="bytes the project may hold (originals stored plus uploads under way); "
        "null: no quota. Shown to managers and admins",
    )
    used_bytes: int | None = Field(
        default=None,
        description="bytes of originals stored in the project plus those its unfinished "
        "uploads declared; shown to managers and admins (null for other roles)",
    )


class ProjectPatch(BaseModel):
    name: Name | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20000)
    quota_bytes: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="storage quota in bytes (global admins); null lifts it",
    )
    legal_hold: bool | None = Field(
        default=None, description="set or lift the legal hold (global admins)"
    )


class MembershipIn(BaseModel):
    """Exactly one of user_id, email or organisation_id."""

    user_id: str | None = None
    email: str | None = Field(default=None, max_length=320)
    organisation_id: str | None = None
    role: str = Field(pattern="^(viewer|contributor|manager)$")

    @model_validator(mode="after")
    def _one_member(self) -> MembershipIn:
        given = [v for v in (self.user_id, self.email, self.organisation_id) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of user_id, email, organisation_id")
        return self


class MembershipOut(BaseModel):
    id: str
    project_id: str
    role: str
    user_id: str | None
    user_email: str | None
    organisation_id: str | None
    organisation_name: str | None
    created_at: datetime

    @classmethod
    def of(cls, session: Session, m: ProjectMembership) -> MembershipOut:
        user = session.get(User, m.user_id) if m.user_id else None
        org = session.get(Organisation, m.organisation_id) if m.organisation_id else None
        return cls(
            id=m.id,
            project_id=m.project_id,
            role=m.role.value,
            user_id=m.user_id,
            user_email=user.email if user else None,
            organisation_id=m.organisation_id,
            organisation_name=org.name if org else None,
            created_at=m.created_at,
        )


class InvitationOut(BaseModel):
    """A role offered to an e-mail address; it takes effect when that user is created or next
    signs in. Answered alike whether or not the address has an account."""

    id: str
    project_id: str
    email: str
    role: str
    created_at: datetime

    @classmethod
    def of(cls, invitation: ProjectInvitation) -> InvitationOut:
        return cls(
            id=invitation.id,
            project_id=invitation.project_id,
            email=invitation.email,
            role=invitation.role.value,
            created_at=invitation.created_at,
        )


class DatasetIn(BaseModel):
    name: Name = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=20000)


class DatasetOut(BaseModel):
    id: str
    project_id: str
    name: str
    description: str
    created_at: datetime

    @classmethod
    def of(cls, d: Dataset) -> DatasetOut:
        return cls(
            id=d.id,
            project_id=d.project_id,
            name=d.name,
            description=d.description,
            created_at=d.created_at,
        )


class PairOut(BaseModel):
    key: str
    value: str


class DatasetDetailOut(DatasetOut):
    totals: TotalsOut
    tags: list[str] = Field(default_factory=list)
    annotations: list[PairOut] = Field(default_factory=list, description="key-value pairs")


class DatasetPatch(BaseModel):
    name: Name | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20000)


class PixelSizeOut(BaseModel):
    x: float | None
    y: float | None
    z: float | None


class ChannelOut(BaseModel):
    name: str | None = None
    excitation_wavelength: float | None = None
    emission_wavelength: float | None = None
    color: str | None = Field(
        default=None, description="display colour the file gives the channel, RRGGBB"
    )


# An instant (RFC 3339, with its offset), or the instrument's wall-clock time without one when
# acquired_at_local is true: JSON Schema's date-time format requires an offset, so say both.
_ACQUIRED_AT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "format": "date-time"},
            {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$"},
            {"type": "null"},
        ],
        "description": "when the image was acquired; without an offset when acquired_at_local",
    }
)


def _acquisition_out() -> type[BaseModel]:
    """The API's acquisition object: one field per entry of ACQUISITION_FIELDS, then channels."""
    definitions: dict[str, Any] = {}
    for f in ACQUISITION_FIELDS:
        definitions[f.name] = (f.kind | None, Field(description=f.unit))
        if f.name == "acquired_at":
            definitions[f.name] = (Annotated[datetime | None, _ACQUIRED_AT_SCHEMA], ...)
            definitions["acquired_at_local"] = (
                bool | None,
                Field(
                    default=None,
                    description="true when the instrument wrote its local wall-clock time "
                    "without a zone: acquired_at is then that time, with no offset",
                ),
            )
    definitions["channels"] = (list[ChannelOut], ...)
    return create_model(
        "AcquisitionOut",
        __doc__="Normalised acquisition fields in SI units; null where the file does not say.",
        __module__=__name__,
        **definitions,
    )


if TYPE_CHECKING:
    # What type checkers see; the fields of the table are read by name (getattr) elsewhere.
    class AcquisitionOut(BaseModel):
        channels: list[ChannelOut]

else:
    AcquisitionOut = _acquisition_out()


class ImageOut(BaseModel):
    id: str
    dataset_id: str
    name: str
    description: str = ""
    format: str | None
    axes: str | None
    shape: list[int] | None
    dtype: str | None
    pixel_size: PixelSizeOut = Field(description="metres per pixel")
    acquisition: AcquisitionOut
    levels: int | None
    ngff_version: str | None
    warnings: list[str]
    created_at: datetime

    @classmethod
    def of(cls, i: Image) -> ImageOut:
        return cls(**_image_fields(i))


class ImageDetailOut(ImageOut):
    vendor: dict[str, Any] = Field(description="every vendor key, as the file has it")
    file_ids: list[str]
    tags: list[str] = Field(default_factory=list)
    annotations: list[PairOut] = Field(default_factory=list, description="key-value pairs")

    @classmethod
    def detail(cls, i: Image, file_ids: list[str]) -> ImageDetailOut:
        return cls(**_image_fields(i), vendor=i.vendor_metadata or {}, file_ids=file_ids)


def _image_fields(i: Image) -> dict[str, Any]:
    return {
        "id": i.id,
        "dataset_id": i.dataset_id,
        "name": i.name,
        "description": i.description or "",
        "format": i.format,
        "axes": i.axes,
        "shape": i.shape,
        "dtype": i.dtype,
        "pixel_size": PixelSizeOut(x=i.pixel_size_x, y=i.pixel_size_y, z=i.pixel_size_z),
        "acquisition": AcquisitionOut(
            **{
                **{f.name: getattr(i, f.name) for f in ACQUISITION_FIELDS},
                # A local time goes out as it was written, without an offset (zone unknown).
                "acquired_at": wall_clock(i.acquired_at, i.acquired_at_local),
                "acquired_at_local": i.acquired_at_local,
            },
            channels=[ChannelOut(**c) for c in (i.channels or [])],
        ),
        "levels": i.levels,
        "ngff_version": i.ngff_version,
        "warnings": [str(w) for w in (i.warnings or [])],
        "created_at": i.created_at,
    }


class FileOut(BaseModel):
    id: str
    dataset_id: str
    original_name: str
    relative_path: str | None
    group_key: str | None
    size: int
    sha256: str
    format: str | None
    uploaded_at: datetime

    @classmethod
    def of(cls, f: File) -> FileOut:
        return cls(
            id=f.id,
            dataset_id=f.dataset_id,
            original_name=f.original_name,
            relative_path=f.relative_path,
            group_key=f.group_key,
            size=f.size,
            sha256=f.sha256,
            format=f.format,
            uploaded_at=f.uploaded_at,
        )


class UploadResult(BaseModel):
    file_id: str
    job_id: str | None
    already_present: bool = False


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    status: str
    dataset_id: str | None
    file_id: str | None
    attempts: int
    max_attempts: int
    progress: float = Field(description="percent")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    image_ids: list[str] = Field(default_factory=list, description="images ready so far")

    @classmethod
    def of(cls, j: Job, image_ids: list[str] | None = None) -> JobOut:
        return cls(
            id=j.id,
            kind=j.kind.value,
            status=j.status.value,
            dataset_id=j.dataset_id,
            file_id=j.file_id,
            attempts=j.attempts,
            max_attempts=j.max_attempts,
            progress=j.progress,
            error=j.error,
            created_at=j.created_at,
            started_at=j.started_at,
            finished_at=j.finished_at,
            image_ids=image_ids or [],
        )


def me_of(user: User) -> MeOut:
    org = user.organisation
    return MeOut(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        is_admin=user.is_admin,
        organisation=OrganisationRef(id=org.id, name=org.name, kind=org.kind.value),
    )
