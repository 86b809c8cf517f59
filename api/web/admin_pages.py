"""The admin area (/admin): organisations, users and their tokens, project memberships, the audit
log, jobs, storage and usage, for global admins; managers see their projects' part.

Like api.web.pages, every page calls the JSON API's own route functions, so a page never shows or
does what the API would refuse the same caller; forms post here and are redirected back (303).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from allmicro_data.access import Caller, administered, may_administer
from allmicro_data.api.deps import OptionalCallerDep, ServicesDep, SessionDep
from allmicro_data.api.routers import admin, audit, catalogue, files, storage_admin
from allmicro_data.api.schemas import JobOut, MembershipIn, ProjectOut, ProjectPatch
from allmicro_data.api.web.forms import checked, see_other, signed_in
from allmicro_data.api.web.pages import html_errors, local_path, render, to_login
from allmicro_data.catalogue.models import Dataset, Project
from allmicro_data.errors import DomainError, Invalid, NotFound, Unauthorised
from allmicro_data.paging import Window
from allmicro_data.services import Services

router = APIRouter(include_in_schema=False)
EVERYTHING = Window(limit=1000)
AUDIT_PAGE = 100
# Sections of the area: (path, msgid, admins only).
SECTIONS = (
    ("/admin/organisations", "Organisations", True),
    ("/admin/users", "Users", True),
    ("/admin/projects", "Projects and members", False),
    ("/admin/audit", "Audit log", False),
    ("/admin/jobs", "Jobs", False),
    ("/admin/storage", "Storage", True),
    ("/admin/usage", "Usage and quotas", False),
)
GIB = 1024**3


def _caller(request: Request, session: Session, caller: Caller | None, *, admin: bool) -> Caller:
    """The caller if the area (or, with admin, its admins-only part) is theirs; 404 otherwise,
    as for a page that does not exist."""
    caller = signed_in(caller)
    if not may_administer(session, caller) or (admin and not caller.is_admin):
        raise NotFound("no such page")
    return caller


def _page(
    request: Request,
    services: Services,
    caller: Caller,
    template: str,
    section: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> HTMLResponse:
    shown = [
        (path, label) for path, label, only_admins in SECTIONS if caller.is_admin or not only_admins
    ]
    return render(
        request,
        services,
        template,
        {
            "sections": shown,
            "section": section,
            "is_admin": caller.is_admin,
            "done": request.query_params.get("done"),
            "error": None,
            **context,
        },
        caller=caller,
        status=status,
    )


def _projects(session: Session, caller: Caller) -> list[ProjectOut]:
    """The projects whose part of the area the caller sees."""
    rows = session.scalars(administered(select(Project), Project, caller).order_by(Project.name))
    return [ProjectOut.of(p) for p in rows]


# ------------------------------------------------------------------ overview


@router.get("/admin", response_class=HTMLResponse)
@html_errors
def overview(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=False)
    failed = catalogue.list_jobs(
        caller=who, session=session, window=Window(limit=1), status="failed", project_id=None
    )
    running = catalogue.list_jobs(
        caller=who, session=session, window=Window(limit=1), status="running", project_id=None
    )
    counts: dict[str, int] = {
        "projects": len(_projects(session, who)),
        "failed": failed.total,
        "running": running.total,
    }
    if who.is_admin:
        counts["organisations"] = admin.list_organisations(
            caller=who, session=session, window=Window(limit=1)
        ).total
        counts["users"] = admin.list_users(
            caller=who, session=session, window=Window(limit=1), organisation_id=None
        ).total
    return _page(request, services, who, "admin/overview.html", "/admin", {"counts": counts})


# ------------------------------------------------------------------ organisations

KINDS = ("lead_partner", "partner", "company")


def _organisations_page(
    request: Request, services: Services, session: Session, caller: Caller, **extra: Any
) -> HTMLResponse:
    organisations = admin.list_organisations(caller=caller, session=session, window=EVERYTHING)
    status = extra.pop("status", 200)
    return _page(
        request,
        services,
        caller,
        "admin/organisations.html",
        "/admin/organisations",
        {"organisations": organisations.items, "kinds": KINDS, "form": {}, **extra},
        status=status,
    )


@router.get("/admin/organisations", response_class=HTMLResponse)
@html_errors
def organisations_page(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=True)
    return _organisations_page(request, services, session, who)


@router.post("/admin/organisations", response_class=HTMLResponse)
@html_errors
def organisation_create(
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    name: Annotated[str, Form(max_length=300)] = "",
    kind: Annotated[str, Form(max_length=40)] = "partner",
    country: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    who = _caller(request, session, caller, admin=True)
    try:
        made = admin.create_organisation(
            body=checked(admin.OrganisationIn, name=name, kind=kind, country=country or None),
            request=request,
            caller=who,
            session=session,
        )
    except DomainError as exc:
        session.rollback()
        form = {"name": name, "kind": kind, "country": country}
        return _organisations_page(
            request, services, session, who, error=str(exc), form=form, status=exc.status
        )
    return see_other(f"/admin/organisations/{made.id}", {"done": "created"})


@router.get("/admin/organisations/{organisation_id}", response_class=HTMLResponse)
@html_errors
def organisation_page(
    organisation_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=True)
    organisation = admin.get_organisation(
        organisation_id=organisation_id, caller=who, session=session
    )
    users = admin.list_users(
        caller=who, session=session, window=EVERYTHING, organisation_id=organisation.id
    )
    return _page(
        request,
        services,
        who,
        "admin/organisation.html",
        "/admin/organisations",
        {"organisation": organisation, "users": users.items, "kinds": KINDS},
    )


@router.post("/admin/organisations/{organisation_id}", response_class=HTMLResponse)
@html_errors
def organisation_update(
    organisation_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    name: Annotated[str, Form(max_length=300)] = "",
    kind: Annotated[str, Form(max_length=40)] = "partner",
    country: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    who = _caller(request, session, caller, admin=True)
    admin.update_organisation(
        organisation_id=organisation_id,
        body=checked(admin.OrganisationPatch, name=name, kind=kind, country=country or None),
        request=request,
        caller=who,
        session=session,
    )
    return see_other(f"/admin/organisations/{organisation_id}", {"done": "saved"})


# ------------------------------------------------------------------ users


def _users_page(
    request: Request, services: Services, session: Session, caller: Caller, **extra: Any
) -> HTMLResponse:
    users = admin.list_users(
        caller=caller, session=session, window=EVERYTHING, organisation_id=None
    )
    organisations = admin.list_organisations(caller=caller, session=session, window=EVERYTHING)
    status = extra.pop("status", 200)
    return _page(
        request,
        services,
        caller,
        "admin/users.html",
        "/admin/users",
        {
            "users": users.items,
            "organisations": organisations.items,
            "names": {o.id: o.name for o in organisations.items},
            "form": {},
            **extra,
        },
        status=status,
    )


@router.get("/admin/users", response_class=HTMLResponse)
@html_errors
def users_page(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=True)
    return _users_page(request, services, session, who)


@router.post("/admin/users", response_class=HTMLResponse)
@html_errors
def user_create(
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    email: Annotated[str, Form(max_length=400)] = "",
    display_name: Annotated[str, Form(max_length=300)] = "",
    organisation_id: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    is_admin: Annotated[bool, Form()] = False,
) -> Response:
    who = _caller(request, session, caller, admin=True)
    try:
        made = admin.create_user(
            body=checked(
                admin.UserIn,
                email=email,
                organisation_id=organisation_id,
                display_name=display_name,
                password=password,
                is_admin=is_admin,
            ),
            request=request,
            caller=who,
            session=session,
        )
    except DomainError as exc:
        session.rollback()
        form = {"email": email, "display_name": display_name, "organisation_id": organisation_id}
        return _users_page(
            request, services, session, who, error=str(exc), form=form, status=exc.status
        )
    return see_other(f"/admin/users/{made.id}", {"done": "created"})


def _user_page(
    user_id: str,
    request: Request,
    services: Services,
    session: Session,
    caller: Caller,
    **extra: Any,
) -> HTMLResponse:
    user = admin.get_user(user_id=user_id, caller=caller, session=session)
    organisation = admin.get_organisation(
        organisation_id=user.organisation_id, caller=caller, session=session
    )
    tokens = admin.list_user_tokens(user_id=user.id, caller=caller, session=session)
    status = extra.pop("status", 200)
    return _page(
        request,
        services,
        caller,
        "admin/user.html",
        "/admin/users",
        {"user": user, "organisation": organisation, "tokens": tokens, **extra},
        status=status,
    )


@router.get("/admin/users/{user_id}", response_class=HTMLResponse)
@html_errors
def user_page(
    user_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=True)
    return _user_page(user_id, request, services, session, who)


@router.post("/admin/users/{user_id}", response_class=HTMLResponse)
@html_errors
def user_update(
    user_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    change: Annotated[str, Form(pattern="^(enable|disable|grant_admin|revoke_admin)$")],
) -> Response:
    """One change per button: enable or disable the account, grant or take global admin."""
    who = _caller(request, session, caller, admin=True)
    if user_id == who.user_id and change in ("disable", "revoke_admin"):
        raise Invalid("you cannot disable your own account or take your own admin rights")
    patch = {
        "enable": {"is_active": True},
        "disable": {"is_active": False},
        "grant_admin": {"is_admin": True},
        "revoke_admin": {"is_admin": False},
    }[change]
    admin.update_user(
        user_id=user_id,
        body=admin.UserPatch(**patch),
        request=request,
        caller=who,
        session=session,
    )
    return see_other(f"/admin/users/{user_id}", {"done": change})


@router.post("/admin/users/{user_id}/password", response_class=HTMLResponse)
@html_errors
def user_password(
    user_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    new_password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    who = _caller(request, session, caller, admin=True)
    try:
        admin.admin_reset_password(
            user_id=user_id,
            body=checked(admin.PasswordReset, new_password=new_password),
            request=request,
            caller=who,
            session=session,
        )
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        session.rollback()
        return _user_page(
            user_id, request, services, session, who, error=str(exc), status=exc.status
        )
    return see_other(f"/admin/users/{user_id}", {"done": "password"})


@router.post("/admin/users/{user_id}/tokens/{token_id}/revoke", response_class=HTMLResponse)
@html_errors
def user_token_revoke(
    user_id: str,
    token_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    who = _caller(request, session, caller, admin=True)
    admin.revoke_user_token(
        user_id=user_id, token_id=token_id, request=request, caller=who, session=session
    )
    return see_other(f"/admin/users/{user_id}", {"done": "revoked"})


# ------------------------------------------------------------------ projects and members

ROLES = ("viewer", "contributor", "manager")


@router.get("/admin/projects", response_class=HTMLResponse)
@html_errors
def projects_page(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=False)
    figures = admin.usage(caller=who, session=session, months=1)
    return _page(
        request,
        services,
        who,
        "admin/projects.html",
        "/admin/projects",
        {"projects": figures.projects},
    )


def _project_page(
    project_id: str,
    request: Request,
    services: Services,
    session: Session,
    caller: Caller,
    **extra: Any,
) -> HTMLResponse:
    if project_id not in {p.id for p in _projects(session, caller)}:
        raise NotFound(f"project {project_id} not found")
    project = catalogue.get_project(project_id=project_id, caller=caller, session=session)
    members = catalogue.list_members(project_id=project.id, caller=caller, session=session)
    invitations = catalogue.list_invitations(project_id=project.id, caller=caller, session=session)
    organisations = admin.list_organisations(caller=caller, session=session, window=EVERYTHING)
    status = extra.pop("status", 200)
    return _page(
        request,
        services,
        caller,
        "admin/project.html",
        "/admin/projects",
        {
            "project": project,
            "members": members,
            "invitations": invitations,
            "organisations": organisations.items,
            "roles": ROLES,
            "quota_gib": None if project.quota_bytes is None else project.quota_bytes / GIB,
            "form": {},
            **extra,
        },
        status=status,
    )


@router.get("/admin/projects/{project_id}", response_class=HTMLResponse)
@html_errors
def project_page(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=False)
    return _project_page(project_id, request, services, session, who)


@router.post("/admin/projects/{project_id}/members", response_class=HTMLResponse)
@html_errors
def member_set(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    role: Annotated[str, Form(max_length=20)] = "viewer",
    email: Annotated[str, Form(max_length=400)] = "",
    user_id: Annotated[str, Form(max_length=64)] = "",
    organisation_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Add a member by e-mail (an invitation when a manager asks) or an organisation, or change
    a member's role (the same call with the member's user or organisation id)."""
    who = _caller(request, session, caller, admin=False)
    member = {
        "email": email.strip() or None,
        "user_id": user_id or None,
        "organisation_id": organisation_id or None,
    }
    try:
        body = checked(MembershipIn, role=role, **member)
        answer = catalogue.add_member(
            project_id=project_id, body=body, request=request, caller=who, session=session
        )
    except DomainError as exc:
        if isinstance(exc, NotFound) and not (email or user_id or organisation_id):
            raise
        session.rollback()
        return _project_page(
            project_id,
            request,
            services,
            session,
            who,
            error=str(exc),
            form={"email": email},
            status=exc.status,
        )
    done = "invited" if isinstance(answer, Response) else "member"
    return see_other(f"/admin/projects/{project_id}", {"done": done})


