"""`allmicro upload` and `allmicro watch`: the agent's commands, options and exit statuses."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from allmicro_data.ingest.agent.config import (
    default_config,
    log_file,
    read_config,
    setup_logging,
    state_file,
)
from allmicro_data.ingest.agent.errors import AgentError
from allmicro_data.ingest.agent.tus import DEFAULT_CHUNK, Agent, AgentSettings
from allmicro_data.ingest.agent.watch import Watcher

log = logging.getLogger("allmicro.agent")


def _agent_from_options(options: dict[str, Any]) -> Agent:
    config = read_config(options["config"])
    server = options["server"] or config.get("server")
    dataset = options["dataset"] or config.get("dataset")
    token = os.environ.get("ALLMICRO_TOKEN") or config.get("token")
    if not server:
        raise click.UsageError("give --server URL (or `server` in the config file)")
    if not dataset:
        raise click.UsageError("give --dataset ID (or `dataset` in the config file)")
    if not token:
        raise click.UsageError("set ALLMICRO_TOKEN or put `token` in the config file")
    setup_logging(log_file(options["log_file"], config))
    state = state_file(options["state"], config)
    return Agent(
        AgentSettings(
            server=str(server),
            dataset_id=str(dataset),
            token=str(token),
            state_path=state,
            chunk_size=options["chunk_size"],
            chunk_checksum=options["checksum"],
            retry_for=options["retry_for"],
            progress=options["progress"],
        )
    )


def _common_options(func: Callable[..., None]) -> Callable[..., None]:
    decorators = [
        click.option("--server", envvar="ALLMICRO_SERVER", help="Server URL, e.g. https://host"),
        click.option("--dataset", envvar="ALLMICRO_DATASET", help="Dataset id to upload into."),
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help=f"TOML file with server, dataset, token (default: {default_config()}).",
        ),
        click.option(
            "--state",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="The agent's state database (default: beside the config file).",
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Log file (default: beside the config file).",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=64 * 1024),
            default=DEFAULT_CHUNK,
            show_default=True,
            help="Bytes per request; the server acknowledges each.",
        ),
        click.option(
            "--checksum/--no-checksum",
            default=False,
            show_default=True,
            help="Also send a sha256 with every chunk, so that a chunk damaged on the way is "
            "resent at once (the whole file's sha256 is always verified).",
        ),
        click.option(
            "--retry-for",
            type=click.FloatRange(min=0),
            default=600.0,
            show_default=True,
            help="Seconds to keep retrying while the server cannot be reached or cannot take "
            "the file now (503; 507: out of disk; 429: too many uploads at once).",
        ),
        click.option("--progress/--no-progress", default=True, help="Show a progress bar."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _run(work: Callable[[Agent], int], options: dict[str, Any]) -> None:
    agent = _agent_from_options(options)
    try:
        agent.check_access()
        code = work(agent)
    except AgentError as exc:
        log.error("stopping: %s", exc)
        click.echo(f"allmicro: {exc}", err=True)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        click.echo("allmicro: interrupted; run again to resume", err=True)
        sys.exit(130)
    finally:
        agent.close()
    sys.exit(code)


@click.command("upload")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--group", default=None, help="Group key: files of one multi-file acquisition.")
@_common_options
def upload(files: tuple[Path, ...], group: str | None, **options: Any) -> None:
    """Upload files to a dataset, resuming where a previous run stopped."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise click.UsageError(f"not a file: {', '.join(missing)}")

    def work(agent: Agent) -> int:
        failed = 0
        for path in files:
            outcome = agent.send(path, path.name, group)
            click.echo(
                f"{path}: {outcome.status}" + (f" ({outcome.error})" if outcome.error else "")
            )
            failed += outcome.status == "failed"
        if failed:
            click.echo(f"allmicro: {failed} of {len(files)} files failed (see the log)", err=True)
        return 1 if failed else 0

    _run(work, options)


@click.command("watch")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--recursive", is_flag=True, help="Watch subfolders too.")
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a file's size and time must stay unchanged before it counts as finished.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the folder.",
)
@click.option("--group-by-folder", is_flag=True, help="Files in one folder form one acquisition.")
@click.option("--once", is_flag=True, help="Upload what is there, wait for it to finish, exit.")
@_common_options
def watch(
    directory: Path,
    recursive: bool,
    settle: float,
    interval: float,
    group_by_folder: bool,
    once: bool,
    **options: Any,
) -> None:
    """Watch a folder and upload each file once it is finished being written."""

    def work(agent: Agent) -> int:
        watcher = Watcher(
            agent,
            directory,
            recursive=recursive,
            settle=settle,
            interval=interval,
            group_by_folder=group_by_folder,
        )
        log.info(
            "watching %s (recursive=%s) for dataset %s",
            directory,
            recursive,
            agent.settings.dataset_id,
        )
        watcher.run(once)
        if watcher.failures:
            click.echo(f"allmicro: {watcher.failures} files failed (see the log)", err=True)
        return 1 if watcher.failures else 0

    _run(work, options)
