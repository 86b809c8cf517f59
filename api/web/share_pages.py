"""The pages of result delivery: what a share link's holder sees, a project's sharing and
deliveries for its managers, and a project's new results for its members.

A share link's pages live under /share/{token}/: the shared view, the image viewer, tiles,
downloads and exports. A link's password is typed once into a form; the right one sets a
short-lived HttpOnly cookie scoped to that link's path (sharing.unlock_cookie), so the viewer's
tiles need no password each. API clients keep using /api/share/... with X-Share-Password.
"""

from __future__ import annotations

import functools
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, ParamSpec

from babel.dates import format_datetime
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from allmicro_data.access import Caller, get_visible, project_role, scoped
from allmicro_data.api.deps import (
    OptionalCallerDep,
    ServicesDep,
    SessionDep,
    client_address,
)
from allmicro_data.api.rendering import RenderSettings
from allmicro_data.api.routers import iiif, shares, tiles
from allmicro_data.api.schemas import ImageOut
from allmicro_data.api.streaming import content_disposition
from allmicro_data.api.viewing import ImageView, viewing
from allmicro_data.api.web import formatting
from allmicro_data.api.web.i18n import translations
from allmicro_data.api.web.pages import (
    OPENSEADRAGON,
    error_page,
    field_labels,
    render,
    request_language,
    to_login,
    viewer_strings,
)
from allmicro_data.archives import image_records, metadata_csv
from allmicro_data.catalogue.models import (
    Dataset,
    File,
    Image,
    ImageFile,
    ImageStatus,
    Project,
    ProjectKind,
    ProjectVisit,
    Role,
    ShareLink,
    utcnow,
)
from allmicro_data.delivery import CoverDocument, cover_document, mark_delivered
from allmicro_data.errors import DomainError, Invalid, NotFound, Unauthorised
from allmicro_data.services import Services
from allmicro_data.settings import secret_key
from allmicro_data.sharing import (
    ShareAccess,
    SharePasswordNeeded,
    ShareThrottled,
    ShareUnavailable,
    create_link,
    find_link,
    links_of_project,
    open_link,
    revoke_link,
    unlock_cookie,
)

router = APIRouter(include_in_schema=False)
P = ParamSpec("P")

UNLOCK_COOKIE = "allmicro_share_unlock"
FORM_COOKIE = "allmicro_share_form"  # the password form's double-submit CSRF token
MAX_LISTED = 2000  # files and images listed on one shared page


def _base(token: str) -> str:
    return f"/share/{token}"


def _key(services: Services) -> bytes:
    return secret_key(services.settings)


def _access(
    request: Request, session: Session, services: Services, token: str, *, count_use: bool = False
) -> ShareAccess:
    return open_link(
        session,
        token,
        None,
        client_address(request),
        key=_key(services),
        cookie=request.cookies.get(UNLOCK_COOKIE),
        count_use=count_use,
    )


# ------------------------------------------------------------------ errors as pages


