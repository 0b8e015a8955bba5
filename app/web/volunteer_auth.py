"""Who is signed in to the volunteer pages (``/me``): a session opened by an SMS code.

The same PostgreSQL sessions, timeouts, cookie rules and CSRF checks as the console
(``app/web/auth.py``); the cookie is scoped to ``/me``. Before sign-in (``/join``,
the code and login forms) the double-submit token's cookie is scoped to the site,
because a sign-up starts at ``/join`` and ends at ``/me``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from app.api.deps import SessionDep, get_runtime
from app.core.settings import Settings
from app.registry.web_sessions import VolunteerSession, find_volunteer_session
from app.web.auth import anonymous_csrf_for, check_csrf, cookie_options, see_other
from app.web.pages import ME

ME_COOKIE = "responder_me"
PAGES_CSRF_COOKIE = "responder_pages_csrf"


class VolunteerSignInRequired(Exception):
    """No live volunteer session: to the login page."""


def set_volunteer_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        ME_COOKIE,
        token,
        **cookie_options(settings, max_age=int(settings.session_max_age.total_seconds()), path=ME),
    )


def clear_volunteer_cookie(response: Response, settings: Settings) -> None:
    options = cookie_options(settings, max_age=None, path=ME)
    response.delete_cookie(
        ME_COOKIE, path=ME, secure=options["secure"], httponly=True, samesite="lax"
    )


async def signed_in_volunteer(request: Request, session: SessionDep) -> VolunteerSession:
    token = request.cookies.get(ME_COOKIE)
    runtime = get_runtime(request)
    found = (
        await find_volunteer_session(
            session, token=token, now=runtime.clock.now(), settings=runtime.settings
        )
        if token
        else None
    )
    if found is None:
        raise VolunteerSignInRequired()
    request.state.volunteer = found
    await check_csrf(request, found.csrf_token)
    return found


def to_login(request: Request) -> Response:
    return see_other(request, f"{ME}/login")


VolunteerSessionDep = Annotated[VolunteerSession, Depends(signed_in_volunteer)]
PagesCsrfDep = Annotated[str, Depends(anonymous_csrf_for(PAGES_CSRF_COOKIE, "/"))]
