"""The web pages: sign-in, projects, datasets, search and the image viewer, rendered on the server.

Pages call the JSON API's own route functions for their data, so a page can never show what the
API would refuse the same caller; templates only shape what those functions return.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hmac
import json
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ParamSpec
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import OAuth2PasswordRequestForm
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import distinct, select
from sqlalchemy.orm import Session

from allmicro_data.access import Caller, may_administer, may_upload, scoped
from allmicro_data.acquisition import ACQUISITION_FIELDS
from allmicro_data.api.deps import (
    SESSION_COOKIE,
    OptionalCallerDep,
    ServicesDep,
    SessionDep,
    client_address,
)
from allmicro_data.api.routers import auth, catalogue, files
from allmicro_data.api.schemas import (
    DatasetDetailOut,
    FileOut,
    ImageDetailOut,
    JobOut,
    ProjectDetailOut,
)
from allmicro_data.api.web import formatting
from allmicro_data.api.web.i18n import (
    LANGUAGE_COOKIE,
    LANGUAGES,
    choose_language,
    language_name,
    translations,
)
from allmicro_data.api.web.uploader import uploader_config
from allmicro_data.auth import (
    LoginRefused,
    LoginThrottled,
    csrf_token,
    institutional_login,
    sign,
    unsign,
)
from allmicro_data.catalogue.models import Dataset, Image, Role, User
from allmicro_data.errors import DomainError, NotFound, Unauthorised
from allmicro_data.oidc_login import OidcFailed, OidcProvider, PendingSignIn
from allmicro_data.paging import Window
from allmicro_data.search import modality_facet, vendor_facet
from allmicro_data.services import Services
from allmicro_data.settings import secret_key

WEB_DIR = Path(__file__).parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
OPENSEADRAGON = STATIC_DIR / "vendor" / "openseadragon" / "openseadragon.min.js"
LOGIN_CSRF_COOKIE = "allmicro_login_csrf"
PAGE_SIZE = 48
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600
# Scripts and styles only from this server; OpenSeadragon sets inline styles on its elements.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)
P = ParamSpec("P")
log = logging.getLogger(__name__)


def static_files() -> StaticFiles:
    """The /static mount: styles, scripts, and the npm packages `make` copies into vendor/."""
    return StaticFiles(directory=STATIC_DIR)


@cache
def environment(language: str) -> Environment:
    """One template environment per UI language, its gettext installed once (thread-safe)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters["length"] = formatting.length
    env.filters["number"] = formatting.number
    env.filters["data_size"] = formatting.data_size
    return env


def request_language(request: Request) -> str:
    return choose_language(
        request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language")
    )


def session_csrf(request: Request, services: Services) -> str | None:
    """The CSRF token of the browser session, for the page's forms and scripts."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    key = secret_key(services.settings)
    plaintext = unsign(cookie, key)
    return csrf_token(plaintext, key) if plaintext else None


def local_path(target: str | None, default: str = "/projects") -> str:
    """Only paths on this server: a crafted ?next= must not send people elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def render(
    request: Request,
    services: Services,
    template: str,
    context: dict[str, Any],
    *,
    caller: Caller | None = None,
    status: int = 200,
) -> HTMLResponse:
    language = request_language(request)
    env = environment(language)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = env.get_template(template).render(
        lang=language,
        languages=[(code, language_name(code)) for code in LANGUAGES],
        here=here,
        caller=caller,
        csrf=session_csrf(request, services) if caller else None,
        admin_entry=caller is not None and _has_admin_area(services, caller),
        **context,
    )
    response = HTMLResponse(body, status_code=status)
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept-Language, Cookie"
    # Pages show private data: never from a shared cache, never from the back button after logout.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _has_admin_area(services: Services, caller: Caller) -> bool:
    """Whether the header offers the admin area (admins, and managers for their projects)."""
    if caller.is_admin:
        return True
    with services.session() as session:
        return may_administer(session, caller)


def to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)


