"""IIIF Authorization Flow 2.0: the access tokens a viewer gets for a signed-in browser session,
and the service descriptions an image's info.json declares.

An access token is derived from the browser session that asked for it, like a capability URL:
it is signed, names that session's credential with a fingerprint of its user's password, and
is accepted (as `Authorization: Bearer` on IIIF requests only) while that session is valid.
Signing out, a password change, a disabled user or an expired session therefore end it, and it
can never outlive the session; nothing is stored for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from datetime import UTC, datetime, timedelta

from allmicro_data.capabilities import Capability, password_mark
from allmicro_data.catalogue.models import AccessToken, User

PREFIX = "iiif1"
LIFETIME = timedelta(hours=1)
CONTEXT = "http://iiif.io/api/auth/2/context.json"
# An origin as browsers send it: scheme, host, optional port; nothing a header could be split by.
_ORIGIN = re.compile(
    r"^https?://[A-Za-z0-9.\-]+(?::\d{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$"
)


def valid_origin(origin: str | None) -> bool:
    return origin is not None and len(origin) <= 300 and _ORIGIN.match(origin) is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"iiif-access:{payload}".encode(), hashlib.sha256).digest()[:24])


def mint(key: bytes, user: User, credential: AccessToken, now: datetime) -> tuple[str, Capability]:
    """An access token for a viewer, derived from `credential` (the browser session); it ends
    no later than the session does."""
    expires_at = now + LIFETIME
    if credential.expires_at is not None and credential.expires_at < expires_at:
        expires_at = credential.expires_at
    grant = Capability(
        id=secrets.token_hex(8),
        kind="iiif-access",
        target="",
        user_id=user.id,
        credential_id=credential.id,
        password_mark=password_mark(key, user),
        expires_at=expires_at.replace(microsecond=0),
    )
    payload = _b64(
        json.dumps(
            {
                "i": grant.id,
                "u": grant.user_id,
                "c": grant.credential_id,
                "p": grant.password_mark,
                "e": int(grant.expires_at.timestamp()),
            },
            separators=(",", ":"),
        ).encode()
    )
    return f"{PREFIX}.{payload}.{_mac(key, payload)}", grant


def is_access_token(token: str) -> bool:
    return token.startswith(PREFIX + ".")


def verify(key: bytes, token: str, now: datetime) -> Capability | None:
    """The grant an access token stands for, if its signature holds and it has not expired;
    whether its session still lives is `capabilities.holder`'s question, as for capabilities."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or len(token) > 1000:
        return None
    _, payload, mac = parts
    if not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
        grant = Capability(
            id=str(data["i"]),
            kind="iiif-access",
            target="",
            user_id=str(data["u"]),
            credential_id=str(data["c"]),
            password_mark=str(data["p"]),
            expires_at=datetime.fromtimestamp(int(data["e"]), UTC),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return grant if grant.expires_at > now else None


# ------------------------------------------------------------------ service descriptions


def _text(en: str, it: str, sl: str) -> dict[str, list[str]]:
    return {"en": [en], "it": [it], "sl": [sl]}


def services(base: str, image_id: str) -> list[dict[str, object]]:
    """The `service` entry of a protected image's info.json: a probe, whose access service is
    our sign-in in a window of its own, with a token service and a logout service."""
    return [
        {
            "id": f"{base}/iiif/auth/2/probe/{image_id}",
            "type": "AuthProbeService2",
            "service": [access_service(base)],
        }
    ]


def access_service(base: str) -> dict[str, object]:
    return {
        "id": f"{base}/iiif/auth/2/access",
        "type": "AuthAccessService2",
        "profile": "active",
        "label": _text(
            "Sign in to AllMicro Data",
            "Accedi ad AllMicro Data",
            "Prijava v AllMicro Data",
        ),
        "heading": _text(
            "This image is in a project of the AllMicro microscopy network",
            "Questa immagine appartiene a un progetto della rete di microscopia AllMicro",
            "Ta slika je v projektu mikroskopske mreže AllMicro",
        ),
        "note": _text(
            "Sign in with your AllMicro Data account to view it.",
            "Accedi con il tuo account AllMicro Data per vederla.",
            "Za ogled se prijavite s svojim računom AllMicro Data.",
        ),
        "confirmLabel": _text("Sign in", "Accedi", "Prijava"),
        "service": [
            {
                "id": f"{base}/iiif/auth/2/token",
                "type": "AuthAccessTokenService2",
                "errorHeading": _text(
                    "Not signed in", "Accesso non effettuato", "Niste prijavljeni"
                ),
                "errorNote": _text(
                    "Sign in again, or ask a manager of the project for access.",
                    "Accedi di nuovo o chiedi l'accesso a un responsabile del progetto.",
                    "Znova se prijavite ali prosite upravitelja projekta za dostop.",
                ),
            },
            {
                "id": f"{base}/iiif/auth/2/logout",
                "type": "AuthLogoutService2",
                "label": _text("Sign out", "Esci", "Odjava"),
            },
        ],
    }


def probe_result(probe_id: str, status: int) -> dict[str, object]:
    """What the probe answers (always with HTTP 200): the status an image request would get."""
    result: dict[str, object] = {
        "@context": CONTEXT,
        "id": probe_id,
        "type": "AuthProbeResult2",
        "status": status,
    }
    if status == 401:
        result["heading"] = _text("Sign in to view", "Accedi per vedere", "Za ogled se prijavite")
        result["note"] = _text(
            "This image is only shown to members of its project.",
            "Questa immagine è visibile solo ai membri del suo progetto.",
            "Ta slika je vidna samo članom njenega projekta.",
        )
    elif status in (403, 404):
        result["heading"] = _text("Not available", "Non disponibile", "Ni na voljo")
        result["note"] = _text(
            "This account may not see this image, or it does not exist.",
            "Questo account non può vedere questa immagine, oppure non esiste.",
            "Ta račun ne sme videti te slike ali pa ta ne obstaja.",
        )
    return result
