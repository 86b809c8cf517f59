"""The agent's byte progress bar (tqdm, loaded only when a bar is shown)."""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """A byte progress bar on a terminal; nothing (and no tqdm to load) when output goes to a
    file or bars are turned off."""

    def __init__(self, total: int, label: str, initial: int, *, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
            )

    def __call__(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
