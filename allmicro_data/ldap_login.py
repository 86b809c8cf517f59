"""LDAP / Active Directory sign-in: a bind with the password typed, as the user's own entry.

The entry is found by a search (a service account, or anonymously, with a filter such as
`(|(uid={u})(mail={u}))`, or `sAMAccountName` for AD) or named by a DN template; the bind
with the typed password is the only proof. Its e-mail, name and groups (memberOf, or a group
search for directories without it) say which user and organisation it signs in as
(allmicro_data.institutional).
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from allmicro_data.institutional import InstitutionalAccount
from allmicro_data.settings import OrganisationRule, Settings

# ldap3 (with pyasn1) is imported by the methods that talk to a directory: most servers have
# none configured, and every server, CLI command and job process imports this module.
if TYPE_CHECKING:
    from ldap3 import Connection, ServerPool

log = logging.getLogger(__name__)


class DirectoryUnavailable(Exception):
    """No directory server answered (or the service account could not bind)."""


@dataclass(frozen=True)
class LdapDirectory:
    """A directory to check passwords against, as configured (ALLMICRO_LDAP_*)."""

    urls: tuple[str, ...]
    start_tls: bool
    ca_file: str | None
    bind_dn_template: str | None
    service_dn: str | None
    service_password: str | None
    search_base: str | None
    search_filter: str
    email_attribute: str
    name_attribute: str
    group_attribute: str
    group_search_base: str | None
    group_filter: str
    timeout: float
    rules: tuple[OrganisationRule, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> LdapDirectory | None:
        """The configured directory, or None when LDAP sign-in is off."""
        if not settings.ldap_urls:
            return None
        return cls(
            urls=tuple(settings.ldap_urls),
            start_tls=settings.ldap_start_tls,
            ca_file=str(settings.ldap_ca_file) if settings.ldap_ca_file else None,
            bind_dn_template=settings.ldap_bind_dn_template,
            service_dn=settings.ldap_service_dn,
            service_password=(
                settings.ldap_service_password.get_secret_value()
                if settings.ldap_service_password is not None
                else None
            ),
            search_base=settings.ldap_search_base,
            search_filter=settings.ldap_search_filter,
            email_attribute=settings.ldap_email_attribute,
            name_attribute=settings.ldap_name_attribute,
            group_attribute=settings.ldap_group_attribute,
            group_search_base=settings.ldap_group_search_base,
            group_filter=settings.ldap_group_filter,
            timeout=settings.ldap_timeout_seconds,
            rules=tuple(settings.ldap_organisation_rules),
        )

    @property
    def issuer(self) -> str:
        """Names the directory in external identities: stable when servers are added."""
        return f"ldap:{self.search_base or self.bind_dn_template}"

    def _pool(self) -> ServerPool:
        from ldap3 import FIRST, NONE, Server, ServerPool, Tls

        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_file=self.ca_file,
        )
        servers = [
            Server(
                url,
                use_ssl=url.lower().startswith("ldaps://"),
                tls=tls,
                connect_timeout=self.timeout,
                get_info=NONE,
            )
            for url in self.urls
        ]
        # One pass over the servers, in order; a dead one is skipped, not waited for again.
        return ServerPool(servers, FIRST, active=1, exhaust=False)

    def _bind(self, user: str | None, password: str | None) -> Connection | None:
        """A bound connection, or None when the directory refused the credentials."""
        from ldap3 import Connection
        from ldap3.core.exceptions import LDAPException

        connection = Connection(
            self._pool(),
            user=user,
            password=password,
            receive_timeout=max(1, math.ceil(self.timeout)),
            read_only=True,
            raise_exceptions=False,
        )
        try:
            connection.open()
            if self.start_tls and not connection.start_tls():
                raise DirectoryUnavailable("StartTLS failed (is the server's certificate trusted?)")
            if connection.bind():
                return connection
        except (LDAPException, OSError) as exc:
            _close(connection)
            raise DirectoryUnavailable(f"{type(exc).__name__}: {exc}") from None
        except DirectoryUnavailable:
            _close(connection)
            raise
        result = connection.result or {}
        _close(connection)
        # 49 invalidCredentials (AD adds its data code in the message): a wrong password.
        if result.get("result") == 49:
            return None
        raise DirectoryUnavailable(f"bind refused: {result.get('description')}")

    def authenticate(self, username: str, password: str) -> InstitutionalAccount | None:
        """The account whose password this is, or None (unknown name or wrong password).

        An empty password is refused here: most directories take a bind with one as an
        anonymous bind and answer success (RFC 4513, unauthenticated bind).
        """
        username = username.strip()
        if not username or not password or len(username) > 320:
            return None
        from ldap3 import BASE, SUBTREE
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn

        attributes = [self.email_attribute, self.name_attribute, self.group_attribute]
        searcher: Connection | None = None
        try:
            if self.search_base:
                searcher = self._bind(self.service_dn, self.service_password)
                if searcher is None:
                    raise DirectoryUnavailable("the service account's bind was refused")
                found = self._search(searcher, username, attributes)
                if found is None:
                    return None
                dn, values = found
                user = self._bind(dn, password)
                if user is None:
                    return None
                _close(user)
            else:
                assert self.bind_dn_template is not None
                dn = self.bind_dn_template.replace("{u}", escape_rdn(username))
                searcher = self._bind(dn, password)
                if searcher is None:
                    return None
                searcher.search(dn, "(objectClass=*)", BASE, attributes=attributes)
                entries = searcher.response or []
                values = dict(entries[0].get("attributes", {})) if entries else {}
            groups = list(_values(values.get(self.group_attribute)))
            if self.group_search_base:
                searcher.search(
                    self.group_search_base,
                    self.group_filter.replace("{dn}", escape_filter_chars(dn)),
                    SUBTREE,
                    attributes=[],
                )
                groups += [
                    r["dn"] for r in searcher.response or [] if r.get("type") == "searchResEntry"
                ]
        finally:
            if searcher is not None:
                _close(searcher)
        emails = _values(values.get(self.email_attribute))
        names = _values(values.get(self.name_attribute))
        return InstitutionalAccount(
            issuer=self.issuer,
            subject=dn.lower(),
            email=emails[0].strip().lower() if emails else None,
            display_name=names[0] if names else "",
            groups=tuple(groups),
        )

    def _search(
        self, connection: Connection, username: str, attributes: list[str]
    ) -> tuple[str, dict[str, object]] | None:
        from ldap3 import SUBTREE
        from ldap3.utils.conv import escape_filter_chars

        assert self.search_base is not None
        query = self.search_filter.replace("{u}", escape_filter_chars(username))
        connection.search(self.search_base, query, SUBTREE, attributes=attributes, size_limit=2)
        entries = [r for r in connection.response or [] if r.get("type") == "searchResEntry"]
        if len(entries) != 1:
            # None, or a name that is not unique: never guess which entry was meant.
            return None
        return str(entries[0]["dn"]), dict(entries[0].get("attributes", {}))


def _close(connection: Connection) -> None:
    """Unbind, whatever state the connection is in (a failed TLS handshake leaves it broken)."""
    from ldap3.core.exceptions import LDAPException

    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)] if value != "" else []