def _password_page(
    request: Request,
    services: Services,
    token: str,
    *,
    error: str | None = None,
    status: int = 401,
) -> HTMLResponse:
    form_token = secrets.token_urlsafe(32)
    response = render(
        request,
        services,
        "share_password.html",
        {"token": token, "form_token": form_token, "error": error},
        status=status,
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.set_cookie(
        FORM_COOKIE,
        form_token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=_base(token),
    )
    return response


def _gone_page(request: Request, services: Services, reason: str) -> HTMLResponse:
    # The holder of a link that once worked learns why it stopped; a made-up one, only 404.
    status = 404 if reason == "unknown" else 410
    return render(request, services, "share_gone.html", {"reason": reason}, status=status)


def share_errors(page: Callable[P, Response]) -> Callable[P, Response]:
    """A link's problems as the pages a client understands: the password form, why the link
    no longer works, too many wrong passwords; other errors as the error page."""

    @functools.wraps(page)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        request = kwargs["request"]
        services = kwargs["services"]
        assert isinstance(request, Request) and isinstance(services, Services)
        try:
            return page(*args, **kwargs)
        except ShareUnavailable as exc:
            return _gone_page(request, services, exc.reason)
        except SharePasswordNeeded:
            token = kwargs["token"]
            assert isinstance(token, str)
            return _password_page(request, services, token)
        except ShareThrottled as exc:
            response = render(
                request, services, "share_gone.html", {"reason": "throttled"}, status=429
            )
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        except DomainError as exc:
            return error_page(
                request, services, kwargs.get("caller"), exc, sign_in="token" not in kwargs
            )

    return wrapper


# ------------------------------------------------------------------ the shared view


@dataclass(frozen=True)
class SharedFile:
    id: str
    name: str
    size: int
    sha256: str
    acquired_at: datetime | None
    instrument: str | None


@dataclass(frozen=True)
class SharedDataset:
    id: str
    name: str
    description: str
    delivered_at: datetime | None
    files: list[SharedFile]
    images: list[ImageOut]


def _shared_datasets(session: Session, access: ShareAccess) -> list[SharedDataset]:
    shown = []
    for dataset_id in access.dataset_ids:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.deleted_at is not None:
            continue
        originals = session.scalars(shares.shared_files_query([dataset_id]).limit(MAX_LISTED))
        images = session.scalars(shares.shared_images_query(dataset_id).limit(MAX_LISTED)).all()
        facts: dict[str, tuple[datetime | None, str | None]] = {}
        for file_id, acquired, instrument in session.execute(
            select(ImageFile.file_id, Image.acquired_at, Image.instrument)
            .join(Image, Image.id == ImageFile.image_id)
            .where(Image.dataset_id == dataset_id, Image.status == ImageStatus.READY)
            .order_by(Image.name)
        ):
            facts.setdefault(file_id, (acquired, instrument))
        shown.append(
            SharedDataset(
                id=dataset.id,
                name=dataset.name,
                description=dataset.description,
                delivered_at=dataset.delivered_at,
                files=[
                    SharedFile(
                        f.id, f.original_name, f.size, f.sha256, *facts.get(f.id, (None, None))
                    )
                    for f in originals
                ],
                images=[ImageOut.of(i) for i in images],
            )
        )
    return shown


def _when(value: datetime | None, language: str) -> str:
    if value is None:
        return ""
    return format_datetime(value, format="medium", tzinfo=None, locale=language)


@router.get("/share/{token}", response_class=HTMLResponse)
@share_errors
def share_page(
    token: str, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    """The shared view for people (API clients asking for JSON get the API's view)."""
    if "application/json" in request.headers.get("accept", ""):
        return RedirectResponse(f"/api/share/{token}", status_code=307)
    access = _access(request, session, services, token, count_use=True)
    view = shares.shared_view(session, access)
    language = request_language(request)
    response = render(
        request,
        services,
        "share.html",
        {
            "token": token,
            "base": _base(token),
            "view": view,
            "datasets": _shared_datasets(session, access),
            "expires": _when(view.expires_at, language),
            "when": lambda value: _when(value, language),
        },
    )
    # The token is in the address: it must not travel in a Referer to anywhere.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post("/share/{token}/unlock", response_class=HTMLResponse)
@share_errors
def share_unlock(
    token: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """The password form: the right password unlocks this link in this browser for a while."""
    gettext = translations(request_language(request)).gettext
    expected = request.cookies.get(FORM_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        return _password_page(
            request,
            services,
            token,
            error=gettext("The form expired. Please type the password again."),
            status=400,
        )
    try:
        access = open_link(session, token, password, client_address(request))
    except SharePasswordNeeded:
        return _password_page(
            request, services, token, error=gettext("Wrong password. Please try again.")
        )
    response = RedirectResponse(_base(token), status_code=303)
    if access.link.password_hash is not None:
        response.set_cookie(
            UNLOCK_COOKIE,
            unlock_cookie(_key(services), access.link, utcnow()),
            max_age=int(timedelta(hours=2).total_seconds()),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path=_base(token),
        )
    response.delete_cookie(FORM_COOKIE, path=_base(token))
    return response


@router.get("/share/{token}/images/{image_id}", response_class=HTMLResponse)
@share_errors
def share_image_page(
    token: str, image_id: str, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    access = _access(request, session, services, token)
    shares.shared_image_view(session, access, image_id)
    image = session.get(Image, image_id)
    assert image is not None
    dataset = session.get(Dataset, image.dataset_id)
    assert dataset is not None
    language = request_language(request)
    gettext = translations(language).gettext
    base = _base(token)
    originals = session.scalars(
        select(File)
        .join(ImageFile, ImageFile.file_id == File.id)
        .where(ImageFile.image_id == image.id, File.deleted_at.is_(None))
        .order_by(File.original_name)
    ).all()
    shown = ImageOut.of(image)
    config = {
        "imageId": image.id,
        "infoUrl": f"{base}/iiif/{image.id}/info.json",
        "displayUrl": f"{base}/images/{image.id}/display",
        "histogramUrl": f"{base}/images/{image.id}/histogram",
        "osdImages": "/static/vendor/openseadragon/images/",
        "language": language,
        "strings": viewer_strings(gettext),
    }
    response = render(
        request,
        services,
        "share_image.html",
        {
            "base": base,
            "view": shares.shared_view(session, access),
            "dataset": dataset,
            "image": shown,
            "fields": formatting.acquisition_fields(
                shown.acquisition, field_labels(gettext), language
            ),
            "pixel_size": formatting.pixel_size(shown.pixel_size, language),
            "originals": originals,
            "viewer_ready": OPENSEADRAGON.is_file(),
            "viewer_config": config,
        },
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# ------------------------------------------------------------------ viewing through a link


async def _shared_view(request: Request, token: str, image_id: str) -> ImageView:
    """The image through the link (password cookie checked), remembered as briefly as every
    access decision of the viewing endpoints."""
    state = viewing(request)
    cookie = request.cookies.get(UNLOCK_COOKIE)
    cache_key = ("share", token, cookie, image_id)
    view: ImageView | None = state.images.get(cache_key)
    if view is None:

        def look_up() -> ImageView:
            with state.services.session() as session:
                access = _access(request, session, state.services, token)
                return shares.shared_image_view(session, access, image_id)

        view = await run_in_threadpool(look_up)
        state.images.put(cache_key, view)
    return view


@router.get("/share/{token}/iiif/{image_id}/info.json")
async def share_info(token: str, image_id: str, request: Request) -> Response:
    """The IIIF description of a shared image, its tiles under this link's path."""
    view = await _shared_view(request, token, image_id)
    service_id = f"{str(request.base_url).rstrip('/')}{_base(token)}/iiif/{view.id}"
    response = await iiif.info_response(request, view, service_id, protected=False)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@router.get("/share/{token}/iiif/{image_id}/{region}/{size}/{rotation}/{quality_format}")
async def share_iiif_image(
    token: str,
    image_id: str,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    request: Request,
    settings: iiif.RenderDep,
) -> Response:
    """A rendered region of a shared image (IIIF Image API syntax, as /iiif/3/...)."""
    view = await _shared_view(request, token, image_id)
    return await iiif.image_response(
        request, view, region, size, rotation, quality_format, settings
    )


@router.get("/share/{token}/images/{image_id}/display")
async def share_display(token: str, image_id: str, request: Request) -> tiles.DisplayOut:
    """The viewer's controls for a shared image: planes, channels, default windows (as
    /api/images/{id}/display gives them to members)."""
    view = await _shared_view(request, token, image_id)
    return await tiles.display_of(viewing(request), view)


@router.get("/share/{token}/images/{image_id}/histogram")
async def share_histogram(
    token: str,
    image_id: str,
    request: Request,
    z: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    t: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    c: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    bins: Annotated[int, Query(ge=2, le=4096)] = 256,
) -> tiles.HistogramOut:
    """A shared image's histogram for the viewer's contrast controls (as
    /api/images/{id}/histogram gives it to members)."""
    view = await _shared_view(request, token, image_id)
    return await tiles.histogram_of(viewing(request), view, z=z, t=t, c=c, bins=bins)


@router.get("/share/{token}/images/{image_id}/thumbnail.jpg")
async def share_thumbnail(token: str, image_id: str, request: Request) -> Response:
    """The whole shared image in at most 256 x 256 px."""
    view = await _shared_view(request, token, image_id)
    size = f"!{tiles.THUMBNAIL},{tiles.THUMBNAIL}"
    return await iiif.image_response(
        request, view, "full", size, "0", "default.jpg", RenderSettings()
    )


# ------------------------------------------------------------------ downloads and exports


@router.get("/share/{token}/files/{file_id}")
@share_errors
def share_file(
    token: str, file_id: str, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    access = _access(request, session, services, token)
    f = shares.shared_file(session, access, file_id)
    return shares.download_original(request, session, services, access, f)


@router.get("/share/{token}/download.zip")
@share_errors
def share_zip(
    token: str,
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    file: Annotated[list[str] | None, Query(max_length=10_000)] = None,
) -> Response:
    """The chosen originals (every shared one without a choice) as one ZIP with SHA256SUMS."""
    access = _access(request, session, services, token)
    everything = list(session.scalars(shares.shared_files_query(access.dataset_ids)))
    if file:
        wanted = set(file)
        chosen = [f for f in everything if f.id in wanted]
        if len(chosen) != len(wanted):
            raise NotFound("one or more files not found")
    else:
        chosen = everything
    if not chosen:
        raise Invalid("nothing to download")
    project = session.get(Project, access.project_id)
    assert project is not None
    return shares.download_archive(request, session, services, access, chosen, project.name)


@router.get("/share/{token}/metadata.{kind}")
@share_errors
def share_metadata(
    token: str, kind: str, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    """The shared images' normalised metadata as CSV or JSON (SI units)."""
    if kind not in ("csv", "json"):
        raise NotFound("no such export")
    access = _access(request, session, services, token)
    records = image_records(session, list(access.dataset_ids))
    project = session.get(Project, access.project_id)
    assert project is not None
    if kind == "csv":
        return Response(
            metadata_csv(records),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": content_disposition(f"{project.name}.csv")},
        )
    return Response(
        json.dumps(records, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": content_disposition(f"{project.name}.json")},
    )


def _cover_page(
    request: Request,
    services: Services,
    cover: CoverDocument,
    caller: Caller | None,
    back: str,
) -> HTMLResponse:
    language = request_language(request)
    return render(
        request,
        services,
        "delivery_cover.html",
        {"cover": cover, "back": back, "when": lambda value: _when(value, language)},
        caller=caller,
    )


@router.get("/share/{token}/datasets/{dataset_id}/cover", response_class=HTMLResponse)
@share_errors
def share_cover(
    token: str, dataset_id: str, request: Request, session: SessionDep, services: ServicesDep
) -> Response:
    """The printable cover document of a delivered dataset the link shares."""
    access = _access(request, session, services, token)
    access.require_dataset(dataset_id)
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.delivered_at is None:
        raise NotFound(f"dataset {dataset_id} is not a delivery")
    cover = cover_document(session, dataset)
    return _cover_page(request, services, cover, None, _base(token))


# ------------------------------------------------------------------ members: covers, results


@router.get("/datasets/{dataset_id}/delivery", response_class=HTMLResponse)
@share_errors
def delivery_cover_page(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """The cover document of a delivered dataset, for the project's members."""
    if caller is None:
        return to_login(request)
    dataset = get_visible(session, caller, Dataset, dataset_id)
    if dataset.delivered_at is None:
        raise NotFound(f"dataset {dataset_id} is not a delivery")
    cover = cover_document(session, dataset)
    return _cover_page(request, services, cover, caller, f"/datasets/{dataset.id}")


@router.get("/projects/{project_id}/results", response_class=HTMLResponse)
@share_errors
def results_page(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """What is new in a project since the caller last opened this page: images, deliveries."""
    if caller is None:
        return to_login(request)
    project = get_visible(session, caller, Project, project_id)
    visit = session.get(ProjectVisit, (caller.user_id, project.id))
    since = visit.visited_at if visit is not None else None
    datasets = session.scalars(
        scoped(select(Dataset), Dataset, caller)
        .where(Dataset.project_id == project.id)
        .order_by(Dataset.name)
    ).all()
    dataset_ids = [d.id for d in datasets]
    new_images = scoped(select(Image), Image, caller).where(Image.dataset_id.in_(dataset_ids))
    if since is not None:
        new_images = new_images.where(Image.created_at > since)
    images = session.scalars(new_images.order_by(Image.created_at.desc()).limit(200)).all()
    delivered = [
        d for d in datasets if d.delivered_at and (since is None or d.delivered_at > since)
    ]
    per_dataset: Any = select(Image.dataset_id, func.count())
    counts: dict[str, int] = dict(
        session.execute(
            scoped(per_dataset, Image, caller)
            .where(Image.dataset_id.in_(dataset_ids))
            .group_by(Image.dataset_id)
        ).all()
    )
    now = utcnow()
    if visit is None:
        session.add(ProjectVisit(user_id=caller.user_id, project_id=project.id, visited_at=now))
    else:
        visit.visited_at = now
    language = request_language(request)
    names = {d.id: d.name for d in datasets}
    return render(
        request,
        services,
        "results.html",
        {
            "project": project,
            "pilot": project.kind == ProjectKind.PILOT,
            "since": _when(since, language) if since else None,
            "images": [ImageOut.of(i) for i in images],
            "dataset_names": names,
            "delivered": delivered,
            "datasets": datasets,
            "counts": counts,
            "when": lambda value: _when(value, language),
        },
        caller=caller,
    )


# ------------------------------------------------------------------ sharing, for managers


def _end_of(day: str) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(day), time(23, 59), tzinfo=UTC)
    except ValueError:
        return None


def _sharing_page(
    request: Request,
    session: Session,
    services: Services,
    caller: Caller,
    project_id: str,
    *,
    new_link: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    project = get_visible(session, caller, Project, project_id)
    links = links_of_project(session, caller, project.id)
    datasets = session.scalars(
        select(Dataset)
        .where(Dataset.project_id == project.id, Dataset.deleted_at.is_(None))
        .order_by(Dataset.name)
    ).all()
    names = {d.id: d.name for d in datasets}
    now = utcnow()
    language = request_language(request)

    def state(link: ShareLink) -> str:
        if link.revoked_at is not None:
            return "revoked"
        if link.expires_at <= now:
            return "expired"
        if link.max_downloads is not None and link.download_count >= link.max_downloads:
            return "exhausted"
        return "active"

    return render(
        request,
        services,
        "share_manage.html",
        {
            "project": project,
            "datasets": datasets,
            "links": [
                {
                    "link": link,
                    "what": names.get(link.dataset_id or "", "") if link.dataset_id else None,
                    "state": state(link),
                }
                for link in reversed(links)
            ],
            "new_link": new_link,
            "error": error,
            "default_expiry": (now + timedelta(days=14)).date().isoformat(),
            "max_expiry": (now + timedelta(days=services.settings.share_link_max_days))
            .date()
            .isoformat(),
            "when": lambda value: _when(value, language),
        },
        caller=caller,
        status=status,
    )


def _require_manager(session: Session, caller: Caller, project_id: str) -> None:
    get_visible(session, caller, Project, project_id)
    role = project_role(session, caller, project_id)
    if role is None or not role.allows(Role.MANAGER):
        # Members who are not managers see the page's absence as for any page they cannot use.
        raise NotFound(f"project {project_id} not found")


@router.get("/projects/{project_id}/sharing", response_class=HTMLResponse)
@share_errors
def sharing_page(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """A project's share links and deliveries (managers)."""
    if caller is None:
        return to_login(request)
    _require_manager(session, caller, project_id)
    return _sharing_page(request, session, services, caller, project_id)


@router.post("/projects/{project_id}/sharing/links", response_class=HTMLResponse)
@share_errors
def sharing_create(
    project_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    target: Annotated[str, Form(max_length=64)] = "",
    label: Annotated[str, Form(max_length=200)] = "",
    expires: Annotated[str, Form(max_length=10)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    max_downloads: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Create a link from the form; its address is shown once, on the page that follows."""
    if caller is None:
        raise Unauthorised("sign in to share")
    _require_manager(session, caller, project_id)
    gettext = translations(request_language(request)).gettext
    expires_at = _end_of(expires) if expires else utcnow() + timedelta(days=7)
    if expires_at is not None:
        # The last day offered lasts until the longest lifetime allowed, not past it.
        longest = utcnow() + timedelta(days=services.settings.share_link_max_days)
        expires_at = min(expires_at, longest - timedelta(seconds=5))
    limit = int(max_downloads) if max_downloads.strip().isdigit() else None
    error = None
    if expires_at is None:
        error = gettext("The expiry date is not a date.")
    elif max_downloads.strip() and (limit is None or limit < 1):
        error = gettext("The download limit must be a whole number of at least 1.")
    if error is None:
        assert expires_at is not None
        try:
            token, _ = create_link(
                session,
                caller,
                project_id=None if target else project_id,
                dataset_id=target or None,
                expires_at=expires_at,
                max_days=services.settings.share_link_max_days,
                password=password or None,
                label=label.strip(),
                client_address=client_address(request),
                max_downloads=limit,
            )
        except Invalid as exc:
            error = str(exc)
        else:
            session.flush()
            url = shares.share_page_url(request, token)
            return _sharing_page(request, session, services, caller, project_id, new_link=url)
    return _sharing_page(request, session, services, caller, project_id, error=error, status=422)


@router.post("/projects/{project_id}/sharing/links/{link_id}/revoke")
@share_errors
def sharing_revoke(
    project_id: str,
    link_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    if caller is None:
        raise Unauthorised("sign in to share")
    _require_manager(session, caller, project_id)
    link = session.get(ShareLink, link_id)
    if link is None or shares_project(session, link) != project_id:
        raise NotFound(f"share link {link_id} not found")
    revoke_link(session, caller, link_id, client_address(request))
    return RedirectResponse(f"/projects/{project_id}/sharing#links", status_code=303)


def shares_project(session: Session, link: ShareLink) -> str | None:
    if link.project_id is not None:
        return link.project_id
    dataset = session.get(Dataset, link.dataset_id)
    return dataset.project_id if dataset else None


@router.post("/projects/{project_id}/sharing/deliveries/{dataset_id}")
@share_errors
def sharing_deliver(
    project_id: str,
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """Mark a dataset as delivered: frozen, its cover generated, the client told."""
    if caller is None:
        raise Unauthorised("sign in to deliver")
    _require_manager(session, caller, project_id)
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.project_id != project_id:
        raise NotFound(f"dataset {dataset_id} not found")
    mark_delivered(session, caller, dataset_id, client_address(request))
    return RedirectResponse(f"/projects/{project_id}/sharing#deliveries", status_code=303)


def link_of_token(session: Session, token: str) -> ShareLink:
    """The link a token names (for tests and tools)."""
    return find_link(session, token)
