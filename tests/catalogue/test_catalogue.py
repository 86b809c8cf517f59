"""The catalogue schema on SQLite and PostgreSQL: migrations, constraints, time zones, scoping."""

from __future__ import annotations

import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from allmicro_data import directory
from allmicro_data.access import Caller, get_visible, project_role, require_role, scoped
from allmicro_data.catalogue.db import current_revision
from allmicro_data.catalogue.models import (
    POSTGRESQL_ONLY_INDEXES,
    Base,
    Dataset,
    Image,
    ImageStatus,
    Project,
    ProjectMembership,
    Role,
    User,
)
from allmicro_data.errors import Forbidden, Invalid, NotFound
from tests.conftest import ADMIN_PASSWORD


def test_migrations_create_exactly_the_models(services: Any) -> None:
    dialect = services.engine.dialect.name

    def same_dialect(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
        return not (
            type_ == "index" and dialect != "postgresql" and name in POSTGRESQL_ONLY_INDEXES
        )

    with services.engine.connect() as conn, warnings.catch_warnings():
        # Expression indexes cannot be reflected on SQLite; the name check below covers them.
        warnings.simplefilter("ignore")
        context = MigrationContext.configure(conn, opts={"include_object": same_dialect})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    assert current_revision(services.engine) is not None

    # Every index of the models exists under its name, expression indexes included.
    with services.engine.connect() as conn:
        if dialect == "sqlite":
            found = conn.scalars(
                text("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            ).all()
        else:
            found = conn.scalars(text("SELECT indexname FROM pg_indexes")).all()
    expected = {
        index.name
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if dialect == "postgresql" or index.name not in POSTGRESQL_ONLY_INDEXES
    }
    assert expected <= set(found)
    if dialect == "postgresql":
        assert "ix_image_ready_search_trgm" in found


def test_sqlite_runs_with_wal_and_foreign_keys(services: Any) -> None:
    if services.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    with services.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_foreign_keys_are_enforced(services: Any) -> None:
    with pytest.raises(IntegrityError), services.session() as session:
        session.add(Dataset(project_id="no-such-project", name="orphan"))
        session.flush()


def test_timestamps_come_back_in_utc(services: Any) -> None:
    acquired = datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=1)))
    with services.session() as session:
        org = directory.create_organisation(session, name="Elettra", kind="partner")
        project = directory.create_project(session, name="Beamtime")
        dataset = directory.create_dataset(session, project_id=project.id, name="d")
        image = Image(dataset_id=dataset.id, name="i", acquired_at=acquired)
        session.add(image)
        session.flush()
        image_id = image.id
        assert org.created_at.tzinfo is not None
    with services.session() as session:
        stored = session.get(Image, image_id)
        assert stored is not None
        assert stored.acquired_at == acquired
        assert stored.acquired_at.tzinfo is not None
        assert stored.acquired_at.utcoffset() == timedelta(0)


def test_pilot_projects_name_a_client_company(services: Any) -> None:
    with services.session() as session:
        partner = directory.create_organisation(session, name="UniTS", kind="partner")
        company = directory.create_organisation(session, name="Acme Coatings", kind="company")
        with pytest.raises(Invalid):
            directory.create_project(session, name="Pilot 1", kind="pilot")
        with pytest.raises(Invalid):
            directory.create_project(
                session, name="Pilot 1", kind="pilot", client_organisation_id=partner.id
            )
        pilot = directory.create_project(
            session, name="Pilot 1", kind="pilot", client_organisation_id=company.id
        )
        assert pilot.client_organisation_id == company.id
    # The database itself refuses a pilot without a client, whatever the code does.
    with pytest.raises(IntegrityError), services.session() as session:
        session.add(Project(name="Pilot 2", kind="pilot"))
        session.flush()


def test_membership_is_for_a_user_or_an_organisation_not_both(services: Any) -> None:
    with services.session() as session:
        org = directory.create_organisation(session, name="CNR-IOM", kind="partner")
        user = directory.create_user(
            session, email="a@cnr.example", organisation_id=org.id, password=None
        )
        project = directory.create_project(session, name="P")
        project_id, user_id, org_id = project.id, user.id, org.id
    with pytest.raises(IntegrityError), services.session() as session:
        session.add(
            ProjectMembership(
                project_id=project_id, user_id=user_id, organisation_id=org_id, role=Role.VIEWER
            )
        )
        session.flush()
    with pytest.raises(IntegrityError), services.session() as session:
        session.add(ProjectMembership(project_id=project_id, role=Role.VIEWER))
        session.flush()


def _caller(session: Any, email: str) -> Caller:
    user = session.scalars(select(User).where(User.email == email)).one()
    return Caller.for_user(user)


