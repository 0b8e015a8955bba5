"""Who is signed in to the console, and the CSRF check on every state-changing request.

The session cookie is ``HttpOnly`` and ``SameSite=Lax`` always, ``Secure`` when the
console's origin is https. CSRF uses the synchronizer-token pattern: each session
row holds a random token that every form carries as ``csrf_token`` (htmx sends it
as ``X-CSRF-Token``); before sign-in, the forms (sign-in, code, set password) carry
a random token that must equal a cookie of the same value (double submit). Both
checks are part of the dependency that opens a console route, so a POST route
cannot forget them.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from app.api.deps import SessionDep, get_runtime
from app.core.errors import Forbidden
from app.core.settings import Settings
from app.registry.staff import StaffRole, must_enrol_second_factor
from app.registry.web_sessions import StaffSession, find_session
from app.web.i18n import _
from app.web.pages import CONSOLE

SESSION_COOKIE = "responder_console"
LOGIN_CSRF_COOKIE = "responder_console_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignInRequired(Exception):
    """No live session: the person is sent to the sign-in page (and back afterwards)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class EnrolmentRequired(Exception):
    """A coordinator without a second factor, while the setting requires one."""


class CsrfRefused(Forbidden):
    def __init__(self) -> None:
        super().__init__(_("The form was not sent from this console, or it expired."))


def cookie_options(
    settings: Settings, *, max_age: int | None, path: str = CONSOLE
) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": settings.console_origin.startswith("https://"),
        "path": path,
        "max_age": max_age,
    }


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        **cookie_options(settings, max_age=int(settings.session_max_age.total_seconds())),
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    options = cookie_options(settings, max_age=None)
    response.delete_cookie(
        SESSION_COOKIE,
        path=options["path"],
        secure=options["secure"],
        httponly=True,
        samesite="lax",
    )


async def _sent_csrf_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    form = await request.form()
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else ""


async def check_csrf(request: Request, expected: str) -> None:
    if request.method in SAFE_METHODS:
        return
    sent = await _sent_csrf_token(request)
    if not expected or not sent or not secrets.compare_digest(sent, expected):
        raise CsrfRefused()


def anonymous_csrf_for(cookie: str, path: str) -> Callable[[Request], Awaitable[str]]:
    """The double-submit check of pages before sign-in, with its cookie under ``path``."""

    async def anonymous_csrf(request: Request) -> str:
        """The double-submit token (set as a cookie when missing)."""
        token = request.cookies.get(cookie)
        await check_csrf(request, token or "")
        if not token:
            token = secrets.token_urlsafe(32)
            settings = get_runtime(request).settings
            request.state.set_cookies = {
                cookie: {"value": token, **cookie_options(settings, max_age=None, path=path)}
            }
        request.state.anonymous_csrf = token
        return token

    return anonymous_csrf


anonymous_csrf = anonymous_csrf_for(LOGIN_CSRF_COOKIE, CONSOLE)


anonymous_csrf.checks_csrf = True  # type: ignore[attr-defined]


async def current_session(request: Request, session: SessionDep) -> StaffSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    runtime = get_runtime(request)
    return await find_session(
        session, token=token, now=runtime.clock.now(), settings=runtime.settings
    )


def _next_path(request: Request) -> str:
    if request.method in SAFE_METHODS and not request.headers.get("hx-request"):
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    current = urlsplit(request.headers.get("hx-current-url", ""))
    return current.path if current.path.startswith(CONSOLE) else CONSOLE


def require_staff(*roles: StaffRole) -> Callable[..., Awaitable[StaffSession]]:
    """Signed in (else to the sign-in page), CSRF checked on writes, then the role (403)."""

    async def staff(request: Request, session: SessionDep) -> StaffSession:
        found = await current_session(request, session)
        if found is None or found.second_factor_pending:
            raise SignInRequired(_next_path(request))
        request.state.staff = found
        await check_csrf(request, found.csrf_token)
        settings = get_runtime(request).settings
        if must_enrol_second_factor(
            role=found.user.role, totp_enabled=found.user.totp_enabled, settings=settings
        ):
            raise EnrolmentRequired()
        if roles and found.user.role not in roles:
            raise Forbidden(_("This page is for another role."))
        return found

    staff.roles = frozenset(roles)  # type: ignore[attr-defined]
    staff.checks_csrf = True  # type: ignore[attr-defined]
    return staff


def enrolling_staff() -> Callable[..., Awaitable[StaffSession]]:
    """Signed in, possibly still owing the mandatory second factor (its enrolment page)."""

    async def staff(request: Request, session: SessionDep) -> StaffSession:
        found = await current_session(request, session)
        if found is None or found.second_factor_pending:
            raise SignInRequired(_next_path(request))
        request.state.staff = found
        await check_csrf(request, found.csrf_token)
        return found

    staff.checks_csrf = True  # type: ignore[attr-defined]
    return staff


StaffDep = Annotated[StaffSession, Depends(require_staff())]
CoordinatorDep = Annotated[StaffSession, Depends(require_staff("coordinator"))]
DispatcherStaffDep = Annotated[StaffSession, Depends(require_staff("dispatcher"))]
EnrollingDep = Annotated[StaffSession, Depends(enrolling_staff())]
AnonymousCsrfDep = Annotated[str, Depends(anonymous_csrf)]


def see_other(request: Request, path: str) -> Response:
    """After a form: 303 to the page to show (htmx follows it and swaps its part in)."""
    return RedirectResponse(path, status_code=303)


def sign_in_redirect(request: Request, next_path: str) -> Response:
    """To the sign-in page; from an htmx request, as a whole-page navigation."""
    path = f"{CONSOLE}/login?next={quote(next_path, safe='/')}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": path})
    return see_other(request, path)
