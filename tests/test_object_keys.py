"""The object-store key layout: built and parsed in allmicro_data/object_keys.py, and nowhere else."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from allmicro_data.object_keys import (
    KeyKind,
    ParsedKey,
    image_prefix,
    manifest_key,
    ome_xml_key,
    original_key,
    parse_key,
    pyramid_key,
)

REPO = Path(__file__).resolve().parent.parent
SHA = "ab" * 32
# A string in code that builds or parses a key of the layout: a key that starts with one of its
# prefixes, or names one of its objects.
LAYOUT_TEXT = re.compile(r"^\^?(raw|images)/|image\.ome\.zarr|manifest\.json|metadata\.ome\.xml")


def test_every_key_is_parsed_back_into_its_kind_and_id() -> None:
    assert original_key(SHA) == f"raw/{SHA}"
    assert pyramid_key("i1") == "images/i1/image.ome.zarr"
    assert ome_xml_key("i1") == "images/i1/metadata.ome.xml"
    assert manifest_key("i1") == "images/i1/manifest.json"
    assert parse_key(original_key(SHA)) == ParsedKey(KeyKind.ORIGINAL, SHA)
    assert parse_key(f"{pyramid_key('i1')}/0/0/0") == ParsedKey(KeyKind.PYRAMID, "i1")
    assert parse_key(ome_xml_key("i1")) == ParsedKey(KeyKind.OME_XML, "i1")
    assert parse_key(manifest_key("i1")) == ParsedKey(KeyKind.MANIFEST, "i1")
    assert parse_key(f"{image_prefix('i1')}thumbnail.jpg") == ParsedKey(KeyKind.IMAGE, "i1")
    for outside in ("raw/not-a-sha", f"raw/{SHA}/x", "images/i1", "images//x", "other/i1/x", ""):
        assert parse_key(outside) is None, outside


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_an_image_id_that_would_leave_its_prefix_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        pyramid_key(bad)


def test_an_original_key_needs_a_lowercase_sha256() -> None:
    with pytest.raises(ValueError):
        original_key(SHA.upper())


def _code_strings(path: Path) -> Iterator[tuple[int, str]]:
    """The string constants of a module, f-string parts included, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if is_text and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_but_object_keys_spells_out_the_layout() -> None:
    """Writers and readers of keys call object_keys; storage/ treats keys as opaque."""
    found = []
    for folder in ("allmicro_data", "ingest", "api", "storage"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "object_keys.py" or "migrations" in path.parts:
                continue
            for line, text in _code_strings(path):
                if LAYOUT_TEXT.search(text):
                    found.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    assert not found, "key layout outside allmicro_data/object_keys.py:\n" + "\n".join(found)
