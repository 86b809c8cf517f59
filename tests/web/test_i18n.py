"""The UI's catalogues: complete, in step with the sources, and chosen as browsers ask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from allmicro_data.api.web.i18n import (
    LANGUAGES,
    LOCALE_DIR,
    choose_language,
    parse_accept_language,
    translations,
)
from tests.conftest import REPO

PYBABEL = str(Path(sys.executable).with_name("pybabel"))


def _ids(path: Path) -> set[str | tuple[str, ...]]:
    with path.open("rb") as handle:
        return {m.id for m in read_po(handle) if m.id}


def test_template_lists_every_text_of_the_sources(tmp_path: Path) -> None:
    extracted = tmp_path / "messages.pot"
    subprocess.run(
        [PYBABEL, "-q", "extract", "-F", "babel.cfg", "--no-location", "-o", str(extracted), "."],
        cwd=REPO,
        check=True,
    )
    assert _ids(extracted) == _ids(LOCALE_DIR / "messages.pot"), "run `make messages`"


@pytest.mark.parametrize("language", ["it", "sl"])
def test_every_text_is_translated(language: str) -> None:
    path = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    assert {m.id for m in catalog if m.id} == _ids(LOCALE_DIR / "messages.pot")
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), f"{language}: {message.id!r} is not translated"
        assert "fuzzy" not in message.flags, f"{language}: {message.id!r} is fuzzy"
    assert catalog.num_plurals == {"it": 2, "sl": 4}[language]


def test_compiled_catalogues_translate_singular_and_plural() -> None:
    assert translations("it").gettext("Sign in") == "Accedi"
    assert translations("sl").gettext("Sign in") == "Prijava"
    slovenian = translations("sl")
    forms = [slovenian.ngettext("%(num)d image", "%(num)d images", n) for n in (1, 2, 3, 5, 101)]
    assert [f % {"num": n} for f, n in zip(forms, (1, 2, 3, 5, 101), strict=True)] == [
        "1 slika",
        "2 sliki",
        "3 slike",
        "5 slik",
        "101 slika",
    ]
    assert translations("en").gettext("Sign in") == "Sign in"


def test_accept_language_is_read_by_weight() -> None:
    assert parse_accept_language("en;q=0.5, sl-SI, it;q=0.8") == ["sl_SI", "it", "en"]
    assert parse_accept_language("*, de;q=0") == []
    assert choose_language(None, "sl-SI,sl;q=0.9,en;q=0.8") == "sl"
    assert choose_language(None, "it-CH") == "it"
    assert choose_language(None, "de-DE, fr;q=0.7") == "en"
    assert choose_language(None, None) == "en"
    assert choose_language(None, "de, it;q=0.4") == "it"
    # The switch wins over the browser; unknown cookie values do not.
    assert choose_language("it", "sl") == "it"
    assert choose_language("xx", "sl") == "sl"
    assert set(LANGUAGES) == {"en", "it", "sl"}