def html_errors(
    page: Callable[P, Response],
) -> Callable[P, Response]:
    """Domain errors of a page as an HTML page with the same status the API would answer."""

    @functools.wraps(page)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return page(*args, **kwargs)
        except DomainError as exc:
            # A page takes request, services and caller itself, or in one ImagePage.
            asked = kwargs.get("page")
            request: object = asked.request if isinstance(asked, ImagePage) else kwargs["request"]
            services: object = (
                asked.services if isinstance(asked, ImagePage) else kwargs["services"]
            )
            caller: object = asked.caller if isinstance(asked, ImagePage) else kwargs.get("caller")
            assert isinstance(request, Request) and isinstance(services, Services)
            return error_page(request, services, caller, exc)

    return wrapper


def error_page(
    request: Request,
    services: Services,
    caller: object,
    exc: DomainError,
    *,
    sign_in: bool = True,
) -> Response:
    """A domain error as the error page with its status; an unauthenticated caller is sent to
    sign in first, unless sign_in is False (a share link's holder has no account)."""
    if sign_in and isinstance(exc, Unauthorised):
        return to_login(request)
    return render(
        request,
        services,
        "error.html",
        {"status": exc.status, "detail": str(exc)},
        caller=caller if isinstance(caller, Caller) else None,
        status=exc.status,
    )


# ------------------------------------------------------------------ sign-in, language


@router.get("/", response_class=HTMLResponse)
def home(caller: OptionalCallerDep) -> Response:
    return RedirectResponse("/projects" if caller else "/login", status_code=303)


def _login_page(
    request: Request,
    services: Services,
    next_path: str,
    *,
    error: str | None = None,
    email: str = "",
    status: int = 200,
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    settings = services.settings
    institution = {
        # A directory account signs in with its user name (uid, sAMAccountName) too.
        "user_names": bool(settings.ldap_urls),
        "oidc_name": settings.oidc_provider_name if settings.oidc_issuer else None,
    }
    response = render(
        request,
        services,
        "login.html",
        {
            "login_csrf": token,
            "next_path": next_path,
            "error": error,
            "email": email,
            **institution,
        },
        status=status,
    )
    # Double-submit token: without a session yet, this stops other sites signing people in.
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/login",
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, services: ServicesDep, caller: OptionalCallerDep, next: str | None = None
) -> Response:
    if caller is not None:
        return RedirectResponse(local_path(next), status_code=303)
    return _login_page(request, services, local_path(next))


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    username: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/projects",
) -> Response:
    """Sign in through the API's own browser login, then follow its cookies to the next page."""
    target = local_path(next)
    gettext = translations(request_language(request)).gettext
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        return _login_page(
            request,
            services,
            target,
            error=gettext("The sign-in form expired. Please try again."),
            email=username,
            status=400,
        )
    carrier = Response()
    try:
        signed_in = auth.browser_login(
            OAuth2PasswordRequestForm(username=username, password=password),
            request,
            carrier,
            session,
            services,
        )
    except LoginThrottled as exc:
        page = _login_page(
            request,
            services,
            target,
            error=gettext("Too many failed sign-ins from this address. Try again later."),
            email=username,
            status=429,
        )
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    except Unauthorised:
        return _login_page(
            request,
            services,
            target,
            error=gettext("Incorrect e-mail or password."),
            email=username,
            status=401,
        )
    remember_language(session, signed_in.user.id, request)
    response = RedirectResponse(target, status_code=303)
    for cookie in carrier.headers.getlist("set-cookie"):
        response.headers.append("set-cookie", cookie)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def remember_language(session: Session, user_id: str, request: Request) -> None:
    """The language a user signs in with is the one their e-mails speak."""
    user = session.get(User, user_id)
    if user is not None:
        user.language = request_language(request)


OIDC_COOKIE = "allmicro_oidc"
OIDC_PATH = "/login/oidc"
OIDC_SECONDS = 600


def _oidc_redirect_uri(request: Request, services: Services) -> str:
    public = services.settings.public_url
    if public:
        return public.rstrip("/") + OIDC_PATH + "/callback"
    return str(request.url_for("oidc_callback"))


