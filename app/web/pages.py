"""Rendering a page: one Jinja2 environment (autoescaped), the catalogue, the error pages.

Autoescaping is on for every template, so a volunteer named ``<b>Anna</b>`` is shown
as those characters; nothing in a template is marked safe except what the code
built from escaped parts.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_datetime
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from app.api.problems import PAGE_PREFIXES
from app.web.i18n import LANGUAGES, _, ngettext, preferred_language, use_language

TEMPLATES = Path(__file__).parent / "templates"
CONSOLE = "/console"
# The volunteers' own pages (app/web/routes/me.py): sign-up, and my page.
JOIN = "/join"
ME = "/me"


ME_HOME = f"{ME}/"


def is_volunteer_page(path: str) -> bool:
    return path.startswith((JOIN, ME_HOME))


def is_page(path: str) -> bool:
    """A page for a person (HTML errors, strict headers), not the API (``/metrics``!)."""
    return path.startswith(PAGE_PREFIXES)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_, ngettext=ngettext, newstyle=True
    )
    return env


def language_of(request: Request) -> str:
    """The person's own setting once signed in; else ``?lang=``, else the browser's."""
    staff = getattr(request.state, "staff", None)
    if staff is not None and staff.user.language:
        language: str = staff.user.language
        return language
    volunteer = getattr(request.state, "volunteer", None)
    if volunteer is not None:
        chosen: str = volunteer.language
        return chosen
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked
    return preferred_language(request.headers.get("accept-language"))


def page_context(request: Request) -> dict[str, Any]:
    """What every page needs: who is signed in, the CSRF token, the language, the map."""
    runtime = request.app.state.runtime
    settings = runtime.settings
    staff = getattr(request.state, "staff", None)
    volunteer = getattr(request.state, "volunteer", None)
    language = language_of(request)
    zone = settings.zone
    # Dates and times as read in Europe (24-hour clock, day before month) in English too.
    date_locale = "en_GB" if language == "en" else language

    def when(moment: datetime | None, style: str = "short") -> str:
        if moment is None:
            return ""
        return format_datetime(moment.astimezone(zone), style, locale=date_locale)

    def clock(moment: datetime | None) -> str:
        if moment is None:
            return ""
        return format_datetime(moment.astimezone(zone), "HH:mm:ss", locale=date_locale)

    return {
        "request": request,
        "staff": staff,
        "volunteer_signed_in": volunteer is not None,
        "user": staff.user if staff is not None else None,
        "csrf_token": staff.csrf_token
        if staff is not None
        else volunteer.csrf_token
        if volunteer is not None
        else getattr(request.state, "anonymous_csrf", ""),
        "language": language,
        "console": CONSOLE,
        "when": when,
        "clock": clock,
        "tile_url": settings.map_tile_url,
        "tile_attribution": settings.map_tile_attribution,
        "path": request.url.path,
    }


def render_html(request: Request, template: str, context: dict[str, Any]) -> str:
    use_language(language_of(request))
    full = page_context(request) | context
    return environment().get_template(template).render(full)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    body = render_html(request, template, context or {})
    response = HTMLResponse(body, status_code=status, headers=headers)
    for name, value in getattr(request.state, "set_cookies", {}).items():
        response.set_cookie(name, **value)
    return response


async def error_page(
    request: Request, status: int, title: str, detail: str | None, headers: dict[str, str] | None
) -> Response:
    """A person's error page: the status in words, never a stack trace."""
    use_language(language_of(request))
    messages = {
        400: _("The request could not be understood."),
        403: _("You do not have access to this page."),
        404: _("There is no such page, or it is not yours to see."),
        405: _("This page cannot be used that way."),
        409: _("Someone changed this in the meantime. Reload the page and look again."),
        413: _("The file is too large."),
        429: _("Too many attempts. Wait a moment and try again."),
        500: _("Something went wrong on our side. It has been logged."),
        503: _("The service is unavailable for a moment. Nothing was stored; try again."),
    }
    context = {
        "status": status,
        "message": messages.get(status, _("Something went wrong.")),
        "detail": detail if status in (403, 409, 413, 429) else None,
    }
    template = "me/error.html" if is_volunteer_page(request.url.path) else "error.html"
    return render(request, template, context, status=status, headers=headers)
