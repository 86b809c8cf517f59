"""What a name given to us (project, dataset, file, token, share link…) may hold: one line of text."""

from __future__ import annotations

import unicodedata

# Control characters (CR, LF, NUL, ESC…), lone surrogates, and the Unicode line and paragraph
# separators: they split a name across log lines, CSV rows and HTTP headers.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# Bidirectional embeddings, overrides and isolates make "exe.tif" read as "fit.exe" on screen.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unfit_character(text: str) -> str | None:
    """The first character a name must not hold, or None when the whole text is fit."""
    for ch in text:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES or ch in _BIDI_CONTROLS:
            return ch
    return None


def check_name(text: str) -> str:
    """The text unchanged; ValueError naming the character when a name must not hold one."""
    ch = unfit_character(text)
    if ch is not None:
        raise ValueError(
            f"must be one line of printable text; it holds the control character U+{ord(ch):04X}"
        )
    return text
