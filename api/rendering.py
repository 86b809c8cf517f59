"""Turning pyramid pixels into 8-bit pictures: windowing, channel selection, PNG encoding."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage


@dataclass(frozen=True)
class Window:
    """Intensities mapped linearly onto 0..255; values outside are clipped."""

    start: float
    end: float


def to_uint8(plane: np.ndarray[Any, Any], window: Window) -> np.ndarray[Any, Any]:
    """Map a plane of any dtype through a window onto uint8 (NaN becomes 0)."""
    lo, hi = float(window.start), float(window.end)
    span = hi - lo if hi > lo else 1.0
    scaled = (plane.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / span)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray[Any, Any]) -> bytes:
    """PNG of a (y, x) grey or (y, x, 3) RGB uint8 array."""
    mode = "RGB" if pixels.ndim == 3 else "L"
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels), mode=mode).save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()
