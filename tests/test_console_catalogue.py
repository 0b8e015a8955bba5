"""Every string of the console is in the message catalogue, in Swedish too."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from app.web.i18n import LOCALE_DIR, preferred_language

WEB = Path(__file__).resolve().parents[1] / "app" / "web"
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}


def test_every_console_string_has_a_swedish_translation() -> None:
    extracted = {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(
            WEB, method_map=METHODS, options_map=OPTIONS
        )
    }
    with (LOCALE_DIR / "sv" / "LC_MESSAGES" / "messages.po").open("rb") as source:
        catalog = read_po(source)
    untranslated = sorted(
        text
        for text in extracted
        if text and (catalog.get(text) is None or not catalog.get(text).string)
    )
    assert untranslated == []


def test_the_browser_language_is_chosen_by_quality() -> None:
    assert preferred_language("sv-SE,sv;q=0.9,en;q=0.8") == "sv"
    assert preferred_language("de-DE,en;q=0.5,sv;q=0.7") == "sv"
    assert preferred_language("de, fr") == "en"
    assert preferred_language(None) == "en"
    assert preferred_language("sv;q=0") == "en"
