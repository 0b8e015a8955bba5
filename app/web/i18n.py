"""The console's message catalogue: English source strings, Swedish from ``locale/sv``.

Every string a person reads is marked with ``_()`` (Python) or ``{% trans %}`` /
``_()`` (templates) and extracted with Babel (``babel.cfg``). The ``.po`` files are
compiled in memory at start, so the repository holds no binary ``.mo`` files and a
translator edits one text file. The language is the user's own setting once signed
in, else the browser's ``Accept-Language``.
"""

from __future__ import annotations

import gettext
import io
from contextvars import ContextVar
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "sv")
DEFAULT_LANGUAGE = "en"

_current: ContextVar[gettext.NullTranslations | None] = ContextVar(
    "console_translations", default=None
)
_SOURCE = gettext.NullTranslations()


@cache
def translations(language: str) -> gettext.NullTranslations:
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == DEFAULT_LANGUAGE or not po.is_file():
        return gettext.NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def use_language(language: str) -> None:
    """Strings translated from here on (in this request's context) are in ``language``."""
    _current.set(translations(language if language in LANGUAGES else DEFAULT_LANGUAGE))


def _(message: str) -> str:
    return (_current.get() or _SOURCE).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return (_current.get() or _SOURCE).ngettext(singular, plural, n)


def preferred_language(accept_language: str | None) -> str:
    """The first of our languages in the browser's list, by quality; else English."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _sep, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else DEFAULT_LANGUAGE
