"""Real identity and mail servers for the institutional sign-in and notification tests: Debian's
OpenLDAP slapd, the npm OpenID Connect provider `oidc-provider` (panva, certified) under node,
and an aiosmtpd SMTP server; each on a free loopback port in a temp directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, TLS, free_port, wait_until

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
NODE = shutil.which("node")
OIDC_PROVIDER = REPO / "node_modules" / "oidc-provider"


def _unavailable(reason: str) -> None:
    # In CI a missing server is a failure; elsewhere a skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# ------------------------------------------------------------------ OpenLDAP


@dataclass(frozen=True)
class LdapPerson:
    uid: str
    password: str
    mail: str
    name: str
    groups: tuple[str, ...] = ()


@dataclass
class Slapd:
    url: str
    base: str
    service_dn: str
    service_password: str
    ca_file: Path
    process: subprocess.Popen[bytes]

    def dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.base}"

    def group_dn(self, cn: str) -> str:
        return f"cn={cn},ou=groups,{self.base}"


def _ldif(base: str, service_password: str, people: list[LdapPerson]) -> str:
    lines = [
        f"dn: {base}",
        "objectClass: dcObject",
        "objectClass: organization",
        "o: Test University",
        f"dc: {base.split(',')[0].split('=')[1]}",
        "",
        f"dn: ou=people,{base}",
        "objectClass: organizationalUnit",
        "ou: people",
        "",
        f"dn: ou=groups,{base}",
        "objectClass: organizationalUnit",
        "ou: groups",
        "",
        f"dn: cn=reader,{base}",
        "objectClass: organizationalRole",
        "objectClass: simpleSecurityObject",
        "cn: reader",
        f"userPassword: {service_password}",
        "",
    ]
    for person in people:
        lines += [
            f"dn: uid={person.uid},ou=people,{base}",
            "objectClass: inetOrgPerson",
            f"uid: {person.uid}",
            f"cn: {person.name}",
            f"sn: {person.name.split()[-1]}",
            f"mail: {person.mail}",
            f"userPassword: {person.password}",
            "",
        ]
    groups: dict[str, list[str]] = {}
    for person in people:
        for group in person.groups:
            groups.setdefault(group, []).append(f"uid={person.uid},ou=people,{base}")
    for group, members in groups.items():
        lines += [f"dn: cn={group},ou=groups,{base}", "objectClass: groupOfNames", f"cn: {group}"]
        lines += [f"member: {m}" for m in members]
        lines.append("")
    return "\n".join(lines) + "\n"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate it signed for 127.0.0.1: (CA, certificate, key) PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AllMicro test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@contextmanager
def running_slapd(directory: Path, people: list[LdapPerson]) -> Iterator[Slapd]:
    """slapd with an mdb database loaded by slapadd, on a free loopback port, that takes binds
    only over TLS (StartTLS, with a certificate from a CA of its own: Slapd.ca_file)."""
    if not SLAPD.exists() or not SLAPADD.exists():
        _unavailable("Debian's slapd is missing (apt-get install slapd ldap-utils)")
    base = "dc=uni,dc=example"
    service_password = "reader secret 7"
    (directory / "db").mkdir(parents=True)
    ca_file, certificate, key = _certificates(directory)
    config = directory / "slapd.conf"
    config.write_text(
        textwrap.dedent(
            f"""\
            include /etc/ldap/schema/core.schema
            include /etc/ldap/schema/cosine.schema
            include /etc/ldap/schema/inetorgperson.schema
            modulepath /usr/lib/ldap
            moduleload back_mdb
            pidfile {directory}/slapd.pid
            TLSCACertificateFile {ca_file}
            TLSCertificateFile {certificate}
            TLSCertificateKeyFile {key}
            # Binds and searches only over TLS: a client that skipped StartTLS fails.
            security tls=1
            database mdb
            maxsize 10485760
            suffix "{base}"
            rootdn "cn=admin,{base}"
            directory {directory}/db
            access to attrs=userPassword by anonymous auth by * none
            access to * by users read by * none
            """
        )
    )
    ldif = directory / "people.ldif"
    ldif.write_text(_ldif(base, service_password, people))
    subprocess.run(
        [str(SLAPADD), "-f", str(config), "-l", str(ldif)], check=True, capture_output=True
    )
    port = free_port()
    url = f"ldap://127.0.0.1:{port}"
    log = (directory / "slapd.log").open("wb")
    # -d 0: stay in the foreground (a child we can stop), logging nothing but errors.
    process = subprocess.Popen(
        [str(SLAPD), "-f", str(config), "-h", url, "-d", "0"], stdout=log, stderr=log
    )
    log.close()

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError((directory / "slapd.log").read_text(errors="replace"))
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, timeout=20, what="slapd")
        yield Slapd(url, base, f"cn=reader,{base}", service_password, ca_file, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ OpenID Connect


@dataclass
class OidcProvider:
    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[bytes]
    log_path: Path


PROVIDER_JS = """\
// A test OpenID Connect provider: panva's oidc-provider with its development login form.
const { default: Provider } = await import(process.env.OIDC_PROVIDER_MODULE);
const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const accounts = config.accounts;
const provider = new Provider(config.issuer, {
  clients: [config.client],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.listen(config.port, '127.0.0.1', () => console.log('listening'));
"""


@contextmanager
def running_oidc_provider(
    directory: Path, redirect_uri: str, accounts: dict[str, dict[str, Any]]
) -> Iterator[OidcProvider]:
    """oidc-provider 9 under node, one confidential client, accounts by login name."""
    if NODE is None or not (OIDC_PROVIDER / "package.json").is_file():
        _unavailable("node or node_modules/oidc-provider is missing (make web installs it)")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    client = {
        "client_id": "allmicro-test",
        "client_secret": "allmicro test client secret 42",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    script = directory / "provider.mjs"
    script.write_text(PROVIDER_JS)
    entry = json.loads((OIDC_PROVIDER / "package.json").read_text()).get("main", "lib/index.js")
    env = {
        **os.environ,
        "OIDC_PROVIDER_MODULE": (OIDC_PROVIDER / entry).as_uri(),
        "OIDC_TEST_CONFIG": json.dumps(
            {"issuer": issuer, "port": port, "client": client, "accounts": accounts}
        ),
        "NODE_ENV": "development",
    }
    log_path = directory / "provider.log"
    log = log_path.open("wb")
    process = subprocess.Popen([NODE, str(script)], env=env, stdout=log, stderr=log)
    log.close()

    def discovered() -> bool:
        if process.poll() is not None:
            raise AssertionError(log_path.read_text(errors="replace"))
        try:
            return (
                httpx.get(
                    f"{issuer}/.well-known/openid-configuration", timeout=2, verify=TLS
                ).status_code
                == 200
            )
        except httpx.TransportError:
            return False

    try:
        wait_until(discovered, timeout=30, what="oidc-provider")
        yield OidcProvider(issuer, client["client_id"], client["client_secret"], process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ SMTP


@dataclass
class MailSink:
    """Messages an aiosmtpd server received, parsed."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)


@contextmanager
def running_smtp_server() -> Iterator[MailSink]:
    """aiosmtpd's Controller: a real SMTP server in a thread of the test process."""
    from aiosmtpd.controller import Controller

    sink = MailSink("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            parsed = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            with sink.lock:
                sink.messages.append(parsed)
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
