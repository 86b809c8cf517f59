"""Shared fixtures for the ingest reader tests: the real-sample corpus in tests/data/samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES


def manifest() -> dict[str, Any]:
    # The corpus is part of the repository: a missing MANIFEST is a broken checkout, not a skip.
    data: dict[str, Any] = json.loads((SAMPLES / "MANIFEST.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def samples() -> Path:
    return SAMPLES
