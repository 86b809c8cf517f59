"""Server settings: one class, read from ALLMICRO_* environment variables and an optional TOML file."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _origin_list(value: object) -> object:
    """Origins from "https://a, https://b:8443" or a JSON list, each a bare scheme://host[:port]
    (a path or '*' fails at start: '*' must never answer a request carrying a bearer token)."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list):
        return value
    origins = [str(v).strip().rstrip("/") for v in value if str(v).strip()]
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest or "*" in rest:
            raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    return origins


def _address_list(value: object) -> object:
    """Addresses and networks from "a, b/24" or a JSON list; each must parse, so that a typo
    fails at start instead of silently trusting nobody (or the wrong peer)."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list):
        return value
    entries = [str(v).strip() for v in value if str(v).strip()]
    for entry in entries:
        if entry != "*":
            ipaddress.ip_network(entry, strict=False)
    return entries


def _url_list(value: object) -> object:
    """URLs from "ldaps://a, ldaps://b" or a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list):
        return value
    return [str(v).strip() for v in value if str(v).strip()]


# Jobs of larger files are "large" (allmicro_data/jobs.py lanes): a 16k² SEM, a tomogram.
DEFAULT_JOB_LARGE_FILE_BYTES = 256 * 1024**2


class OrganisationRule(BaseModel):
    """Which organisation an institutional account belongs to: the first rule whose conditions
    all hold (none: everyone) names it by its name."""

    model_config = ConfigDict(extra="forbid")

    organisation: str
    email_domain: str | None = None
    group: str | None = None
    claim: str | None = None
    value: str | None = None


def _toml_file() -> Path | None:
    configured = os.environ.get("ALLMICRO_CONFIG_FILE")
    return Path(configured) if configured else None


