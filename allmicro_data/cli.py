"""The `allmicro` command: server, worker, file inspection and conversion, catalogue and admin tasks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from allmicro_data.settings import get_settings


def _fail(message: str) -> None:
    click.echo(f"allmicro: {message}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(package_name="allmicro-data")
def main() -> None:
    """AllMicro Data: the image repository of the microscopy network."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: settings).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: settings).")
def serve(host: str | None, port: int | None) -> None:
    """Run the server (embedded default: SQLite, local store, in-process job runner)."""
    import uvicorn

    from allmicro_data.api.app import create_app
    from allmicro_data.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        proxy_headers=True,
    )


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
def convert(
    source: Path,
    target: Path,
    series_index: int,
    ngff: str,
    chunk: int | None,
    codec: str | None,
    workers: int | None,
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


@main.group()
def db() -> None:
    """Catalogue database tasks."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply catalogue migrations up to the newest schema."""
    from allmicro_data.catalogue.db import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    click.echo("catalogue schema is up to date")


@main.group()
def admin() -> None:
    """Organisations, users, projects, datasets and memberships."""


def _services() -> Any:
    from allmicro_data.services import Services

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


if __name__ == "__main__":
    main()
