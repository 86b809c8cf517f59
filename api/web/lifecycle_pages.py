"""The lifecycle's web side: the forms of the image, dataset and project pages (edit details and
tags, move, delete, legal hold), the move pages and the trash page.

Like api/web/pages.py, every form calls the JSON API's own route functions, so the browser can
do exactly what the API lets the same caller do; CSRF is checked by the caller dependency.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from babel.dates import format_datetime
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from allmicro_data.access import managed_project_ids, project_role, scoped
from allmicro_data.annotations import normalised, parse_pairs, parse_tags
from allmicro_data.api.deps import OptionalCallerDep, ServicesDep, SessionDep, client_address
from allmicro_data.api.routers import catalogue
from allmicro_data.api.routers import lifecycle as api
from allmicro_data.api.schemas import DatasetPatch, ProjectPatch
from allmicro_data.api.web.forms import checked, see_other, signed_in
from allmicro_data.api.web.i18n import translations
from allmicro_data.api.web.pages import html_errors, render, request_language, to_login
from allmicro_data.catalogue.models import Dataset, Project, Role
from allmicro_data.errors import Invalid, NotFound
from allmicro_data.lifecycle import Kind

router = APIRouter(include_in_schema=False)

Text = Annotated[str, Form(max_length=20000)]
Line = Annotated[str, Form(max_length=1024)]


# ---------------------------------------------------------------- details and tags


@router.post("/images/{image_id}/details")
@html_errors
def image_details(
    image_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    name: Line = "",
    description: Text = "",
    tags: Text = "",
    pairs: Text = "",
) -> Response:
    """The image page's edit form: name, description, tags and pairs in one go."""
    caller = signed_in(caller)
    wanted = normalised(parse_tags(tags), parse_pairs(pairs))
    api.update_image(
        image_id=image_id,
        body=checked(api.ImagePatch, name=name.strip() or None, description=description),
        request=request,
        caller=caller,
        session=session,
    )
    api.set_image_annotations(session, caller, image_id, wanted, client_address(request))
    return see_other(f"/images/{image_id}")


@router.post("/datasets/{dataset_id}/details")
@html_errors
def dataset_details(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    name: Line = "",
    description: Text = "",
    tags: Text = "",
    pairs: Text = "",
) -> Response:
    caller = signed_in(caller)
    wanted = normalised(parse_tags(tags), parse_pairs(pairs))
    catalogue.update_dataset(
        dataset_id=dataset_id,
        body=checked(DatasetPatch, name=name.strip() or None, description=description),
        request=request,
        caller=caller,
        session=session,
    )
    api.set_dataset_annotations(session, caller, dataset_id, wanted, client_address(request))
    return see_other(f"/datasets/{dataset_id}")


@router.post("/projects/{project_id}/details")
@html_errors
def project_details(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    name: Line = "",
    description: Text = "",
) -> Response:
    caller = signed_in(caller)
    catalogue.update_project(
        project_id=project_id,
        body=checked(ProjectPatch, name=name.strip() or None, description=description),
        request=request,
        caller=caller,
        session=session,
    )
    return see_other(f"/projects/{project_id}")


@router.post("/projects/{project_id}/legal-hold")
@html_errors
def project_legal_hold(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    hold: Annotated[str, Form(max_length=5)] = "true",
) -> Response:
    caller = signed_in(caller)
    catalogue.update_project(
        project_id=project_id,
        body=ProjectPatch(legal_hold=hold == "true"),
        request=request,
        caller=caller,
        session=session,
    )
    return see_other(f"/projects/{project_id}")


# ---------------------------------------------------------------- moving


def _move_page(
    request: Request,
    services: ServicesDep,
    caller: Any,
    *,
    title: str,
    name: str,
    back: str,
    action: str,
    label: str,
    targets: list[tuple[str, str]],
    hint: str | None = None,
) -> Response:
    return render(
        request,
        services,
        "lifecycle/move.html",
        {
            "title": title,
            "name": name,
            "back": back,
            "action": action,
            "label": label,
            "targets": targets,
            "hint": hint,
        },
        caller=caller,
    )