class Settings(BaseSettings):
    """Everything an operator can set. Defaults run the embedded server under ./allmicro-data/."""

    model_config = SettingsConfigDict(env_prefix="ALLMICRO_", extra="ignore")

    data_dir: Path = Field(
        default=Path("allmicro-data"),
        description="Root for the embedded database and object store.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file under data_dir."
    )
    db_pool_size: int = Field(
        default=10,
        ge=1,
        description="PostgreSQL connections each process keeps open (plus db_max_overflow at "
        "peaks): size max_connections for (serve + worker processes) times both.",
    )
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a request waits for a free connection."
    )
    storage_url: str | None = Field(
        default=None,
        description="file:///path or s3://bucket/prefix?endpoint=…; default: data_dir/objects.",
    )
    replica_urls: list[str] = Field(
        default_factory=list,
        description="Stores that hold a copy of everything (JSON list of file:// or s3:// URLs).",
    )
    replica_quorum: int = Field(
        default=0,
        ge=0,
        description="Replicas that must hold an object before a write succeeds; the others "
        "get it later from the durable to-do list.",
    )
    replica_retry_seconds: float = Field(
        default=15.0, gt=0, description="How often a failed replica is tried again and caught up."
    )
    s3_access_key: SecretStr | None = Field(
        default=None, description="Access key of the S3 stores (ALLMICRO_S3_ACCESS_KEY)."
    )
    s3_secret_key: SecretStr | None = None
    presigned_downloads: bool = Field(
        default=False,
        description="Answer downloads of originals with a redirect to a short-lived presigned "
        "S3 URL; only for stores the users' browsers can reach.",
    )
    presigned_expiry_seconds: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    scrub_interval_hours: float = Field(
        default=168.0,
        ge=0,
        description="The server scrubs (and repairs) every copy this often; 0 turns it off.",
    )
    scrub_bandwidth: int = Field(
        default=50 * 1024**2,
        ge=0,
        description="Bytes per second a scheduled scrub may read; 0 means no cap.",
    )
    queue: Literal["embedded", "celery"] = Field(
        default="embedded",
        description="embedded: jobs run in the server's own processes; celery: job ids go to "
        "the broker and `allmicro worker` processes (on any host) run them.",
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker, e.g. redis://host:6379/0 or amqp://host//."
    )
    celery_queue: str = Field(default="allmicro-jobs", description="The broker queue's name.")
    job_dispatch_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often workers put expired jobs back and send queued ids again.",
    )
    celery_large_jobs: int = Field(
        default=1,
        ge=1,
        description="With queue=celery: jobs of large files (job_large_file_bytes) sent to the "
        "workers at once, all workers together; the others wait queued. Keep it below the "
        "workers' total concurrency, so that small files always find a free process.",
    )
    job_redispatch_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A queued job sent this long ago and not yet claimed is sent again "
        "(the broker lost the message).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs sessions and links; default: a key generated once under data_dir.",
    )
    admin_email: str = "admin@localhost"
    admin_password: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    http_protocol: Literal["uncopied", "stock"] = Field(
        default="uncopied",
        description="HTTP protocol of `allmicro serve`: 'uncopied' hands request bodies over as "
        "the socket gave them (api/http_server.py, about twice stock's upload ceiling; it "
        "relies on uvicorn internals); 'stock' is uvicorn's own httptools protocol.",
    )
    upgrade_on_start: bool = Field(
        default=True,
        description="Apply catalogue migrations when the server starts (embedded default).",
    )
    job_workers: int = Field(default=2, ge=0, description="Processes of the embedded job runner.")
    job_lease_seconds: float = Field(default=60.0, gt=0)
    job_large_file_bytes: int = Field(
        default=DEFAULT_JOB_LARGE_FILE_BYTES,
        gt=0,
        description="Jobs of files larger than this (minutes of work on a busy day: a 16k² "
        "SEM, a tomogram) run in the large lane: a free worker of the embedded runner starts "
        "a waiting large job at once, so it does not end the day alone, and while every worker "
        "holds a large job one more process takes small files, so a small file never waits "
        "behind one.",
    )
    job_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Niceness added to ingest work: job processes (embedded and Celery "
        "workers) and the server's threads that write and hash uploads. Ingest yields the CPU "
        "to request handling, so viewers are served while files arrive and convert.",
    )
    job_idle_scheduling: bool = Field(
        default=True,
        description="Linux: job processes (embedded and Celery workers) also run in the "
        "SCHED_IDLE scheduling class, so they get the CPU that request handling and uploads "
        "leave, and a viewer's request takes it from them at once. On a busy machine ingest "
        "then waits for viewers entirely, where niceness alone left it a tenth. The server's "
        "upload threads stay niced only: they share the interpreter lock with request "
        "handling, which must not wait for a thread that gets no CPU.",
    )
    job_max_attempts: int = Field(default=3, ge=1)
    storage_full_retry_seconds: float = Field(
        default=180.0,
        gt=0,
        description="A job that found the store full waits this long before it tries again, "
        "twice as long after each further try (at most 16 times as long); such tries do not "
        "count against job_max_attempts, so the job resumes by itself once space is freed.",
    )
    max_upload_bytes: int = Field(
        default=200 * 1024**3,
        gt=0,
        description="The largest upload accepted (advertised as tus Tus-Max-Size); larger "
        "ones answer 413.",
    )
    max_user_inflight_bytes: int = Field(
        default=400 * 1024**3,
        gt=0,
        description="Bytes one user's unfinished uploads may declare together: a new upload "
        "past it answers 429 (413 if it alone is larger).",
    )
    max_user_inflight_uploads: int = Field(
        default=100, ge=1, description="Unfinished uploads one user may have at a time (429)."
    )
    upload_min_free_bytes: int = Field(
        default=0,
        ge=0,
        description="Bytes kept free on the spool's filesystem beyond what every upload in "
        "flight has reserved (its declared bytes not yet received); an upload that would cut "
        "into them answers 507.",
    )
    max_image_pixels: int = Field(
        default=10**11,
        gt=0,
        description="Samples (pixels of every plane and channel) one image may declare; an "
        "original declaring more fails its ingest job before any pyramid is written.",
    )
    max_pixel_compression_ratio: float = Field(
        default=1000.0,
        ge=1,
        description="How many times the original's size its declared pixels may take "
        "uncompressed (beyond a fixed 256 MiB any file may declare); more fails the ingest "
        "job as a decompression bomb.",
    )
    pyramid_ngff: Literal["0.4", "0.5"] = Field(
        default="0.4",
        description="NGFF version of the pyramids ingest writes: 0.4 (zarr v2, what most "
        "viewers read) or 0.5 (zarr v3; sharded, recommended on S3). Pyramids written before "
        "keep theirs; both are served alike.",
    )
    pyramid_chunk: int | None = Field(
        default=None,
        ge=2,
        multiple_of=2,
        description="Chunk side in pixels (even); default: 512 for planes, 128 for volumes.",
    )
    pyramid_codec: str = Field(
        default="blosc-zstd:1",
        pattern=r"^(zstd(:(1?[0-9]|2[0-2]))?|blosc-(zstd|lz4)(:[0-9])?)$",
        description="Chunk compressor and level: zstd[:0-22], blosc-zstd[:0-9], blosc-lz4[:0-9].",
    )
    pyramid_shard: bool = Field(
        default=True,
        description="NGFF 0.5 only: one object per chunk row of a level (sharded) instead of "
        "one per chunk, for stores that pay per object.",
    )
    upload_dir: Path | None = Field(
        default=None,
        description="Where partial uploads are spooled; default: data_dir/uploads. Several API "
        "processes behind one address must share it (a volume all of them mount), since a "
        "client's next request may reach another process; on the local store's filesystem, "
        "finished uploads are renamed into the store instead of copied.",
    )
    upload_expiry_seconds: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="Unfinished resumable uploads idle this long are deleted.",
    )
    ingest_local_copies_gb: float = Field(
        default=16.0,
        ge=0,
        description="With a store the uploads are not renamed into (S3): up to this many GB of "
        "just-uploaded originals stay beside the uploads until their ingest job has read them, "
        "so a job on this machine reads its original from disk instead of downloading it "
        "again; 0 keeps none.",
    )
    companion_wait_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long a file of a multi-file acquisition (a TIA .ser, a DE movie) waits "
        "for the files its vendor writes beside it (the .emi, the _info.txt) before its image "
        "is built from what arrived, with a warning naming what is missing.",
    )
    login_max_failures: int = Field(
        default=20,
        ge=1,
        description="Failed sign-ins to one account from one client address within "
        "login_lockout_seconds before that address is refused (429) for that account: "
        "someone guessing elsewhere does not lock the owner out.",
    )
    login_account_max_failures: int = Field(
        default=500,
        ge=1,
        description="Failed sign-ins to one account from all addresses within "
        "login_lockout_seconds before the whole account is locked for that long; with the "
        "per-address limit only a guessing attack from many addresses gets there.",
    )
    login_lockout_seconds: float = Field(default=900.0, gt=0)
    # argon2id's cost (RFC 9106's second recommended option by default). Hashes record the
    # parameters they were made with, so changing these never locks anyone out.
    argon2_time_cost: int = Field(default=3, ge=1, description="argon2id passes over memory.")
    argon2_memory_kib: int = Field(
        default=65536, ge=8, description="argon2id memory per password hash, in KiB."
    )
    argon2_parallelism: int = Field(default=4, ge=1, description="argon2id lanes.")
    login_address_limit: int = Field(
        default=100, ge=1, description="Failed logins per client address per window before 429."
    )
    login_address_window_seconds: float = Field(default=900.0, gt=0)
    session_hours: float = Field(default=12.0, gt=0)
    trusted_proxies: Annotated[list[str], NoDecode, BeforeValidator(_address_list)] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Peers whose X-Forwarded-For and X-Forwarded-Proto are believed: addresses "
        "or CIDR networks, comma-separated (or a JSON list); '*' trusts every peer (only when "
        "nothing but the proxy can reach the port). Everyone else's are ignored.",
    )
    hsts_seconds: int = Field(
        default=365 * 24 * 3600,
        ge=0,
        description="max-age of the Strict-Transport-Security header sent on responses "
        "served over HTTPS (directly or through a trusted proxy); 0: none.",
    )
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(_origin_list)] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port], comma-separated or a JSON list) whose "
        "pages may call /zarr, /iiif and /api/uploads with a bearer token; none by default. "
        "Capability URLs (/zarr/c/..., /iiif/3/c/...) answer every origin; the IIIF auth token "
        "page gives access tokens only to pages of these origins (and of this server).",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Also serve /metrics without credentials on this port (0: off), for "
        "Prometheus on a private network; on the app's port /metrics needs an admin.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of metrics_port.")
    share_link_max_days: int = Field(default=90, ge=1)
    trash_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Days a deleted image, dataset or project stays in the trash (restorable) "
        "before the server purges it; a project under legal hold is never purged.",
    )
    trash_purge_interval_seconds: float = Field(
        default=3600.0, gt=0, description="How often the server purges what has expired."
    )
    iiif_max_width: int = Field(
        default=8192, ge=1, description="Widest picture one IIIF request may produce (maxWidth)."
    )
    iiif_max_height: int = Field(
        default=8192, ge=1, description="Tallest picture one IIIF request may produce (maxHeight)."
    )
    iiif_max_area: int = Field(
        default=4096 * 4096,
        ge=1,
        description="Most pixels one IIIF request may produce (maxArea): `max` sizes shrink to "
        "it, larger explicit sizes answer 400.",
    )
    render_memory_mb: int = Field(
        default=512,
        ge=1,
        description="Memory the pictures being rendered at once may take, by estimate, per "
        "server process; a quarter is kept for tile-sized renders.",
    )
    render_wait_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a render waits for room in render_memory_mb before the request "
        "answers 503 with Retry-After.",
    )
    # Institutional sign-in (LDAP / Active Directory, OpenID Connect) and e-mail notices.
    public_url: str | None = Field(
        default=None,
        description="The server's address as people reach it (https://data.example.org): "
        "the OpenID Connect redirect address and the links in e-mails are made from it.",
    )
    ldap_urls: Annotated[list[str], NoDecode, BeforeValidator(_url_list)] = Field(
        default_factory=list,
        description="LDAP or Active Directory servers (ldap://host:389 or ldaps://host:636, "
        "comma-separated, tried in order); none: LDAP sign-in off.",
    )
    ldap_start_tls: bool = Field(
        default=False, description="Upgrade ldap:// connections with StartTLS before binding."
    )
    ldap_ca_file: Path | None = Field(
        default=None, description="CA certificates (PEM) the LDAP servers' certificates chain to."
    )
    ldap_bind_dn_template: str | None = Field(
        default=None,
        description="Bind directly as this DN, {u} standing for the name typed "
        "(uid={u},ou=people,dc=example,dc=org, or {u}@example.org for AD); unset: search.",
    )
    ldap_service_dn: str | None = Field(
        default=None, description="Account that searches for the user's entry (unset: anonymous)."
    )
    ldap_service_password: SecretStr | None = None
    ldap_search_base: str | None = Field(
        default=None, description="Where users are searched for (dc=example,dc=org)."
    )
    ldap_search_filter: str = Field(
        default="(|(uid={u})(mail={u}))",
        description="Finds the user's entry, {u} standing for the name typed (escaped); for "
        "AD: (|(sAMAccountName={u})(userPrincipalName={u})(mail={u})).",
    )
    ldap_email_attribute: str = "mail"
    ldap_name_attribute: str = Field(default="cn", description="displayName for AD.")
    ldap_group_attribute: str = Field(
        default="memberOf", description="The entry's attribute listing its groups' DNs."
    )
    ldap_group_search_base: str | None = Field(
        default=None,
        description="Also search groups here with ldap_group_filter (directories without "
        "memberOf).",
    )
    ldap_group_filter: str = "(|(member={dn})(uniqueMember={dn}))"
    ldap_timeout_seconds: float = Field(default=5.0, gt=0)
    ldap_organisation_rules: list[OrganisationRule] = Field(
        default_factory=list,
        description='JSON list, first match wins: {"email_domain": "uni-lj.si", '
        '"organisation": "University of Ljubljana"}, {"group": "cn=staff,...", '
        '"organisation": ...}, or only {"organisation": ...} for everyone else. No match: '
        "sign-in refused for new users.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL (discovery at /.well-known/openid-configuration); "
        "unset: OIDC sign-in off.",
    )
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_provider_name: str = Field(
        default="your institution", description='Shown as "Sign in with <name>" on /login.'
    )
    oidc_scopes: str = "openid email profile"
    oidc_organisation_rules: list[OrganisationRule] = Field(
        default_factory=list,
        description='As ldap_organisation_rules, with {"claim": "name", "value": '
        '"..."} instead of group.',
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server for e-mail notices; unset: no e-mail is sent."
    )
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=20.0, gt=0)
    mail_from: str = Field(
        default="AllMicro Data <noreply@localhost>", description="From: of e-mail notices."
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line, for log collectors."
    )

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @model_validator(mode="after")
    def _institutional_sign_in_complete(self) -> Settings:
        # Fail at start, not at each sign-in.
        if self.ldap_urls and not (self.ldap_search_base or self.ldap_bind_dn_template):
            raise ValueError(
                "ALLMICRO_LDAP_URLS needs ALLMICRO_LDAP_SEARCH_BASE or ALLMICRO_LDAP_BIND_DN_TEMPLATE"
            )
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("ALLMICRO_OIDC_ISSUER needs ALLMICRO_OIDC_CLIENT_ID")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'catalogue.sqlite3'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "objects").as_uri()

    @property
    def uploads_dir(self) -> Path:
        """Where partial uploads are spooled before they become objects."""
        if self.upload_dir is not None:
            return self.upload_dir.expanduser().resolve()
        return self.data_dir / "uploads"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def secret_key(settings: Settings) -> bytes:
    """The key that signs cookies and links: from settings, else generated once under data_dir."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode("utf-8")
    path = settings.data_dir / "secret.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode("ascii")
    # Written whole to a temporary file, then linked into place: of several processes starting
    # at once, exactly one key wins and nobody reads a half-written file.
    tmp = path.with_name(f".secret.key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        tmp.unlink()
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
