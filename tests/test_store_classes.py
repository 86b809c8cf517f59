"""Callers ask a store what it can do (storage.base's Supports* capabilities), never its class."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STORE_CLASSES = {"LocalStore", "S3Store", "ReplicatedStore"}


def _class_uses(path: Path) -> list[str]:
    """Where a module names a concrete store class other than to import it or build a store
    (`LocalStore(…)`, as `allmicro convert` does for its output directory): an isinstance
    check, an annotation, an attribute of the class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    built = {
        id(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value if node.value in STORE_CLASSES else ""  # string annotations
        else:
            continue
        if name in STORE_CLASSES and id(node) not in built:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    return found


def test_no_module_outside_storage_names_a_concrete_store_class() -> None:
    found = []
    for folder in ("allmicro_data", "ingest", "api"):
        for path in sorted((REPO / folder).rglob("*.py")):
            found += _class_uses(path)
    assert not found, "ask for a capability (storage.base) instead:\n" + "\n".join(found)
