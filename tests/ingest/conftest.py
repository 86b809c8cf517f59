"""Shared fixtures for the ingest reader tests: where the real-sample corpus lives."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(
    os.environ.get("ALLMICRO_SAMPLES", Path(__file__).resolve().parents[3] / "shared" / "samples")
)


def manifest() -> dict[str, Any]:
    path = SAMPLES / "MANIFEST.json"
    if not path.exists():
        return {"files": []}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def samples() -> Path:
    if not (SAMPLES / "MANIFEST.json").exists():
        pytest.skip(f"sample corpus not found at {SAMPLES}")
    return SAMPLES