@router.post(
    "/admin/projects/{project_id}/members/{membership_id}/remove", response_class=HTMLResponse
)
@html_errors
def member_remove(
    project_id: str,
    membership_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    who = _caller(request, session, caller, admin=False)
    catalogue.remove_member(
        project_id=project_id,
        membership_id=membership_id,
        request=request,
        caller=who,
        session=session,
    )
    return see_other(f"/admin/projects/{project_id}", {"done": "removed"})


@router.post(
    "/admin/projects/{project_id}/invitations/{invitation_id}/withdraw",
    response_class=HTMLResponse,
)
@html_errors
def invitation_withdraw(
    project_id: str,
    invitation_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    who = _caller(request, session, caller, admin=False)
    catalogue.withdraw_invitation(
        project_id=project_id,
        invitation_id=invitation_id,
        request=request,
        caller=who,
        session=session,
    )
    return see_other(f"/admin/projects/{project_id}", {"done": "withdrawn"})


@router.post("/admin/projects/{project_id}/quota", response_class=HTMLResponse)
@html_errors
def project_quota(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    quota_gib: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Set the project's storage quota in GiB (global admins); empty lifts it."""
    who = _caller(request, session, caller, admin=True)
    text = quota_gib.strip().replace(",", ".")
    try:
        quota = None if not text else round(float(text) * GIB)
    except ValueError:
        raise Invalid(f"{quota_gib!r} is not a number of GiB") from None
    catalogue.update_project(
        project_id=project_id,
        body=checked(ProjectPatch, quota_bytes=quota),
        request=request,
        caller=who,
        session=session,
    )
    return see_other(f"/admin/projects/{project_id}", {"done": "quota"})


# ------------------------------------------------------------------ audit log


def _moment(value: str, end: bool) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{value!r} is not a date (YYYY-MM-DD)") from None
    return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)


@router.get("/admin/audit", response_class=HTMLResponse)
@html_errors
def audit_page(
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    actor: Annotated[str, Query(max_length=320)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    object_id: Annotated[str, Query(max_length=64)] = "",
    project_id: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=False)
    filters = {
        "actor": actor.strip(),
        "action": action.strip(),
        "object_id": object_id.strip(),
        "project_id": project_id,
        "since": since,
        "until": until,
    }
    events = audit.list_audit(
        caller=who,
        session=session,
        window=Window(limit=AUDIT_PAGE, offset=(page - 1) * AUDIT_PAGE),
        project_id=project_id or None,
        action=filters["action"] or None,
        actor=filters["actor"] or None,
        since=_moment(since, end=False),
        until=_moment(until, end=True),
        object_id=filters["object_id"] or None,
    )
    api_query = {
        "actor": filters["actor"],
        "action": filters["action"],
        "object_id": filters["object_id"],
        "project_id": project_id,
    }
    if since:
        api_query["since"] = f"{since}T00:00:00Z"
    if until:
        api_query["until"] = f"{until}T23:59:59.999999Z"
    projects = _projects(session, who)
    return _page(
        request,
        services,
        who,
        "admin/audit.html",
        "/admin/audit",
        {
            "filters": filters,
            "events": events,
            "page": page,
            "pages": max(1, -(-events.total // AUDIT_PAGE)),
            "query_string": urlencode({k: v for k, v in filters.items() if v}),
            "csv_url": "/api/audit.csv?" + urlencode({k: v for k, v in api_query.items() if v}),
            "projects": projects,
            "project_names": {p.id: p.name for p in projects},
        },
    )


# ------------------------------------------------------------------ jobs


def _job_rows(session: Session, caller: Caller, jobs: list[JobOut]) -> list[dict[str, Any]]:
    """Jobs with the names a person recognises: the file, its dataset and project."""
    rows = []
    for job in jobs:
        original = None
        if job.file_id is not None:
            try:
                original = files.get_file(file_id=job.file_id, caller=caller, session=session)
            except NotFound:
                original = None
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        project = session.get(Project, dataset.project_id) if dataset else None
        rows.append({"job": job, "file": original, "dataset": dataset, "project": project})
    return rows


@router.get("/admin/jobs", response_class=HTMLResponse)
@html_errors
def jobs_page(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=False)

    def listed(status: Literal["queued", "running", "failed"]) -> list[JobOut]:
        return catalogue.list_jobs(
            caller=who, session=session, window=Window(limit=200), status=status, project_id=None
        ).items

    return _page(
        request,
        services,
        who,
        "admin/jobs.html",
        "/admin/jobs",
        {
            "failed": _job_rows(session, who, listed("failed")),
            "active": _job_rows(session, who, listed("running") + listed("queued")),
        },
    )


@router.post("/jobs/{job_id}/rerun")
@html_errors
def job_rerun(
    job_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    next: Annotated[str, Form(max_length=2000)] = "/admin/jobs",
) -> Response:
    """Rerun a failed job from the admin area or the dataset page, then back where it was."""
    if caller is None:
        raise Unauthorised("sign in")
    catalogue.rerun_job(
        job_id=job_id, request=request, caller=caller, session=session, services=services
    )
    return see_other(local_path(next, "/projects"), {"done": "rerun"})


@router.post("/jobs/{job_id}/dismiss")
@html_errors
def job_dismiss(
    job_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    next: Annotated[str, Form(max_length=2000)] = "/admin/jobs",
) -> Response:
    """Dismiss a failed job from the admin area or the dataset page, then back where it was."""
    if caller is None:
        raise Unauthorised("sign in")
    catalogue.dismiss_job(job_id=job_id, request=request, caller=caller, session=session)
    return see_other(local_path(next, "/projects"), {"done": "dismissed"})


# ------------------------------------------------------------------ storage


@router.get("/admin/storage", response_class=HTMLResponse)
@html_errors
def storage_page(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=True)
    replicas = storage_admin.storage_replicas(caller=who, session=session, services=services)
    scrubs = storage_admin.list_scrubs(caller=who, session=session, window=Window(limit=20))
    return _page(
        request,
        services,
        who,
        "admin/storage.html",
        "/admin/storage",
        {"storage": replicas, "scrubs": scrubs.items},
    )


@router.post("/admin/storage/scrub", response_class=HTMLResponse)
@html_errors
def storage_scrub(
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    repair: Annotated[bool, Form()] = False,
) -> Response:
    who = _caller(request, session, caller, admin=True)
    storage_admin.start_scrub(
        body=storage_admin.ScrubIn(repair=repair), caller=who, session=session, services=services
    )
    return see_other("/admin/storage", {"done": "scrub"})


# ------------------------------------------------------------------ usage


@router.get("/admin/usage", response_class=HTMLResponse)
@html_errors
def usage_page(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    who = _caller(request, session, caller, admin=False)
    figures = admin.usage(caller=who, session=session, months=6)
    return _page(request, services, who, "admin/usage.html", "/admin/usage", {"usage": figures})
