"""initial catalogue

Revision ID: 0001
Revises:
Create Date: 2026-11-23 13:33:34.794351
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_user_id", sa.String(length=36), nullable=True),
        sa.Column("actor", sa.String(length=320), nullable=True),
        sa.Column("object_type", sa.String(length=32), nullable=True),
        sa.Column("object_id", sa.String(length=64), nullable=True),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_action"), ["action"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_event_actor_user_id"), ["actor_user_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_event_at"), ["at"], unique=False)
        batch_op.create_index("ix_audit_event_project_at", ["project_id", "at"], unique=False)

    op.create_table(
        "organisation",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "lead_partner",
                "partner",
                "company",
                name="organisation_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisation")),
        sa.UniqueConstraint("name", name=op.f("uq_organisation_name")),
    )
    op.create_table(
        "project",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "research",
                "pilot",
                name="project_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("client_organisation_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind = 'research' OR client_organisation_id IS NOT NULL",
            name=op.f("ck_project_pilot_has_client"),
        ),
        sa.ForeignKeyConstraint(
            ["client_organisation_id"],
            ["organisation.id"],
            name=op.f("fk_project_client_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project")),
        sa.UniqueConstraint("name", name=op.f("uq_project_name")),
    )
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_project_client_organisation_id"),
            ["client_organisation_id"],
            unique=False,
        )

    op.create_table(
        "user_account",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("organisation_id", sa.String(length=36), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_user_account_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_account")),
        sa.UniqueConstraint("email", name=op.f("uq_user_account_email")),
    )
    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_user_account_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "access_token",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "session",
                "bearer",
                "personal",
                name="token_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_access_token_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_access_token_token_hash")),
    )
    with op.batch_alter_table("access_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_token_user_id"), ["user_id"], unique=False)

    op.create_table(
        "dataset",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["user_account.id"],
            name=op.f("fk_dataset_created_by_id_user_account"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_dataset_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset")),
        sa.UniqueConstraint("project_id", "name", name="uq_dataset_project_name"),
    )
    with op.batch_alter_table("dataset", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dataset_project_id"), ["project_id"], unique=False)

    op.create_table(
        "project_membership",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("organisation_id", sa.String(length=36), nullable=True),
        sa.Column(
            "role",
            sa.Enum(
                "viewer",
                "contributor",
                "manager",
                name="project_role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (organisation_id IS NULL)",
            name=op.f("ck_project_membership_user_or_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_project_membership_organisation_id_organisation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_project_membership_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_project_membership_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_membership")),
        sa.UniqueConstraint("project_id", "organisation_id", name="uq_membership_project_org"),
        sa.UniqueConstraint("project_id", "user_id", name="uq_membership_project_user"),
    )
    with op.batch_alter_table("project_membership", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_project_membership_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_project_membership_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_project_membership_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "file",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("storage_key", sa.String(length=300), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("original_name", sa.String(length=1024), nullable=False),
        sa.Column("relative_path", sa.String(length=4096), nullable=True),
        sa.Column("group_key", sa.String(length=300), nullable=True),
        sa.Column("format", sa.String(length=100), nullable=True),
        sa.Column("uploaded_by_id", sa.String(length=36), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_file_dataset_id_dataset")
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by_id"],
            ["user_account.id"],
            name=op.f("fk_file_uploaded_by_id_user_account"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file")),
    )
    with op.batch_alter_table("file", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_file_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index("ix_file_dataset_sha256", ["dataset_id", "sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_file_sha256"), ["sha256"], unique=False)

    op.create_table(
        "image",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("series_index", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "processing",
                "ready",
                "failed",
                name="image_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("format", sa.String(length=100), nullable=True),
        sa.Column("axes", sa.String(length=8), nullable=True),
        sa.Column("shape", sa.JSON(), nullable=True),
        sa.Column("dtype", sa.String(length=16), nullable=True),
        sa.Column("modality", sa.String(length=32), nullable=True),
        sa.Column("vendor", sa.String(length=100), nullable=True),
        sa.Column("instrument", sa.String(length=200), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("operator", sa.String(length=200), nullable=True),
        sa.Column("pixel_size_x", sa.Float(), nullable=True),
        sa.Column("pixel_size_y", sa.Float(), nullable=True),
        sa.Column("pixel_size_z", sa.Float(), nullable=True),
        sa.Column("accelerating_voltage", sa.Float(), nullable=True),
        sa.Column("magnification", sa.Float(), nullable=True),
        sa.Column("working_distance", sa.Float(), nullable=True),
        sa.Column("horizontal_field_width", sa.Float(), nullable=True),
        sa.Column("detector", sa.String(length=200), nullable=True),
        sa.Column("beam_current", sa.Float(), nullable=True),
        sa.Column("dwell_time", sa.Float(), nullable=True),
        sa.Column("exposure_time", sa.Float(), nullable=True),
        sa.Column("tilt_angle_deg", sa.Float(), nullable=True),
        sa.Column("camera_length", sa.Float(), nullable=True),
        sa.Column("objective", sa.String(length=200), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=True),
        sa.Column("vendor_metadata", sa.JSON(), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("pyramid_key", sa.String(length=300), nullable=True),
        sa.Column("ngff_version", sa.String(length=8), nullable=True),
        sa.Column("levels", sa.Integer(), nullable=True),
        sa.Column("ome_xml_key", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_image_dataset_id_dataset")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image")),
    )
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_acquired_at"), ["acquired_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index("ix_image_dataset_status", ["dataset_id", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_instrument"), ["instrument"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_modality"), ["modality"], unique=False)
        batch_op.create_index(
            "ix_image_modality_acquired", ["modality", "acquired_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_image_pixel_size_x"), ["pixel_size_x"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_vendor"), ["vendor"], unique=False)

    op.create_table(
        "image_file",
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["file_id"], ["file.id"], name=op.f("fk_image_file_file_id_file")),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_image_file_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "file_id", name=op.f("pk_image_file")),
    )
    with op.batch_alter_table("image_file", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_file_file_id"), ["file_id"], unique=False)

    op.create_table(
        "job",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "ingest", name="job_kind", native_enum=False, create_constraint=True, length=32
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                name="job_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("dataset_id", sa.String(length=36), nullable=True),
        sa.Column("file_id", sa.String(length=36), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["user_account.id"], name=op.f("fk_job_created_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_job_dataset_id_dataset")
        ),
        sa.ForeignKeyConstraint(["file_id"], ["file.id"], name=op.f("fk_job_file_id_file")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_file_id"), ["file_id"], unique=False)
        batch_op.create_index("ix_job_status_not_before", ["status", "not_before"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_status_not_before")
        batch_op.drop_index(batch_op.f("ix_job_file_id"))
        batch_op.drop_index(batch_op.f("ix_job_dataset_id"))

    op.drop_table("job")
    with op.batch_alter_table("image_file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_file_file_id"))

    op.drop_table("image_file")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_vendor"))
        batch_op.drop_index(batch_op.f("ix_image_pixel_size_x"))
        batch_op.drop_index("ix_image_modality_acquired")
        batch_op.drop_index(batch_op.f("ix_image_modality"))
        batch_op.drop_index(batch_op.f("ix_image_instrument"))
        batch_op.drop_index("ix_image_dataset_status")
        batch_op.drop_index(batch_op.f("ix_image_dataset_id"))
        batch_op.drop_index(batch_op.f("ix_image_acquired_at"))

    op.drop_table("image")
    with op.batch_alter_table("file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_file_sha256"))
        batch_op.drop_index("ix_file_dataset_sha256")
        batch_op.drop_index(batch_op.f("ix_file_dataset_id"))

    op.drop_table("file")
    with op.batch_alter_table("project_membership", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_membership_user_id"))
        batch_op.drop_index(batch_op.f("ix_project_membership_project_id"))
        batch_op.drop_index(batch_op.f("ix_project_membership_organisation_id"))

    op.drop_table("project_membership")
    with op.batch_alter_table("dataset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dataset_project_id"))

    op.drop_table("dataset")
    with op.batch_alter_table("access_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_token_user_id"))

    op.drop_table("access_token")
    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_account_organisation_id"))

    op.drop_table("user_account")
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_client_organisation_id"))

    op.drop_table("project")
    op.drop_table("organisation")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_project_at")
        batch_op.drop_index(batch_op.f("ix_audit_event_at"))
        batch_op.drop_index(batch_op.f("ix_audit_event_actor_user_id"))
        batch_op.drop_index(batch_op.f("ix_audit_event_action"))

    op.drop_table("audit_event")