def _oidc_pending(request: Request, services: Services) -> PendingSignIn | None:
    """What the sign-in started in this browser keeps (signed cookie), if still fresh."""
    signed = request.cookies.get(OIDC_COOKIE)
    value = unsign(signed, secret_key(services.settings)) if signed else None
    if value is None:
        return None
    try:
        pending = PendingSignIn(**json.loads(base64.urlsafe_b64decode(value.encode())))
    except (ValueError, TypeError):
        return None
    age = datetime.now(UTC).timestamp() - pending.started_at
    return pending if 0 <= age <= OIDC_SECONDS else None


@router.get(OIDC_PATH)
def oidc_begin(request: Request, services: ServicesDep, next: str | None = None) -> Response:
    """Send the browser to the institution's OpenID Connect provider (code flow with PKCE)."""
    provider = OidcProvider.from_settings(services.settings)
    if provider is None:
        return render(request, services, "error.html", {"status": 404, "detail": ""}, status=404)
    gettext = translations(request_language(request)).gettext
    target = local_path(next)
    try:
        url, pending = provider.begin(_oidc_redirect_uri(request, services), target)
    except OidcFailed as exc:
        log.warning("OpenID Connect sign-in could not start: %s", exc)
        failed = gettext("Sign-in with %(provider)s did not work. Please try again.")
        return _login_page(
            request, services, target, error=failed % {"provider": provider.name}, status=502
        )
    value = base64.urlsafe_b64encode(json.dumps(dataclasses.asdict(pending)).encode()).decode()
    response = RedirectResponse(url, status_code=303)
    # Lax: the provider's redirect back is a top-level GET, which brings it along.
    response.set_cookie(
        OIDC_COOKIE,
        sign(value, secret_key(services.settings)),
        max_age=OIDC_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path=OIDC_PATH,
    )
    return response


@router.get(OIDC_PATH + "/callback", name="oidc_callback")
def oidc_callback(
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The provider's answer: check the state, redeem the code, sign the account in."""
    provider = OidcProvider.from_settings(services.settings)
    if provider is None:
        return render(request, services, "error.html", {"status": 404, "detail": ""}, status=404)
    gettext = translations(request_language(request)).gettext
    pending = _oidc_pending(request, services)
    target = pending.next_path if pending is not None else "/projects"

    def refused(message: str, status: int) -> Response:
        page = _login_page(request, services, target, error=message, status=status)
        page.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)
        return page

    if pending is None or state is None or not hmac.compare_digest(pending.state, state):
        # Not the sign-in this browser started (or too old): never redeem its code.
        return refused(gettext("The sign-in form expired. Please try again."), 400)
    if error is not None or not code:
        cancelled = gettext("Sign-in with %(provider)s was cancelled or refused.")
        return refused(cancelled % {"provider": provider.name}, 401)
    try:
        account = provider.finish(_oidc_redirect_uri(request, services), pending, code)
    except OidcFailed as exc:
        log.warning("OpenID Connect sign-in failed: %s", exc)
        failed = gettext("Sign-in with %(provider)s did not work. Please try again.")
        return refused(failed % {"provider": provider.name}, 502)
    try:
        user = institutional_login(session, account, provider.rules, client_address(request))
    except LoginRefused:
        # Keep the refusal in the audit log although the page is an error.
        session.commit()
        return refused(
            gettext(
                "This account cannot sign in here. Please ask the repository's administrators."
            ),
            403,
        )
    remember_language(session, user.id, request)
    response = RedirectResponse(pending.next_path, status_code=303)
    auth.start_session(user, request, response, session, services)
    response.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)
    return response


@router.post("/logout")
def logout(caller: OptionalCallerDep, session: SessionDep, request: Request) -> Response:
    """Sign out (the caller dependency has checked the form's CSRF token)."""
    response = RedirectResponse("/login", status_code=303)
    if caller is not None:
        ended = auth.logout(caller, session, request)
        for cookie in ended.headers.getlist("set-cookie"):
            response.headers.append("set-cookie", cookie)
    return response


@router.get("/language/{code}")
def set_language(request: Request, code: str, next: str | None = None) -> Response:
    """The visible language switch: remembered in a cookie, over the browser's preference."""
    response = RedirectResponse(local_path(next, "/"), status_code=303)
    if code in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE,
            code,
            max_age=LANGUAGE_COOKIE_SECONDS,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
    return response


