"""project_invitation: a role offered to an e-mail address, taken up when that user exists

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 16:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The type of project_membership.role (0001): the same roles, stored and checked the same way.
PROJECT_ROLE = sa.Enum(
    *("viewer", "contributor", "manager"),
    name="project_role",
    native_enum=False,
    create_constraint=True,
    length=32,
)


def upgrade() -> None:
    op.create_table(
        "project_invitation",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", PROJECT_ROLE, nullable=False),
        sa.Column("invited_by_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invited_by_id"],
            ["user_account.id"],
            name=op.f("fk_project_invitation_invited_by_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_project_invitation_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_invitation")),
        sa.UniqueConstraint("project_id", "email", name="uq_invitation_project_email"),
    )
    with op.batch_alter_table("project_invitation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_project_invitation_email"), ["email"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_project_invitation_project_id"), ["project_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("project_invitation")
