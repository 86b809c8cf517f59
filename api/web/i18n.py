"""UI languages: gettext catalogues compiled from the shipped .po files, and the choice per request."""

from __future__ import annotations

import io
from functools import cache
from gettext import GNUTranslations, NullTranslations
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).with_name("locale")
DOMAIN = "messages"
DEFAULT_LANGUAGE = "en"
# English is the source language: its "catalogue" is the msgids themselves.
LANGUAGES: tuple[str, ...] = ("en", "it", "sl")
LANGUAGE_COOKIE = "allmicro_lang"


@cache
def translations(language: str) -> NullTranslations:
    """The catalogue of a UI language, compiled in memory from its .po file on first use.

    Compiling at start-up rather than shipping .mo files keeps one source of truth in git and
    cannot go stale; the .po files are small, so this costs milliseconds once per process.
    """
    po_path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == DEFAULT_LANGUAGE or not po_path.is_file():
        return NullTranslations()
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return GNUTranslations(buffer)


def parse_accept_language(header: str) -> list[str]:
    """Language tags of an Accept-Language header, most preferred first (RFC 9110 q-values)."""
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            # Stable order among equal weights: the browser's own order.
            weighted.append((-quality, position, tag.replace("-", "_")))
    return [tag for _, _, tag in sorted(weighted)]


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The explicit choice (cookie) if it is one we have, else the browser's best match."""
    if cookie in LANGUAGES:
        return cookie
    preferred = parse_accept_language(accept_language or "")
    # negotiate_locale matches "sl_SI" to "sl" and "it-CH" to "it" through its aliases and
    # by comparing the language part.
    found = negotiate_locale(preferred, list(LANGUAGES), sep="_")
    if found is None:
        for tag in preferred:
            language = tag.split("_")[0].lower()
            if language in LANGUAGES:
                return language
        return DEFAULT_LANGUAGE
    return found


def language_name(language: str) -> str:
    """A language's name in itself, for the switch ("English", "italiano", "slovenščina")."""
    return Locale.parse(language).get_display_name(language) or language
