"""Capability URLs: short-lived, signed, read-only grants to one image's or dataset's pyramids.

The token carries its own scope and expiry under an HMAC, so any server process can check it
without a lookup; the minting user's access is re-checked on use, so removing them from the
project ends their capabilities too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from allmicro_data.errors import Invalid

PREFIX = "c1"
MAX_LIFETIME = timedelta(days=7)
DEFAULT_LIFETIME = timedelta(hours=8)


@dataclass(frozen=True)
class Capability:
    id: str
    kind: str  # "image" or "dataset"
    target: str  # the image or dataset id
    user_id: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"capability:{payload}".encode(), hashlib.sha256).digest()[:24])


def mint(
    key: bytes, *, kind: str, target: str, user_id: str, lifetime: timedelta, now: datetime
) -> tuple[str, Capability]:
    if kind not in ("image", "dataset"):
        raise Invalid("a capability is for an image or a dataset")
    if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
        raise Invalid(f"a capability lasts between 1 second and {MAX_LIFETIME.days} days")
    capability = Capability(
        id=secrets.token_hex(8),
        kind=kind,
        target=target,
        user_id=user_id,
        expires_at=(now + lifetime).replace(microsecond=0),
    )
    payload = _b64(
        json.dumps(
            {
                "i": capability.id,
                "k": kind,
                "t": target,
                "u": user_id,
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
            expires_at=datetime.fromtimestamp(int(data["e"]), UTC),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return capability if capability.expires_at > now else None
