"""Where the agent keeps its config (agent.toml), state and log, and how it reads and sets them up."""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("allmicro.agent")


def config_dir() -> Path:
    """Where the agent keeps its config, state and log: per user, no admin rights needed."""
    if os.name == "nt":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / "allmicro"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "allmicro"


def default_config() -> Path:
    """agent.toml in config_dir(), read when no --config names another file."""
    return config_dir() / "agent.toml"


def read_config(path: Path | None) -> dict[str, Any]:
    candidate = path or default_config()
    if not candidate.exists():
        if path is not None:
            raise click.UsageError(f"config file {path} does not exist")
        return {}
    try:
        with candidate.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"cannot read config file {candidate}: {exc}") from exc


def log_file(option: Path | None, config: dict[str, Any]) -> Path:
    """The log: --log-file, else `log_file` in the config file, else beside the config file."""
    return option or Path(config.get("log_file") or config_dir() / "agent.log")


def state_file(option: Path | None, config: dict[str, Any]) -> Path:
    """The state database: --state, else `state` in the config file, else beside the config file."""
    return Path(option or config.get("state") or config_dir() / "agent-state.sqlite3")


def setup_logging(log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