def test_scoping_follows_user_and_organisation_memberships(services: Any) -> None:
    with services.session() as session:
        units = directory.create_organisation(session, name="UniTS", kind="partner")
        acme = directory.create_organisation(session, name="Acme", kind="company")
        other = directory.create_organisation(session, name="Other Co", kind="company")
        for email, org in (
            ("direct@units.example", units),
            ("colleague@units.example", units),
            ("client@acme.example", acme),
            ("rival@other.example", other),
        ):
            directory.create_user(session, email=email, organisation_id=org.id, password=None)
        directory.create_user(
            session,
            email="root@lead.example",
            organisation_id=units.id,
            password=None,
            is_admin=True,
        )
        research = directory.create_project(session, name="Research")
        pilot = directory.create_project(
            session, name="Acme pilot", kind="pilot", client_organisation_id=acme.id
        )
        direct = directory.find_user(session, "direct@units.example")
        directory.add_membership(session, project_id=research.id, user_id=direct.id, role="manager")
        directory.add_membership(
            session, project_id=pilot.id, organisation_id=units.id, role="contributor"
        )
        directory.add_membership(
            session, project_id=pilot.id, organisation_id=acme.id, role="viewer"
        )
        ds = directory.create_dataset(session, project_id=pilot.id, name="results")
        ready = Image(dataset_id=ds.id, name="ready", status=ImageStatus.READY)
        pending = Image(dataset_id=ds.id, name="pending", status=ImageStatus.PROCESSING)
        session.add_all([ready, pending])
        session.flush()
        ids = {"research": research.id, "pilot": pilot.id, "ready": ready.id, "pending": pending.id}

    def visible_projects(email: str) -> set[str]:
        with services.session() as session:
            caller = _caller(session, email)
            return set(session.scalars(scoped(select(Project.name), Project, caller)))

    assert visible_projects("direct@units.example") == {"Research", "Acme pilot"}
    assert visible_projects("colleague@units.example") == {"Acme pilot"}
    assert visible_projects("client@acme.example") == {"Acme pilot"}
    assert visible_projects("rival@other.example") == set()
    assert visible_projects("root@lead.example") == {"Research", "Acme pilot"}

    with services.session() as session:
        client = _caller(session, "client@acme.example")
        rival = _caller(session, "rival@other.example")
        assert get_visible(session, client, Image, ids["ready"]).name == "ready"
        # Images still processing are invisible, exactly like ones that do not exist.
        with pytest.raises(NotFound):
            get_visible(session, client, Image, ids["pending"])
        with pytest.raises(NotFound):
            get_visible(session, rival, Image, ids["ready"])
        with pytest.raises(NotFound):
            get_visible(session, client, Project, ids["research"])
        assert project_role(session, client, ids["pilot"]) is Role.VIEWER
        with pytest.raises(Forbidden):
            require_role(session, client, ids["pilot"], Role.CONTRIBUTOR)
        with pytest.raises(NotFound):
            require_role(session, rival, ids["pilot"], Role.VIEWER)
        direct = _caller(session, "direct@units.example")
        # The strongest of a user's direct and organisation memberships counts.
        assert project_role(session, direct, ids["pilot"]) is Role.CONTRIBUTOR
        assert project_role(session, direct, ids["research"]) is Role.MANAGER


def test_naive_datetimes_are_refused(services: Any) -> None:
    with pytest.raises(Exception, match="naive"), services.session() as session:
        org = directory.create_organisation(session, name="X", kind="partner")
        org.created_at = datetime(2026, 1, 1)
        session.flush()


def test_created_at_defaults_to_now_utc(services: Any) -> None:
    before = datetime.now(UTC)
    with services.session() as session:
        org = directory.create_organisation(session, name="Y", kind="partner")
    assert (
        before - timedelta(seconds=5) <= org.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    )


def test_postgresql_pool_follows_the_settings(settings: Any) -> None:
    import sqlalchemy.exc
    from sqlalchemy.pool import QueuePool

    from allmicro_data.services import Services

    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite needs no pool")
    tuned = settings.model_copy(
        update={"db_pool_size": 3, "db_max_overflow": 1, "db_pool_timeout": 0.5}
    )
    services = Services.from_settings(tuned)
    try:
        pool = services.engine.pool
        assert isinstance(pool, QueuePool)
        held = [services.engine.connect() for _ in range(4)]  # pool size + overflow
        # A fifth caller waits pool_timeout, then gets a clear error instead of hanging.
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            services.engine.connect()
        for conn in held:
            conn.close()
        assert pool.size() == 3
    finally:
        services.close()


def test_api_answers_503_when_every_connection_is_busy(settings: Any) -> None:
    from fastapi.testclient import TestClient

    from allmicro_data.api.app import create_app

    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite needs no pool")
    tuned = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 0.2, "job_workers": 0}
    )
    with TestClient(create_app(tuned)) as client:
        signed_in = client.post(
            "/api/auth/token",
            data={"username": tuned.admin_email, "password": ADMIN_PASSWORD},
        )
        auth = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        engine = client.app.state.services.engine  # type: ignore[attr-defined]
        with engine.connect():  # the only connection of the pool
            busy = client.get("/api/projects", headers=auth)
        assert busy.status_code == 503
        assert busy.headers["content-type"] == "application/problem+json"
        assert busy.headers["retry-after"] == "2"
        assert busy.json()["title"] == "Catalogue unavailable"
        assert client.get("/api/projects", headers=auth).status_code == 200


_MIGRATE_WITH_SERVER_LOGGING = """
import sys
from allmicro_data.catalogue.db import upgrade
from allmicro_data.logs import configure_logging
configure_logging("INFO")
upgrade(sys.argv[1])
"""


def test_a_migration_logs_its_steps_and_not_alembics_plugins(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MIGRATE_WITH_SERVER_LOGGING, f"sqlite:///{tmp_path / 'c.db'}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "Running upgrade" in done.stderr
    assert "alembic.runtime.plugins" not in done.stderr
