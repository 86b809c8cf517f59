"""Packaging: every package folder is installed under its allmicro_data.* name."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO

MAPPED = {
    "allmicro_data": "allmicro_data",
    "ingest": "allmicro_data.ingest",
    "api": "allmicro_data.api",
    "storage": "allmicro_data.storage",
}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for folder, name in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *relative)))
    assert found == listed
    assert setuptools["package-dir"] == {v: k for k, v in MAPPED.items()}
    assert config["project"]["license"] == "GPL-3.0-or-later"
    assert config["project"]["scripts"]["allmicro"] == "allmicro_data.cli:main"
