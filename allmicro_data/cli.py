"""The `allmicro` command: server, worker, file inspection and conversion, catalogue and admin tasks."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import click


def _fail(message: str) -> None:
    click.echo(f"allmicro: {message}", err=True)
    sys.exit(1)


class _CommandGroup(click.Group):
    """Domain and storage errors end a command with one line, never a traceback.

    The upload agent's commands live in allmicro_data.ingest.agent (it runs on instrument PCs,
    with its own HTTP client) and load only when named, which keeps every other command's
    start-up (such as `allmicro convert`'s) free of them.
    """

    lazy_commands = {"upload": "upload", "watch": "watch"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            from allmicro_data.ingest import agent

            command: click.Command = getattr(agent, self.lazy_commands[cmd_name])
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        from allmicro_data.errors import DomainError
        from allmicro_data.storage import StorageError

        try:
            return super().invoke(ctx)
        except (DomainError, StorageError) as exc:
            _fail(str(exc))


@click.group(cls=_CommandGroup)
@click.version_option(package_name="allmicro-data")
def main() -> None:
    """AllMicro Data: the image repository of the microscopy network."""


def _share_metrics(root: Path) -> None:
    """Let this process and the job processes it starts count into one set of metrics files
    (prometheus-client's multiprocess mode), in a directory of its own under root, since
    several servers may share a data_dir. Must run before prometheus_client is imported."""
    import os
    import shutil

    assert "prometheus_client" not in sys.modules, "metrics imported too early"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        # Directories of processes that are gone: their counters died with them.
        pid = old.name.rpartition("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    directory = root / f"process-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: settings).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: settings).")
def serve(host: str | None, port: int | None) -> None:
    """Run the server (embedded default: SQLite, local store, in-process job runner)."""
    from allmicro_data.logs import configure_logging
    from allmicro_data.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    _share_metrics(settings.data_dir / "metrics")

    import uvicorn

    from allmicro_data.api.app import create_app
    from allmicro_data.api.http_server import protocol

    app = create_app(settings)
    # What the server has loaded by now lives as long as it does: out of the collector's reach,
    # a full collection no longer walks it. Such collections come when requests allocate a lot
    # (uploads, on a busy day) and stop every request while they run: 110-180 ms measured on
    # this server during bench/day.py's uploads, at most 40 ms once frozen.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        http=protocol(settings.http_protocol),
        log_config=None,
        # X-Forwarded-* are read by the app itself, from settings.trusted_proxies only
        # (api/proxies.py); uvicorn's own handling would believe 127.0.0.1 besides.
        proxy_headers=False,
    )


@main.command()
@click.option(
    "--concurrency", type=int, default=None, help="Jobs run at once (default: job_workers)."
)
@click.option(
    "--metrics-port", type=int, default=0, help="Serve /metrics of the jobs here (0: off)."
)
def worker(concurrency: int | None, metrics_port: int) -> None:
    """Run ingest jobs from the Celery queue (ALLMICRO_QUEUE=celery, ALLMICRO_BROKER_URL)."""
    from allmicro_data.logs import configure_logging
    from allmicro_data.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    _share_metrics(settings.data_dir / "metrics")
    if not settings.broker_url:
        _fail("set ALLMICRO_BROKER_URL (redis://host:6379/0 or amqp://host//)")
    from allmicro_data.taskqueue import run_worker

    run_worker(settings, concurrency or settings.job_workers or 1, metrics_port=metrics_port)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document other tools read.")
def info(files: tuple[Path, ...], as_json: bool) -> None:
    """Show the series and normalised metadata of microscope files."""
    from allmicro_data.ingest.info import info_document

    document = info_document(list(files))
    if as_json:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        for entry in document["files"]:
            _print_file_entry(entry)
    errors = [f for f in document["files"] if f["error"]]
    if errors:
        for entry in errors:
            click.echo(f"allmicro: {entry['error']}", err=True)
        sys.exit(1)


def _print_file_entry(entry: dict[str, Any]) -> None:
    click.echo(f"{entry['path']}: {entry['format'] or 'unreadable'}")
    for warning in entry["warnings"]:
        click.echo(f"  warning: {warning}")
    for index, series in enumerate(entry["series"]):
        shape = " x ".join(str(n) for n in series["shape"])
        click.echo(
            f"  series {index} {series['name']!r}: {series['axes']} {shape} {series['dtype']}"
        )
        ps = series["pixel_size"]
        sizes = ", ".join(
            f"{axis}={ps[axis] * 1e9:.4g} nm" for axis in ("x", "y", "z") if ps.get(axis)
        )
        click.echo(f"    pixel size: {sizes or 'unknown'}")
        for key, value in series["acquisition"].items():
            if value not in (None, [], ""):
                click.echo(f"    {key}: {value}")
        for warning in series["warnings"]:
            click.echo(f"    warning: {warning}")


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--series", "series_index", type=int, default=0, show_default=True)
@click.option("--ngff", type=click.Choice(["0.4", "0.5"]), default="0.4", show_default=True)
@click.option("--chunk", type=int, default=None, help="Chunk side in pixels (default per dims).")
@click.option("--codec", default=None, help="Compression, e.g. zstd, blosc-zstd (default: best).")
@click.option("--workers", type=int, default=None, help="Threads used (default: all cores).")
@click.option(
    "--shard/--no-shard",
    default=None,
    help="NGFF 0.5 only: one object per chunk row of a level (default) or one per chunk.",
)
def convert(
    source: Path,
    target: Path,
    series_index: int,
    ngff: str,
    chunk: int | None,
    codec: str | None,
    workers: int | None,
    shard: bool | None,
) -> None:
    """Convert one series of a microscope file to an OME-Zarr image."""
    from allmicro_data.ingest.convert import convert_file
    from allmicro_data.ingest.readers import ReadError

    with _progress_bar(f"{source.name} -> {target.name}") as progress:
        try:
            result = convert_file(
                source,
                target,
                series_index=series_index,
                ngff=ngff,
                chunk=chunk,
                codec=codec,
                workers=workers,
                shard=shard,
                progress=progress,
            )
        except (ReadError, ValueError, FileExistsError) as exc:
            _fail(str(exc))
            return
    shapes = ", ".join("x".join(str(n) for n in s) for s in result.level_shapes)
    click.echo(f"wrote {target} (NGFF {result.ngff_version}, levels: {shapes})", err=True)


class _progress_bar:  # noqa: N801 - used as a context manager like a function
    """A progress bar on a terminal, nothing when output is redirected."""

    def __init__(self, label: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=1000, desc=label, disable=not sys.stderr.isatty(), unit="‰", leave=False
        )
        self._done = 0

    def __call__(self, fraction: float) -> None:
        target = int(min(1.0, max(0.0, fraction)) * 1000)
        if target > self._done:
            self._bar.update(target - self._done)
            self._done = target

    def __enter__(self) -> _progress_bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


@main.command()
@click.option("--repair", is_flag=True, help="Rewrite bad copies from a verified good copy.")
@click.option("--image", "image_id", default=None, help="Only this image's objects.")
@click.option("--bandwidth", type=int, default=0, help="Bytes per second at most (0: no cap).")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def scrub(repair: bool, image_id: str | None, bandwidth: int, as_json: bool) -> None:
    """Check every copy of every stored object against its sha256; exit 2 if problems remain."""
    from allmicro_data.scrub import describe_run, run_document, run_scrub

    run = run_scrub(_services(), repair=repair, image_id=image_id, bandwidth=bandwidth or None)
    click.echo(json.dumps(run_document(run), indent=2) if as_json else describe_run(run))
    sys.exit(0 if run_document(run)["clean"] else 2)


@main.group()
def db() -> None:
    """Catalogue database tasks."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply catalogue migrations up to the newest schema."""
    from allmicro_data.catalogue.db import upgrade
    from allmicro_data.settings import get_settings

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    click.echo("catalogue schema is up to date")


@db.command("refresh-search-facts")
def db_refresh_search_facts() -> None:
    """Give stored images today's search facts: local acquisition times, vendor names, light
    modalities (what ingest records since; originals are not re-read)."""
    from allmicro_data.search_facts import refresh_search_facts

    with _services().session() as session:
        counts = refresh_search_facts(session)
    click.echo(
        f"{counts.seen} images: {counts.local_times} local acquisition times kept, "
        f"{counts.vendors} vendor names and {counts.modalities} modalities updated"
    )


@main.group()
def admin() -> None:
    """Organisations, users, projects, datasets and memberships."""


def _services() -> Any:
    from allmicro_data.services import Services
    from allmicro_data.settings import get_settings

    return Services.from_settings(get_settings())


@admin.command("create-organisation")
@click.argument("name")
@click.option("--kind", type=click.Choice(["lead_partner", "partner", "company"]), required=True)
@click.option("--country", default=None, help="ISO 3166 two-letter code, e.g. IT, SI.")
def admin_create_organisation(name: str, kind: str, country: str | None) -> None:
    """Create an organisation."""
    from allmicro_data import directory

    services = _services()
    with services.session() as session:
        org = directory.create_organisation(session, name=name, kind=kind, country=country)
        click.echo(org.id)


@admin.command("create-user")
@click.argument("email")
@click.option("--organisation", "organisation", required=True, help="Organisation id or name.")
@click.option("--name", "display_name", default="", help="Display name.")
@click.option("--admin", "is_admin", is_flag=True, help="Make the user a global admin.")
@click.password_option(
    envvar="ALLMICRO_NEW_USER_PASSWORD", help="Password (prompted when not given)."
)
def admin_create_user(
    email: str, organisation: str, display_name: str, is_admin: bool, password: str
) -> None:
    """Create a user in an organisation."""
    from allmicro_data import directory

    services = _services()
    with services.session() as session:
        org = directory.find_organisation(session, organisation)
        user = directory.create_user(
            session,
            email=email,
            organisation_id=org.id,
            password=password,
            display_name=display_name,
            is_admin=is_admin,
        )
        click.echo(user.id)


@admin.command("create-project")
@click.argument("name")
@click.option("--kind", type=click.Choice(["research", "pilot"]), default="research")
@click.option("--client", default=None, help="Client company (id or name) of a pilot project.")
@click.option("--description", default="")
def admin_create_project(name: str, kind: str, client: str | None, description: str) -> None:
    """Create a project (a pilot project names its client company)."""
    from allmicro_data import directory

    services = _services()
    with services.session() as session:
        client_id = directory.find_organisation(session, client).id if client else None
        project = directory.create_project(
            session, name=name, kind=kind, client_organisation_id=client_id, description=description
        )
        click.echo(project.id)


@admin.command("create-dataset")
@click.argument("project")
@click.argument("name")
@click.option("--description", default="")
def admin_create_dataset(project: str, name: str, description: str) -> None:
    """Create a dataset in a project (id or name)."""
    from allmicro_data import directory

    services = _services()
    with services.session() as session:
        proj = directory.find_project(session, project)
        dataset = directory.create_dataset(
            session, project_id=proj.id, name=name, description=description
        )
        click.echo(dataset.id)


@admin.command("add-member")
@click.argument("project")
@click.option("--user", "user", default=None, help="User id or email.")
@click.option("--organisation", "organisation", default=None, help="Organisation id or name.")
@click.option("--role", type=click.Choice(["viewer", "contributor", "manager"]), required=True)
def admin_add_member(project: str, user: str | None, organisation: str | None, role: str) -> None:
    """Give a user, or a whole organisation, a role in a project."""
    from allmicro_data import directory

    if (user is None) == (organisation is None):
        _fail("give exactly one of --user and --organisation")
    services = _services()
    with services.session() as session:
        proj = directory.find_project(session, project)
        membership = directory.add_membership(
            session,
            project_id=proj.id,
            user_id=directory.find_user(session, user).id if user else None,
            organisation_id=(
                directory.find_organisation(session, organisation).id if organisation else None
            ),
            role=role,
        )
        click.echo(membership.id)


@admin.command("remove-member")
@click.argument("project")
@click.option("--user", "user", default=None, help="User id or email.")
@click.option("--organisation", "organisation", default=None, help="Organisation id or name.")
def admin_remove_member(project: str, user: str | None, organisation: str | None) -> None:
    """Take a user's or an organisation's role in a project away."""
    from sqlalchemy import select

    from allmicro_data import directory
    from allmicro_data.audit import record
    from allmicro_data.catalogue.models import ProjectMembership

    if (user is None) == (organisation is None):
        _fail("give exactly one of --user and --organisation")
    services = _services()
    with services.session() as session:
        proj = directory.find_project(session, project)
        stmt = select(ProjectMembership).where(ProjectMembership.project_id == proj.id)
        if user:
            stmt = stmt.where(ProjectMembership.user_id == directory.find_user(session, user).id)
        else:
            org_id = directory.find_organisation(session, organisation or "").id
            stmt = stmt.where(ProjectMembership.organisation_id == org_id)
        membership = session.scalars(stmt).first()
        if membership is None:
            _fail("no such membership")
            return
        directory.remove_membership(session, project_id=proj.id, membership_id=membership.id)
        record(
            session,
            "membership.remove",
            actor="cli",
            object_type="membership",
            object_id=membership.id,
            project_id=proj.id,
        )
        click.echo(f"removed {membership.id}")


@admin.command("list")
@click.argument("what", type=click.Choice(["organisations", "users", "projects", "members"]))
@click.option("--project", default=None, help="Project (id or name), for members.")
def admin_list(what: str, project: str | None) -> None:
    """List organisations, users, projects, or the members of --project (tab-separated)."""
    from sqlalchemy import select

    from allmicro_data import directory
    from allmicro_data.catalogue.models import Organisation, Project, ProjectMembership, User

    services = _services()
    with services.session() as session:
        if what == "organisations":
            for org in session.scalars(select(Organisation).order_by(Organisation.name)):
                click.echo(f"{org.id}\t{org.kind.value}\t{org.country or ''}\t{org.name}")
        elif what == "users":
            for user in session.scalars(select(User).order_by(User.email)):
                flags = ",".join(
                    f
                    for f, on in (("admin", user.is_admin), ("inactive", not user.is_active))
                    if on
                )
                click.echo(f"{user.id}\t{user.email}\t{user.organisation.name}\t{flags}")
        elif what == "projects":
            for proj in session.scalars(select(Project).order_by(Project.name)):
                click.echo(f"{proj.id}\t{proj.kind.value}\t{proj.name}")
        else:
            if project is None:
                _fail("give --project")
                return
            proj = directory.find_project(session, project)
            rows = session.scalars(
                select(ProjectMembership).where(ProjectMembership.project_id == proj.id)
            )
            for m in rows:
                who = (
                    session.get(User, m.user_id).email  # type: ignore[union-attr]
                    if m.user_id
                    else "org:" + session.get(Organisation, m.organisation_id).name  # type: ignore[union-attr]
                )
                click.echo(f"{m.id}\t{m.role.value}\t{who}")


@admin.command("set-user")
@click.argument("user")
@click.option("--admin/--no-admin", "is_admin", default=None, help="Global admin rights.")
@click.option("--active/--inactive", "is_active", default=None, help="Allow signing in.")
def admin_set_user(user: str, is_admin: bool | None, is_active: bool | None) -> None:
    """Grant or take global admin rights, enable or disable an account."""
    from allmicro_data import directory
    from allmicro_data.audit import record
    from allmicro_data.auth import revoke_user_tokens

    services = _services()
    with services.session() as session:
        account = directory.find_user(session, user)
        if is_admin is not None:
            account.is_admin = is_admin
        if is_active is not None:
            account.is_active = is_active
            if not is_active:
                revoke_user_tokens(session, account.id)
        record(
            session,
            "user.update",
            actor="cli",
            object_type="user",
            object_id=account.id,
            detail={"is_admin": is_admin, "is_active": is_active},
        )
        click.echo(f"{account.email}: admin={account.is_admin} active={account.is_active}")


@admin.command("set-quota")
@click.argument("project")
@click.argument("size")
def admin_set_quota(project: str, size: str) -> None:
    """Set a project's storage quota: bytes (500000000000, 500GB, 2TiB) or none to lift it."""
    from allmicro_data import directory
    from allmicro_data.quotas import parse_size, project_usage, set_project_quota

    quota = parse_size(size)
    services = _services()
    with services.session() as session:
        proj = directory.find_project(session, project)
        set_project_quota(session, proj, quota, actor="cli", actor_user_id=None)
        usage = project_usage(session, proj)
        click.echo(
            f"{proj.name}: quota={'none' if quota is None else quota} used={usage.used_bytes}"
        )


@admin.command("reset-password")
@click.argument("user")
@click.password_option(envvar="ALLMICRO_NEW_USER_PASSWORD", help="New password.")
def admin_reset_password(user: str, password: str) -> None:
    """Set a user's password, unlock the account and sign it out everywhere."""
    from allmicro_data import directory
    from allmicro_data.auth import reset_password

    services = _services()
    with services.session() as session:
        account = directory.find_user(session, user)
        reset_password(session, None, account, password, client_address=None)
        click.echo(f"password of {account.email} reset")


@admin.command("create-token")
@click.argument("user")
@click.option("--name", required=True, help="What the token is for, e.g. the instrument PC.")
@click.option("--scope", type=click.Choice(["read", "upload"]), default="upload")
@click.option(
    "--expires-days", type=int, default=None, help="Valid this many days (default: no expiry)."
)
def admin_create_token(user: str, name: str, scope: str, expires_days: int | None) -> None:
    """Create a personal access token for a user (printed once)."""
    from datetime import timedelta

    from allmicro_data import directory
    from allmicro_data.auth import create_personal_token
    from allmicro_data.catalogue.models import utcnow

    services = _services()
    with services.session() as session:
        account = directory.find_user(session, user)
        expires = utcnow() + timedelta(days=expires_days) if expires_days else None
        plaintext, _ = create_personal_token(
            session, account, name=name, scope=scope, expires_at=expires
        )
        click.echo(plaintext)


if __name__ == "__main__":
    main()
