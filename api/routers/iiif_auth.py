"""IIIF Authorization Flow API 2.0 (https://iiif.io/api/auth/2.0/) backed by our own sign-in, so
Mirador, Universal Viewer or an OpenSeadragon page on another site can show a protected image:

- the probe (`/iiif/auth/2/probe/{image}`) says, with HTTP 200 and any origin, which status an
  image request with the viewer's token would get;
- the access service (`/iiif/auth/2/access`, profile "active") is our sign-in page in a window
  of its own, which closes itself once the user is signed in;
- the token service (`/iiif/auth/2/token`) is a page the viewer frames: for a signed-in session
  it posts the viewer an access token (api/iiif_auth.py: derived from the session, ended with
  it) — only to our own origin and those of ALLMICRO_CORS_ORIGINS, the pages trusted with bearer
  tokens on /iiif already; any other origin is told `invalidOrigin`;
- the logout service (`/iiif/auth/2/logout`) signs the browser session out, and with it every
  token given for it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from allmicro_data.api import iiif_auth
from allmicro_data.api.deps import OptionalCallerDep, ServicesDep, SessionDep, presented_token
from allmicro_data.api.routers import auth
from allmicro_data.api.routers.iiif import iiif_caller
from allmicro_data.api.viewing import viewing
from allmicro_data.api.web.pages import render, session_csrf
from allmicro_data.auth import resolve_token
from allmicro_data.catalogue.models import TokenKind, utcnow
from allmicro_data.errors import Forbidden, NotFound, Unauthorised
from allmicro_data.services import Services
from allmicro_data.settings import secret_key

router = APIRouter(prefix="/iiif/auth/2", tags=["IIIF"])

PROBE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "an AuthProbeResult2; its `status` is what an image request would get",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
OriginParam = Annotated[str | None, Query(max_length=300, description="the viewer's origin")]


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/probe/{image_id}", responses=PROBE_RESPONSES)
async def probe(image_id: str, request: Request) -> Response:
    """The probe service of an image: HTTP 200 always, the status an image request with the
    same credentials (the viewer's access token) would get in the body: 200, 401, 403 or 404."""
    state = viewing(request)
    try:
        await state.image(await iiif_caller(state, request), image_id)
        status = 200
    except (Unauthorised, Forbidden, NotFound) as refused:
        # 401 no valid token, 403 a token whose scope reads nothing, 404 an image it may not see
        status = refused.status
    probe_id = f"{_origin(request)}/iiif/auth/2/probe/{image_id}"
    return JSONResponse(
        iiif_auth.probe_result(probe_id, status), headers={"Cache-Control": "no-store"}
    )


@router.get("/access", response_class=HTMLResponse, include_in_schema=False)
def access(
    request: Request, services: ServicesDep, caller: OptionalCallerDep, origin: OriginParam = None
) -> Response:
    """The access service: our sign-in page, in the window the viewer opened; signed in, the
    window says so and closes itself (the viewer then asks the token service)."""
    if caller is None:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)
    return render(request, services, "iiif_access.html", {}, caller=caller)


@router.get("/token", response_class=HTMLResponse, include_in_schema=False)
async def token(
    request: Request,
    services: ServicesDep,
    origin: OriginParam = None,
    message_id: Annotated[str | None, Query(alias="messageId", max_length=200)] = None,
) -> Response:
    """The access token service: a page for the viewer's frame that posts it an access token
    for the signed-in browser session, or an AuthAccessTokenError2."""
    if not iiif_auth.valid_origin(origin) or message_id is None:
        return render(request, services, "iiif_token.html", {"message": None}, status=400)
    assert origin is not None
    message: dict[str, Any] = {"@context": iiif_auth.CONTEXT, "messageId": message_id}
    if origin != _origin(request) and origin not in services.settings.cors_origins:
        message |= {"type": "AuthAccessTokenError2", "profile": "invalidOrigin"}
    else:
        minted = await run_in_threadpool(_mint_for_session, request, services)
        if minted is None:
            message |= {"type": "AuthAccessTokenError2", "profile": "missingAspect"}
        else:
            access_token, expires_in = minted
            message |= {
                "type": "AuthAccessToken2",
                "accessToken": access_token,
                "expiresIn": expires_in,
            }
    response = render(request, services, "iiif_token.html", {"message": message, "origin": origin})
    # Only the viewer that asked may frame it; the token goes to that origin alone (postMessage).
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self'; base-uri 'none'; form-action 'none'; "
        f"frame-ancestors {origin}"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _mint_for_session(request: Request, services: Services) -> tuple[str, int] | None:
    """An access token for the browser session of the request (its cookie only), with the
    seconds it lasts; None without a valid session."""
    presented = presented_token(request, services.settings)
    if presented is None or not presented.from_cookie:
        return None
    with services.session() as session:
        resolved = resolve_token(session, presented.plaintext, (TokenKind.SESSION,))
        if resolved is None:
            return None
        user, credential = resolved
        now = utcnow()
        token, grant = iiif_auth.mint(secret_key(services.settings), user, credential, now)
        session.commit()  # the credential's last use
    return token, max(1, int((grant.expires_at - now).total_seconds()))


@router.get("/logout", response_class=HTMLResponse, include_in_schema=False)
def logout_page(request: Request, services: ServicesDep, caller: OptionalCallerDep) -> Response:
    """The logout service: a page whose button signs the browser session out (a form with the
    session's CSRF token: opening a link alone must not sign anyone out)."""
    csrf = session_csrf(request, services) if caller else None
    return render(
        request,
        services,
        "iiif_logout.html",
        {"csrf_token": csrf, "signed_out": False},
        caller=caller,
    )


@router.post("/logout", response_class=HTMLResponse, include_in_schema=False)
def logout(
    request: Request, services: ServicesDep, caller: OptionalCallerDep, session: SessionDep
) -> Response:
    """Sign the browser session out (the caller dependency has checked the form's CSRF token),
    ending every IIIF access token given for it; the window then closes itself."""
    page = render(request, services, "iiif_logout.html", {"csrf_token": None, "signed_out": True})
    if caller is not None:
        ended = auth.logout(caller, session, request)
        for cookie in ended.headers.getlist("set-cookie"):
            page.headers.append("set-cookie", cookie)
    return page