# ------------------------------------------------------------------ browsing


@router.get("/projects", response_class=HTMLResponse)
@html_errors
def projects_page(
    request: Request, caller: OptionalCallerDep, session: SessionDep, services: ServicesDep
) -> Response:
    if caller is None:
        return to_login(request)
    listed = catalogue.list_projects(caller=caller, session=session, window=Window(limit=1000))
    projects = [
        catalogue.get_project(project_id=p.id, caller=caller, session=session) for p in listed.items
    ]
    return render(request, services, "projects.html", {"projects": projects}, caller=caller)


@router.get("/projects/{project_id}", response_class=HTMLResponse)
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
    project = catalogue.get_project(project_id=project_id, caller=caller, session=session)
    listed = catalogue.list_datasets(
        project_id=project.id, caller=caller, session=session, window=Window(limit=1000)
    )
    datasets = [
        catalogue.get_dataset(dataset_id=d.id, caller=caller, session=session) for d in listed.items
    ]
    return render(
        request,
        services,
        "project.html",
        {"project": project, "datasets": datasets},
        caller=caller,
    )


def _can_contribute(caller: Caller, project: ProjectDetailOut) -> bool:
    """Whether to offer the upload form: what require_upload_target will allow."""
    return may_upload(caller, Role(project.role) if project.role is not None else None)


def _pending_jobs(
    caller: Caller, session: SessionDep, dataset_id: str
) -> list[tuple[JobOut, FileOut | None]]:
    """Ingests still running or failed, with the files they are about (newest first)."""
    jobs = catalogue.list_dataset_jobs(
        dataset_id=dataset_id, caller=caller, session=session, window=Window(limit=200)
    )
    shown = []
    for job in jobs.items:
        if job.status == "succeeded":
            continue
        original = None
        if job.file_id is not None:
            try:
                original = files.get_file(file_id=job.file_id, caller=caller, session=session)
            except NotFound:
                original = None
        shown.append((job, original))
    return shown


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
@html_errors
def dataset_page(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    if caller is None:
        return to_login(request)
    dataset: DatasetDetailOut = catalogue.get_dataset(
        dataset_id=dataset_id, caller=caller, session=session
    )
    project = catalogue.get_project(project_id=dataset.project_id, caller=caller, session=session)
    images = catalogue.list_dataset_images(
        dataset_id=dataset.id,
        caller=caller,
        session=session,
        sort="name",
        window=Window(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE),
    )
    delivered_at = session.scalar(select(Dataset.delivered_at).where(Dataset.id == dataset.id))
    # A delivered dataset takes no more uploads (allmicro_data.delivery).
    can_upload = _can_contribute(caller, project) and delivered_at is None
    language = request_language(request)
    return render(
        request,
        services,
        "dataset.html",
        {
            "project": project,
            "dataset": dataset,
            "images": images,
            "page": page,
            "pages": max(1, math.ceil(images.total / PAGE_SIZE)),
            "jobs": _pending_jobs(caller, session, dataset.id),
            "delivered_at": delivered_at,
            "can_upload": can_upload,
            "uploaded": request.query_params.get("uploaded"),
            "already_present": request.query_params.get("present"),
            "uploader_config": uploader_config(
                dataset.id,
                session_csrf(request, services),
                language,
                translations(language).gettext,
            )
            if can_upload
            else None,
        },
        caller=caller,
    )


@router.post("/datasets/{dataset_id}/upload")
@html_errors
def upload_page(
    dataset_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    upload: Annotated[list[UploadFile], File()],
) -> Response:
    """The upload form, the uploader's fallback without JavaScript: each file through the API's
    one-shot upload, then back to the dataset, which says how many it held already."""
    if caller is None:
        raise Unauthorised("sign in to upload")
    count = present = 0
    for original in upload:
        if not original.filename:
            continue
        result = files.upload_file(
            dataset_id=dataset_id,
            file=original,
            caller=caller,
            session=session,
            services=services,
        )
        count += 1
        present += int(result.already_present)
    query = urlencode({"uploaded": count, **({"present": present} if present else {})})
    return RedirectResponse(f"/datasets/{dataset_id}?{query}", status_code=303)


# ------------------------------------------------------------------ search


def _facet(session: SessionDep, caller: Caller, column: Any) -> list[str]:
    """The distinct values of a column among the images the caller may see, for the filters."""
    stmt = scoped(select(distinct(column)), Image, caller).where(column.is_not(None)).limit(200)
    return sorted(str(v) for v in session.scalars(stmt) if v)


def _day(value: str | None, end: bool) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)


