"""The visibility rules of access.py beyond projects: organisations, users, the audit log, uploads, metrics, uploading."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from allmicro_data import directory
from allmicro_data.access import (
    Caller,
    Use,
    get_visible,
    may_read_metrics,
    may_upload,
    scoped,
    sees_every_user,
)
from allmicro_data.audit import AuditQuery, record, search_events
from allmicro_data.catalogue.models import (
    AccessToken,
    AuditEvent,
    Organisation,
    ProjectMembership,
    Role,
    Upload,
    User,
    utcnow,
)
from allmicro_data.errors import Forbidden, NotFound


@pytest.fixture
def directory_rows(services: Any) -> tuple[Any, dict[str, Any]]:
    """Two organisations; an admin, a manager and a viewer of one project, a stranger; an
    upload by the viewer; audit events in the managed project, in another one and in none."""
    with services.session() as session:
        lab = directory.create_organisation(session, name="Lab", kind="partner")
        acme = directory.create_organisation(session, name="Acme", kind="company")
        users = {
            name: directory.create_user(
                session,
                email=f"{name}@example.org",
                organisation_id=(acme if name == "stranger" else lab).id,
                password=None,
                is_admin=name == "admin",
            )
            for name in ("admin", "manager", "viewer", "stranger")
        }
        managed = directory.create_project(session, name="Managed")
        other = directory.create_project(session, name="Other")
        directory.add_membership(
            session, project_id=managed.id, user_id=users["manager"].id, role="manager"
        )
        directory.add_membership(
            session, project_id=managed.id, user_id=users["viewer"].id, role="viewer"
        )
        dataset = directory.create_dataset(session, project_id=managed.id, name="d")
        upload = Upload(
            dataset_id=dataset.id,
            created_by_id=users["viewer"].id,
            length=1,
            original_name="a.tif",
            expires_at=utcnow() + timedelta(hours=1),
        )
        session.add(upload)
        for action, project_id in (("in.managed", managed.id), ("in.other", other.id)):
            record(session, action, project_id=project_id)
        record(session, "login")
        session.flush()
        ids = {
            "lab": lab.id,
            "acme": acme.id,
            "upload": upload.id,
            **{f"{name}_id": user.id for name, user in users.items()},
            **{
                f"{name}:{scope}": Caller.for_user(user, scope=scope)
                for name, user in users.items()
                for scope in ("all", "read", "upload")
            },
        }
    return services, ids


def _ids(session: Any, model: Any, caller: Caller, use: Use = Use.READ) -> set[str]:
    return set(session.scalars(scoped(select(model.id), model, caller, use)))


def test_admins_see_every_organisation_and_others_only_their_own(
    directory_rows: tuple[Any, dict[str, Any]],
) -> None:
    services, ids = directory_rows
    with services.session() as session:
        assert _ids(session, Organisation, ids["admin:all"]) == {ids["lab"], ids["acme"]}
        # An admin's personal token carries no admin rights.
        for who in ("admin:read", "manager:all", "viewer:read"):
            assert _ids(session, Organisation, ids[who]) == {ids["lab"]}
        assert get_visible(session, ids["stranger:all"], Organisation, ids["acme"]).name == "Acme"
        with pytest.raises(NotFound, match=f"organisation {ids['lab']} not found"):
            get_visible(session, ids["stranger:all"], Organisation, ids["lab"])
        with pytest.raises(Forbidden):
            _ids(session, Organisation, ids["viewer:upload"])


def test_admins_see_every_user_and_others_only_themselves(
    directory_rows: tuple[Any, dict[str, Any]],
) -> None:
    services, ids = directory_rows
    everyone = {ids[f"{name}_id"] for name in ("admin", "manager", "viewer", "stranger")}
    with services.session() as session:
        assert sees_every_user(ids["admin:all"])
        assert _ids(session, User, ids["admin:all"]) == everyone
        for who in ("admin:read", "manager:all", "viewer:read"):
            assert not sees_every_user(ids[who])
            assert _ids(session, User, ids[who]) == {ids[who.split(":")[0] + "_id"]}
        with pytest.raises(NotFound, match=f"user {ids['viewer_id']} not found"):
            get_visible(session, ids["manager:all"], User, ids["viewer_id"])
        with pytest.raises(Forbidden):
            _ids(session, User, ids["admin:upload"])


def test_audit_events_are_all_for_admins_their_projects_for_managers_none_for_tokens(
    directory_rows: tuple[Any, dict[str, Any]],
) -> None:
    services, ids = directory_rows

    def actions(who: str) -> set[str]:
        with services.session() as session:
            return {e.action for e in search_events(session, ids[who], AuditQuery()).items}

    assert actions("admin:all") == {"in.managed", "in.other", "login"}
    assert actions("manager:all") == {"in.managed"}
    for who in ("viewer:all", "stranger:all", "admin:read", "manager:read"):
        assert actions(who) == set()
    with pytest.raises(Forbidden), services.session() as session:
        session.scalars(scoped(select(AuditEvent), AuditEvent, ids["admin:upload"])).all()


def test_an_upload_is_visible_to_its_creator_alone_whatever_the_credential(
    directory_rows: tuple[Any, dict[str, Any]],
) -> None:
    services, ids = directory_rows
    with services.session() as session:
        for who in ("viewer:all", "viewer:read", "viewer:upload"):
            assert _ids(session, Upload, ids[who], Use.SEE) == {ids["upload"]}
        # Not even an admin resumes or ends someone else's upload.
        for who in ("admin:all", "manager:all", "stranger:upload"):
            assert _ids(session, Upload, ids[who], Use.SEE) == set()
            with pytest.raises(NotFound, match=f"upload {ids['upload']} not found"):
                get_visible(session, ids[who], Upload, ids["upload"], Use.UPLOAD)


def test_metrics_are_for_admins_and_an_active_admins_read_token(
    directory_rows: tuple[Any, dict[str, Any]],
) -> None:
    services, ids = directory_rows
    with services.session() as session:
        assert may_read_metrics(session, ids["admin:all"])
        assert may_read_metrics(session, ids["admin:read"])
        for who in ("admin:upload", "manager:all", "manager:read", "stranger:all"):
            assert not may_read_metrics(session, ids[who]), who
        session.get(User, ids["admin_id"]).is_active = False
        session.flush()
        assert not may_read_metrics(session, ids["admin:read"])


def test_uploading_needs_a_contributor_role_and_a_credential_that_uploads(
    directory_rows: tuple[Any, dict[str, Any]],
) -> None:
    _, ids = directory_rows
    for role in (Role.CONTRIBUTOR, Role.MANAGER):
        assert may_upload(ids["viewer:all"], role)
        assert may_upload(ids["viewer:upload"], role)
        assert not may_upload(ids["viewer:read"], role)
    assert not may_upload(ids["viewer:all"], Role.VIEWER)
    assert not may_upload(ids["admin:all"], None)


def test_a_model_without_a_rule_is_refused_not_shown_unfiltered(
    directory_rows: tuple[Any, dict[str, Any]],
) -> None:
    _, ids = directory_rows
    for model in (AccessToken, ProjectMembership):
        with pytest.raises(TypeError, match="no access rule"):
            scoped(select(model), model, ids["admin:all"])
