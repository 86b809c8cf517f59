"""Capability URLs: short-lived, signed, read-only grants to one image's or dataset's pyramids.

The token carries its target and expiry under an HMAC, and names the credential that minted it
(a session, bearer or personal token, by id) with a keyed fingerprint of its user's password.
On use (`holder`) that credential must still be valid, its user enabled and the password
unchanged; the image is then looked up as that credential would, so a lost membership ends the
capability too. A capability never outlives the credential that minted it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from allmicro_data.access import Caller
from allmicro_data.auth import resolve_token_id
from allmicro_data.catalogue.models import AccessToken, User
from allmicro_data.errors import Invalid

PREFIX = "c2"  # c1 capabilities named no credential; they are no longer accepted
MAX_LIFETIME = timedelta(days=7)
DEFAULT_LIFETIME = timedelta(hours=8)


@dataclass(frozen=True)
class Capability:
    id: str
    kind: str  # "image" or "dataset"
    target: str  # the image or dataset id
    user_id: str
    credential_id: str  # the AccessToken (session, bearer or personal) that minted it
    password_mark: str  # password_mark() of the user when it was minted
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"capability:{payload}".encode(), hashlib.sha256).digest()[:24])


def password_mark(key: bytes, user: User) -> str:
    """A keyed fingerprint of the user's password hash: it changes with every password change or
    reset, and tells nothing about the password."""
    material = f"password:{user.id}:{user.password_hash or ''}".encode()
    return _b64(hmac.new(key, material, hashlib.sha256).digest()[:9])


def mint(
    key: bytes,
    *,
    kind: str,
    target: str,
    user: User,
    credential: AccessToken,
    lifetime: timedelta,
    now: datetime,
) -> tuple[str, Capability]:
    """A capability for `target`, minted with `credential`; it ends no later than that does."""
    if kind not in ("image", "dataset"):
        raise Invalid("a capability is for an image or a dataset")
    if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
        raise Invalid(f"a capability lasts between 1 second and {MAX_LIFETIME.days} days")
    if credential.user_id != user.id:
        raise Invalid("a capability is minted with its user's own credential")
    expires_at = now + lifetime
    if credential.expires_at is not None and credential.expires_at < expires_at:
        expires_at = credential.expires_at
    capability = Capability(
        id=secrets.token_hex(8),
        kind=kind,
        target=target,
        user_id=user.id,
        credential_id=credential.id,
        password_mark=password_mark(key, user),
        expires_at=expires_at.replace(microsecond=0),
    )
    payload = _b64(
        json.dumps(
            {
                "i": capability.id,
                "k": kind,
                "t": target,
                "u": user.id,
                "c": capability.credential_id,
                "p": capability.password_mark,
                "e": int(capability.expires_at.timestamp()),
            },
            separators=(",", ":"),
        ).encode()
    )
    return f"{PREFIX}.{payload}.{_mac(key, payload)}", capability


def verify(key: bytes, token: str, now: datetime) -> Capability | None:
    """The capability a token stands for, if its signature holds and it has not expired."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or len(token) > 1000:
        return None
    _, payload, mac = parts
    if not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
        capability = Capability(
            id=str(data["i"]),
            kind=str(data["k"]),
            target=str(data["t"]),
            user_id=str(data["u"]),
            credential_id=str(data["c"]),
            password_mark=str(data["p"]),
            expires_at=datetime.fromtimestamp(int(data["e"]), UTC),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return capability if capability.expires_at > now else None


def holder(session: Session, key: bytes, capability: Capability) -> Caller | None:
    """The caller a capability acts for, or None once it is dead: the credential that minted
    it revoked (logout, DELETE /api/tokens/{id}, a password change signing sessions out) or
    expired, its user disabled, or their password changed since. The caller has that
    credential's scope; what it may see is then decided as for any request."""
    resolved = resolve_token_id(session, capability.credential_id)
    if resolved is None:
        return None
    user, credential = resolved
    if user.id != capability.user_id:
        return None
    if not hmac.compare_digest(password_mark(key, user), capability.password_mark):
        return None
    return Caller.for_user(user, scope=credential.scope, token_id=credential.id)
