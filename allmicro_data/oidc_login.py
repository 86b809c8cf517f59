"""OpenID Connect sign-in: the authorization code flow with PKCE, state and nonce, against a
provider found by discovery from its issuer URL.

authlib's OAuth2 client builds the authorization request and redeems the code; the ID token
is checked with joserfc against the provider's published keys (signature, issuer, audience,
expiry, nonce). The account is its `sub`, with its `email` only when the provider says it is
verified; allmicro_data.institutional maps it to a user and an organisation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from allmicro_data.institutional import InstitutionalAccount
from allmicro_data.settings import OrganisationRule, Settings

# requests, authlib and joserfc (with cryptography) are imported by the methods of a sign-in:
# most servers have no provider configured, and every server imports this module.
if TYPE_CHECKING:
    from authlib.integrations.requests_client import OAuth2Session
    from joserfc.jwk import KeySet

DISCOVERY_PATH = "/.well-known/openid-configuration"
METADATA_SECONDS = 3600.0  # discovery and keys are fetched again after an hour (key rotation)
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
LEEWAY_SECONDS = 60


class OidcFailed(Exception):
    """The provider could not be reached, or what it sent does not hold up."""


@dataclass(frozen=True)
class PendingSignIn:
    """What the browser carries between the redirect to the provider and its return (in a
    signed cookie): the state to compare, the nonce the ID token must hold, the PKCE
    verifier, and where to go afterwards."""

    state: str
    nonce: str
    code_verifier: str
    next_path: str
    started_at: float


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    client_id: str
    client_secret: str | None
    scopes: str
    name: str
    rules: tuple[OrganisationRule, ...]
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcProvider | None:
        """The configured provider, or None when OpenID Connect sign-in is off."""
        if not settings.oidc_issuer or not settings.oidc_client_id:
            return None
        return cls(
            issuer=settings.oidc_issuer.rstrip("/"),
            client_id=settings.oidc_client_id,
            client_secret=(
                settings.oidc_client_secret.get_secret_value()
                if settings.oidc_client_secret is not None
                else None
            ),
            scopes=settings.oidc_scopes,
            name=settings.oidc_provider_name,
            rules=tuple(settings.oidc_organisation_rules),
        )

    # -------------------------------------------------------------- discovery and keys

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached), whose issuer must be the one configured."""
        return _cached(("metadata", self.issuer), lambda: self._discover())

    def _discover(self) -> dict[str, Any]:
        document = _get_json(self.issuer + DISCOVERY_PATH, self.timeout)
        if str(document.get("issuer", "")).rstrip("/") != self.issuer:
            raise OidcFailed("the discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(key), str):
                raise OidcFailed(f"the discovery document has no {key}")
        return document

    def _keys(self, refresh: bool = False) -> KeySet:
        from joserfc.jwk import KeySet

        uri = str(self.metadata()["jwks_uri"])
        if refresh:
            _forget(("jwks", uri))
        keys: KeySet = _cached(
            ("jwks", uri), lambda: KeySet.import_key_set(cast(Any, _get_json(uri, self.timeout)))
        )
        return keys

    def _client(self, redirect_uri: str) -> OAuth2Session:
        from authlib.integrations.requests_client import OAuth2Session

        return OAuth2Session(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=(
                "client_secret_basic" if self.client_secret is not None else "none"
            ),
            default_timeout=self.timeout,
        )

    # -------------------------------------------------------------- the flow

    def begin(self, redirect_uri: str, next_path: str) -> tuple[str, PendingSignIn]:
        """The provider's authorization URL to send the browser to, and what to keep."""
        from authlib.common.security import generate_token

        pending = PendingSignIn(
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),
            next_path=next_path,
            started_at=time.time(),
        )
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                self.metadata()["authorization_endpoint"],
                state=pending.state,
                nonce=pending.nonce,
                code_verifier=pending.code_verifier,
            )
        return str(url), pending

    def finish(self, redirect_uri: str, pending: PendingSignIn, code: str) -> InstitutionalAccount:
        """Redeem the code (with the PKCE verifier) and check the ID token; the account."""
        import requests

        metadata = self.metadata()
        try:
            with self._client(redirect_uri) as client:
                token = client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.code_verifier,
                )
                claims = self._id_token_claims(str(token.get("id_token") or ""), pending.nonce)
                userinfo_endpoint = metadata.get("userinfo_endpoint")
                if "email" not in claims and isinstance(userinfo_endpoint, str):
                    # Some providers put the e-mail only in the UserInfo answer.
                    answer = client.get(userinfo_endpoint)
                    answer.raise_for_status()
                    info = answer.json()
                    if isinstance(info, dict) and info.get("sub") == claims["sub"]:
                        claims = {**info, **claims}
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise OidcFailed(f"the code could not be redeemed: {type(exc).__name__}") from None
        email = claims.get("email")
        verified = claims.get("email_verified") is True
        return InstitutionalAccount(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            email=str(email).strip().lower() if isinstance(email, str) and verified else None,
            display_name=str(claims.get("name") or ""),
            claims=claims,
        )

    def _id_token_claims(self, id_token: str, nonce: str) -> dict[str, Any]:
        from joserfc import jwt
        from joserfc.errors import JoseError

        if not id_token:
            raise OidcFailed("the provider sent no ID token")
        try:
            try:
                decoded = jwt.decode(id_token, self._keys(), algorithms=ID_TOKEN_ALGORITHMS)
            except JoseError:
                # A key we have not seen: the provider may have rotated its keys.
                decoded = jwt.decode(
                    id_token, self._keys(refresh=True), algorithms=ID_TOKEN_ALGORITHMS
                )
            registry = jwt.JWTClaimsRegistry(
                leeway=LEEWAY_SECONDS,
                iss={"essential": True, "value": self.issuer},
                sub={"essential": True},
                aud={"essential": True, "value": self.client_id},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise OidcFailed(f"the ID token does not hold up: {type(exc).__name__}") from None
        claims = dict(decoded.claims)
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise OidcFailed("the ID token was issued to another client")
        return claims


# ------------------------------------------------------------------ small caches


_cache: dict[tuple[str, str], tuple[float, Any]] = {}
_cache_lock = threading.Lock()


def _cached(key: tuple[str, str], fetch: Any) -> Any:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < METADATA_SECONDS:
        return hit[1]
    value = fetch()
    with _cache_lock:
        _cache[key] = (now, value)
    return value


def _forget(key: tuple[str, str]) -> None:
    with _cache_lock:
        _cache.pop(key, None)


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    import requests

    try:
        response = requests.get(url, timeout=timeout, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise OidcFailed(f"{url} could not be read: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise OidcFailed(f"{url} is not a JSON object")
    return document
