"""Signing in and out, the second factor, setting a password, one's own account.

A wrong password re-renders the form with the failure committed (it must count
for the throttle); the answer never says whether the e-mail exists.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import RuntimeDep, SessionDep
from app.core.errors import InvalidInput, RateLimited, Unauthorized
from app.core.models import StaffUser
from app.core.settings import Settings
from app.registry.staff import (
    check_totp,
    must_enrol_second_factor,
    needs_second_factor,
    record_login,
    set_language,
    set_password,
    start_totp_enrolment,
    totp_uri,
    user_of_password_link,
    verify_password_login,
)
from app.registry.web_sessions import open_session, revoke_session
from app.web.auth import (
    SESSION_COOKIE,
    AnonymousCsrfDep,
    EnrollingDep,
    StaffDep,
    clear_session_cookie,
    current_session,
    see_other,
    set_session_cookie,
)
from app.web.forms import form_data, text_field
from app.web.i18n import _
from app.web.oidc import SSO_PATH
from app.web.pages import CONSOLE, render

router = APIRouter(prefix=CONSOLE, include_in_schema=False)


def role_names() -> dict[str, str]:
    return {"coordinator": _("Coordinator"), "dispatcher": _("Dispatcher")}


def safe_next(raw: str | None) -> str:
    """Only a path inside the console: never another site (an open redirect)."""
    if raw and raw.startswith(CONSOLE) and not raw.startswith("//") and "\\" not in raw:
        return raw
    return CONSOLE


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("")
async def home(staff: StaffDep) -> Response:
    target = "/incidents" if staff.user.role == "dispatcher" else "/certifications"
    return Response(status_code=303, headers={"Location": CONSOLE + target})


@router.get("/login")
async def login_page(
    request: Request, csrf: AnonymousCsrfDep, runtime: RuntimeDep, next: str = CONSOLE
) -> Response:
    notice = _("Your session ended. Sign in again.") if request.query_params.get("ended") else None
    context: dict[str, object] = {
        "email": "",
        "errors": {},
        "next": safe_next(next),
        "notice": notice,
    }
    return render(request, "login.html", context | sso_offer(runtime.settings))


def sso_offer(settings: Settings) -> dict[str, str | None]:
    """Where the single sign-on button leads, when single sign-on is configured."""
    return {"sso_path": SSO_PATH if settings.oidc_issuer else None}


@router.post("/login")
async def login(
    request: Request, csrf: AnonymousCsrfDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    email = text_field(form, "email")
    next_path = safe_next(text_field(form, "next"))
    now = runtime.clock.now()
    try:
        user = await verify_password_login(
            session,
            email=email,
            password=text_field(form, "password", strip=False),
            ip=client_ip(request),
            now=now,
            settings=runtime.settings,
        )
    except (Unauthorized, RateLimited) as refused:
        message = (
            _("Too many failed sign-ins. Wait %(seconds)s seconds and try again.")
            % {"seconds": refused.retry_after}
            if isinstance(refused, RateLimited)
            else _("Wrong email or password.")
        )
        status = 429 if isinstance(refused, RateLimited) else 401
        context = {"email": email, "errors": {"form": message}, "next": next_path, "notice": None}
        return render(request, "login.html", context | sso_offer(runtime.settings), status=status)
    return await signed_in(
        request, session, runtime, user=user, next_path=next_path, pending=needs_second_factor(user)
    )


async def signed_in(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    *,
    user: StaffUser,
    next_path: str,
    pending: bool = False,
    method: str = "password",
) -> Response:
    """A new session id (a planted one is worthless), audited unless a code is still due."""
    now = runtime.clock.now()
    token = await open_session(
        session,
        user_id=user.id,
        now=now,
        settings=runtime.settings,
        second_factor_pending=pending,
        replaces=request.cookies.get(SESSION_COOKIE),
    )
    if not pending:
        await record_login(session, user=user, now=now, method=method)
    target = f"{CONSOLE}/login/code?next={next_path}" if pending else next_path
    response = see_other(request, target)
    set_session_cookie(response, runtime.settings, token)
    return response


@router.get("/login/code")
async def code_page(
    request: Request, csrf: AnonymousCsrfDep, session: SessionDep, next: str = CONSOLE
) -> Response:
    found = await current_session(request, session)
    if found is None or not found.second_factor_pending:
        return see_other(request, f"{CONSOLE}/login")
    return render(request, "login_code.html", {"errors": {}, "next": safe_next(next)})


@router.post("/login/code")
async def code(
    request: Request, csrf: AnonymousCsrfDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    found = await current_session(request, session)
    if found is None or not found.second_factor_pending:
        return see_other(request, f"{CONSOLE}/login")
    form = await form_data(request)
    next_path = safe_next(text_field(form, "next"))
    now = runtime.clock.now()
    try:
        user = await check_totp(
            session,
            user_id=found.user.id,
            code=text_field(form, "code"),
            now=now,
            settings=runtime.settings,
            ip=client_ip(request),
        )
    except (InvalidInput, RateLimited) as refused:
        message = (
            _("Too many failed sign-ins. Wait %(seconds)s seconds and try again.")
            % {"seconds": refused.retry_after}
            if isinstance(refused, RateLimited)
            else _("Wrong or already used code.")
        )
        context = {"errors": {"code": message}, "next": next_path}
        return render(request, "login_code.html", context, status=401)
    return await signed_in(
        request, session, runtime, user=user, next_path=next_path, method="password+totp"
    )


@router.post("/logout")
async def logout(
    request: Request, staff: EnrollingDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await revoke_session(session, token=token, now=runtime.clock.now())
    response = see_other(request, f"{CONSOLE}/login")
    clear_session_cookie(response, runtime.settings)
    return response


@router.get("/password/{token}")
async def password_page(
    request: Request, token: str, csrf: AnonymousCsrfDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    user = await user_of_password_link(session, token=token, now=runtime.clock.now())
    return render(request, "password.html", {"email": user.email, "errors": {}})


@router.post("/password/{token}")
async def choose_password(
    request: Request, token: str, csrf: AnonymousCsrfDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    now = runtime.clock.now()
    user = await user_of_password_link(session, token=token, now=now)
    form = await form_data(request)
    password = text_field(form, "password", strip=False)
    errors: dict[str, str] = {}
    if password != text_field(form, "repeat", strip=False):
        errors["repeat"] = _("The two passwords differ.")
    else:
        try:
            await set_password(session, token=token, password=password, now=now)
        except InvalidInput:
            errors["password"] = _("At least 12 and at most 256 characters.")
    if errors:
        return render(request, "password.html", {"email": user.email, "errors": errors}, status=422)
    return see_other(request, f"{CONSOLE}/login")


async def _account_page(
    request: Request,
    staff_user_id: uuid.UUID,
    session: SessionDep,
    runtime: RuntimeDep,
    **extra: object,
) -> Response:
    """The signed-in user's row is refreshed in place, so the page shows the new state."""
    user = await start_totp_enrolment(session, user_id=staff_user_id)
    context = {
        "role_names": role_names(),
        "totp_uri": totp_uri(user) if user.totp_enabled_at is None else "",
        "account": user,
        "required": must_enrol_second_factor(
            role=user.role, totp_enabled=user.totp_enabled_at is not None, settings=runtime.settings
        ),
        "errors": {},
        "notice": None,
    } | extra
    status = 422 if context["errors"] else 200
    return render(request, "account.html", context, status=status)


@router.get("/account")
async def account(
    request: Request, staff: EnrollingDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    return await _account_page(request, staff.user.id, session, runtime)


@router.post("/account/totp")
async def enable_totp(
    request: Request, staff: EnrollingDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    try:
        await check_totp(
            session,
            user_id=staff.user.id,
            code=text_field(form, "code"),
            now=runtime.clock.now(),
            settings=runtime.settings,
            ip=client_ip(request),
        )
    except (InvalidInput, RateLimited):
        return await _account_page(
            request,
            staff.user.id,
            session,
            runtime,
            errors={"code": _("Wrong or already used code.")},
        )
    return await _account_page(
        request, staff.user.id, session, runtime, notice=_("Two-step sign-in is on.")
    )


@router.post("/account/language")
async def choose_language(
    request: Request, staff: StaffDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    await set_language(
        session, user_id=staff.user.id, language=text_field(form, "language") or None
    )
    return see_other(request, f"{CONSOLE}/account")