@router.get("/images/{image_id}/move", response_class=HTMLResponse)
@html_errors
def image_move_form(
    image_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """Where an image may go: datasets of its project (contributors), and of the other projects
    the caller manages when they manage this one too."""
    if caller is None:
        return to_login(request)
    gettext = translations(request_language(request)).gettext
    image = catalogue.get_image(image_id=image_id, caller=caller, session=session)
    dataset = catalogue.get_dataset(dataset_id=image.dataset_id, caller=caller, session=session)
    role = project_role(session, caller, dataset.project_id)
    projects = (
        select(Project.id).where(Project.id.in_(managed_project_ids(caller)))
        if role is not None and role.allows(Role.MANAGER)
        else select(Project.id).where(Project.id == dataset.project_id)
    )
    places: Any = select(Dataset.id, Dataset.name, Project.name)
    rows = session.execute(
        scoped(places, Dataset, caller)
        .join(Project, Project.id == Dataset.project_id)
        .where(Dataset.project_id.in_(projects), Dataset.id != dataset.id)
        .order_by(Project.name, Dataset.name)
    ).all()
    return _move_page(
        request,
        services,
        caller,
        title=gettext("Move %(name)s") % {"name": image.name},
        name=image.name,
        back=f"/images/{image.id}",
        action=f"/images/{image.id}/move",
        label=gettext("Dataset"),
        targets=[(d, f"{p} / {n}") for d, n, p in rows],
        hint=gettext("Other images read from the same files move with it."),
    )


@router.post("/images/{image_id}/move")
@html_errors
def image_move(
    image_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    target: Annotated[str, Form(max_length=64)],
) -> Response:
    caller = signed_in(caller)
    api.move_image(
        image_id=image_id,
        body=api.MoveImageIn(dataset_id=target),
        request=request,
        caller=caller,
        session=session,
    )
    return see_other(f"/images/{image_id}")


@router.get("/datasets/{dataset_id}/move", response_class=HTMLResponse)
@html_errors
def dataset_move_form(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """Where a dataset may go: the other projects the caller manages."""
    if caller is None:
        return to_login(request)
    gettext = translations(request_language(request)).gettext
    dataset = catalogue.get_dataset(dataset_id=dataset_id, caller=caller, session=session)
    places: Any = select(Project.id, Project.name)
    rows = session.execute(
        scoped(places, Project, caller)
        .where(Project.id.in_(managed_project_ids(caller)), Project.id != dataset.project_id)
        .order_by(Project.name)
    ).all()
    return _move_page(
        request,
        services,
        caller,
        title=gettext("Move %(name)s") % {"name": dataset.name},
        name=dataset.name,
        back=f"/datasets/{dataset.id}",
        action=f"/datasets/{dataset.id}/move",
        label=gettext("Project"),
        targets=[(p, n) for p, n in rows],
    )


@router.post("/datasets/{dataset_id}/move")
@html_errors
def dataset_move(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    target: Annotated[str, Form(max_length=64)],
) -> Response:
    caller = signed_in(caller)
    api.move_dataset(
        dataset_id=dataset_id,
        body=api.MoveDatasetIn(project_id=target),
        request=request,
        caller=caller,
        session=session,
    )
    return see_other(f"/datasets/{dataset_id}")


# ---------------------------------------------------------------- deleting and the trash


def _after_delete(session: SessionDep, caller: Any, project_id: str, fallback: str) -> Response:
    """Managers land on the trash, where they can undo; others back where they were."""
    role = project_role(session, caller, project_id)
    if role is not None and role.allows(Role.MANAGER):
        return see_other(f"/trash?{urlencode({'project': project_id, 'done': 'deleted'})}")
    return see_other(fallback)


@router.post("/images/{image_id}/delete")
@html_errors
def image_delete(
    image_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    caller = signed_in(caller)
    image = catalogue.get_image(image_id=image_id, caller=caller, session=session)
    dataset = catalogue.get_dataset(dataset_id=image.dataset_id, caller=caller, session=session)
    api.delete_image(image_id=image_id, request=request, caller=caller, session=session)
    return _after_delete(session, caller, dataset.project_id, f"/datasets/{dataset.id}")


@router.post("/datasets/{dataset_id}/delete")
@html_errors
def dataset_delete(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    caller = signed_in(caller)
    dataset = catalogue.get_dataset(dataset_id=dataset_id, caller=caller, session=session)
    api.delete_dataset(dataset_id=dataset_id, request=request, caller=caller, session=session)
    return _after_delete(session, caller, dataset.project_id, f"/projects/{dataset.project_id}")


@router.post("/projects/{project_id}/delete")
@html_errors
def project_delete(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    caller = signed_in(caller)
    api.delete_project(project_id=project_id, request=request, caller=caller, session=session)
    return see_other(f"/trash?{urlencode({'done': 'deleted'})}")


@router.get("/trash", response_class=HTMLResponse)
@html_errors
def trash_page(
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    project: Annotated[str, Query(max_length=64)] = "",
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """The trash of one project (managers), or of every project the caller manages."""
    if caller is None:
        return to_login(request)
    language = request_language(request)
    gettext = translations(language).gettext
    entries = api.list_trash(
        caller=caller, session=session, services=services, project_id=project or None
    )
    shown_project = None
    if project:
        try:
            shown_project = catalogue.get_project(
                project_id=project, caller=caller, session=session
            )
        except NotFound:
            shown_project = None  # the project itself is in the trash: list without its name
    notices = {
        "deleted": gettext("Moved to the trash. You can restore it from here."),
        "restored": gettext("Restored."),
        "purged": gettext("Purged for good."),
    }
    listed = [
        {
            **entry.model_dump(),
            "deleted_on": format_datetime(entry.deleted_at, format="medium", locale=language),
            "purge_on": format_datetime(entry.purge_at, format="medium", locale=language),
        }
        for entry in entries
    ]
    return render(
        request,
        services,
        "trash.html",
        {
            "entries": listed,
            "project": shown_project,
            "retention_days": round(services.settings.trash_retention_days),
            "done": notices.get(done),
        },
        caller=caller,
    )


def _back_to_trash(project: str, done: str) -> Response:
    return see_other("/trash", {"project": project, "done": done} if project else {"done": done})


def _kind(kind: str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise Invalid(f"nothing of kind {kind!r} is in the trash") from None


@router.post("/trash/{kind}/{object_id}/restore")
@html_errors
def trash_restore(
    kind: str,
    object_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    caller = signed_in(caller)
    api.restore_from_trash(
        kind=_kind(kind), object_id=object_id, request=request, caller=caller, session=session
    )
    return _back_to_trash(project, "restored")


@router.post("/trash/{kind}/{object_id}/purge")
@html_errors
def trash_purge(
    kind: str,
    object_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    caller = signed_in(caller)
    api.purge_from_trash(
        kind=_kind(kind),
        object_id=object_id,
        request=request,
        caller=caller,
        session=session,
        services=services,
    )
    if kind == Kind.PROJECT and project == object_id:
        project = ""
    return _back_to_trash(project, "purged")