def _nanometres(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value.replace(",", "."))
    except ValueError:
        return None
    return number * 1e-9 if math.isfinite(number) and number >= 0 else None


@router.get("/search", response_class=HTMLResponse)
@html_errors
def search_page(
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
    q: Annotated[str, Query(max_length=200)] = "",
    modality: Annotated[str, Query(max_length=200)] = "",
    vendor: Annotated[str, Query(max_length=200)] = "",
    instrument: Annotated[str, Query(max_length=200)] = "",
    acquired_from: Annotated[str, Query(max_length=10)] = "",
    acquired_to: Annotated[str, Query(max_length=10)] = "",
    pixel_min_nm: Annotated[str, Query(max_length=30)] = "",
    pixel_max_nm: Annotated[str, Query(max_length=30)] = "",
    project: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    if caller is None:
        return to_login(request)
    results = catalogue.image_search(
        caller=caller,
        session=session,
        project_id=project or None,
        dataset_id=None,
        modality=modality or None,
        vendor=vendor or None,
        instrument=instrument or None,
        acquired_from=_day(acquired_from, end=False),
        acquired_to=_day(acquired_to, end=True),
        pixel_size_min=_nanometres(pixel_min_nm),
        pixel_size_max=_nanometres(pixel_max_nm),
        q=q or None,
        sort="name",
        window=Window(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE),
    )
    filters = {
        "q": q,
        "modality": modality,
        "vendor": vendor,
        "instrument": instrument,
        "acquired_from": acquired_from,
        "acquired_to": acquired_to,
        "pixel_min_nm": pixel_min_nm,
        "pixel_max_nm": pixel_max_nm,
        "project": project,
    }
    return render(
        request,
        services,
        "search.html",
        {
            "filters": filters,
            "query_string": urlencode({k: v for k, v in filters.items() if v}),
            "results": results,
            "page": page,
            "pages": max(1, math.ceil(results.total / PAGE_SIZE)),
            # One entry per company and per modality (allmicro_data.vendors, .modalities).
            "modalities": modality_facet(session, caller),
            "vendors": vendor_facet(session, caller),
            "instruments": _facet(session, caller, Image.instrument),
        },
        caller=caller,
    )


# ------------------------------------------------------------------ the image


def field_labels(gettext: Callable[[str], str]) -> dict[str, str]:
    """The acquisition fields' labels in the page's language (msgids from the field table)."""
    return {field.name: gettext(field.label) for field in ACQUISITION_FIELDS}


def viewer_strings(gettext: Callable[[str], str]) -> dict[str, str]:
    """The texts the viewer's script shows, translated on the server."""
    return {
        "channel": gettext("Channel"),
        "visible": gettext("Visible"),
        "colour": gettext("Colour"),
        "low": gettext("Low"),
        "high": gettext("High"),
        "contrast": gettext("Contrast"),
        "gamma": gettext("Gamma"),
        "colourMap": gettext("Colour map"),
        "reset": gettext("Reset"),
        "plane": gettext("Plane"),
        "timepoint": gettext("Time point"),
        "noCalibration": gettext("No pixel size: no scale bar"),
        "viewerFailed": gettext("The viewer could not load this image."),
        "linkFailed": gettext("Could not create a link."),
        "expires": gettext("Expires"),
        "copy": gettext("Copy"),
        "copied": gettext("Copied"),
        "histogram": gettext("Histogram of intensities"),
        "auto": gettext("Auto"),
        "autoAll": gettext("Auto contrast, all channels"),
        "invert": gettext("Invert"),
        "log": gettext("Logarithmic"),
        "dataBar": gettext("Show the instrument's data bar"),
        "saveMine": gettext("Save as my view"),
        "forgetMine": gettext("Forget my view"),
        "saveDefault": gettext("Save as the image's default"),
        "removeDefault": gettext("Remove the image's default"),
        "saved": gettext("Saved."),
        "removed": gettext("Removed."),
        "saveFailed": gettext("Could not save."),
    }


@dataclass(frozen=True, slots=True)
class ImagePage:
    """What a page about one image is asked with: the image's id and who asks, how."""

    image_id: str
    request: Request
    caller: Caller | None
    session: Session
    services: Services

    def in_place(self, caller: Caller) -> tuple[ImageDetailOut, DatasetDetailOut, ProjectDetailOut]:
        """The image, its dataset and its project, as the API shows them to the caller."""
        session = self.session
        image = catalogue.get_image(image_id=self.image_id, caller=caller, session=session)
        dataset = catalogue.get_dataset(dataset_id=image.dataset_id, caller=caller, session=session)
        project = catalogue.get_project(
            project_id=dataset.project_id, caller=caller, session=session
        )
        return image, dataset, project


def image_page_context(
    image_id: str,
    request: Request,
    caller: OptionalCallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> ImagePage:
    return ImagePage(image_id, request, caller, session, services)


ImagePageDep = Annotated[ImagePage, Depends(image_page_context)]


def _originals(caller: Caller, session: SessionDep, image: ImageDetailOut) -> list[FileOut]:
    return [
        files.get_file(file_id=file_id, caller=caller, session=session)
        for file_id in image.file_ids
    ]


@router.get("/images/{image_id}", response_class=HTMLResponse)
@html_errors
def image_page(page: ImagePageDep) -> Response:
    request, caller, session, services = page.request, page.caller, page.session, page.services
    if caller is None:
        return to_login(request)
    image, dataset, project = page.in_place(caller)
    language = request_language(request)
    gettext = translations(language).gettext
    config = {
        "imageId": image.id,
        "infoUrl": f"/iiif/3/{image.id}/info.json",
        "displayUrl": f"/api/images/{image.id}/display",
        "histogramUrl": f"/api/images/{image.id}/histogram",
        "renderingUrl": f"/api/images/{image.id}/rendering",
        "capabilitiesUrl": f"/api/images/{image.id}/capabilities",
        "osdImages": "/static/vendor/openseadragon/images/",
        "language": language,
        "strings": viewer_strings(gettext),
    }
    return render(
        request,
        services,
        "image.html",
        {
            "project": project,
            "dataset": dataset,
            "image": image,
            "fields": formatting.acquisition_fields(
                image.acquisition, field_labels(gettext), language
            ),
            "pixel_size": formatting.pixel_size(image.pixel_size, language),
            "originals": _originals(caller, session, image),
            "vendor": image.vendor,
            "viewer_ready": OPENSEADRAGON.is_file(),
            "viewer_config": config,
        },
        caller=caller,
    )


# The OME-XML page shows at most this much: a multi-series file's document can run to many MB.
OME_XML_SHOWN_BYTES = 4 * 1024 * 1024


@router.get("/images/{image_id}/ome-xml", response_class=HTMLResponse)
@html_errors
def ome_xml_page(page: ImagePageDep) -> Response:
    """The image's OME-XML as escaped text: it comes from the uploaded file and may hold any
    markup, which must never be rendered (or run) on this origin."""
    request, caller, session, services = page.request, page.caller, page.session, page.services
    if caller is None:
        return to_login(request)
    image, dataset, project = page.in_place(caller)
    document = catalogue.get_image_ome_xml(
        image_id=image.id, caller=caller, session=session, services=services
    ).body
    return render(
        request,
        services,
        "ome_xml.html",
        {
            "project": project,
            "dataset": dataset,
            "image": image,
            "xml": bytes(document[:OME_XML_SHOWN_BYTES]).decode("utf-8", errors="replace"),
            "truncated": len(document) > OME_XML_SHOWN_BYTES,
            "shown_mib": OME_XML_SHOWN_BYTES // (1024 * 1024),
        },
        caller=caller,
    )
