"""Signing in by single sign-on (OpenID Connect), beside the password sign-in.

The routes exist only while ``RESPONDER_OIDC_ISSUER`` is set. The callback ends in
the same server-side session as a password sign-in (a new id, audited with the
method); a refusal is a page that says why, and nothing about the person changes.
The password sign-in stays, for the local break-glass coordinator.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import RuntimeDep, SessionDep
from app.core.errors import InvalidInput, NotFound, Unauthorized
from app.registry.staff import staff_user_of_sso
from app.web.auth import cookie_options
from app.web.i18n import _
from app.web.oidc import (
    ATTEMPT_COOKIE,
    ATTEMPT_TTL_S,
    CALLBACK_PATH,
    SSO_PATH,
    Attempt,
    SsoRefused,
    authorization_url,
    identity_of_code,
)
from app.web.pages import CONSOLE
from app.web.routes.account import safe_next, signed_in
from app.web.routes.registry import refusal

router = APIRouter(prefix="", include_in_schema=False)
LOGIN = f"{CONSOLE}/login"


def _configured(runtime: RuntimeDep) -> None:
    if not runtime.settings.oidc_issuer:
        raise NotFound("single sign-on is not configured")


@router.get(SSO_PATH)
async def start(request: Request, runtime: RuntimeDep, next: str = CONSOLE) -> Response:
    _configured(runtime)
    attempt = Attempt.start(safe_next(next))
    try:
        target = await authorization_url(runtime.settings, attempt)
    except SsoRefused as refused:
        return refusal(request, refused.message, LOGIN, status=refused.status)
    response = Response(status_code=303, headers={"Location": target})
    response.set_cookie(
        ATTEMPT_COOKIE,
        attempt.cookie_value(),
        **cookie_options(runtime.settings, max_age=ATTEMPT_TTL_S, path=SSO_PATH),
    )
    return response


@router.get(CALLBACK_PATH)
async def callback(request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    _configured(runtime)
    attempt = Attempt.from_cookie(request.cookies.get(ATTEMPT_COOKIE))
    code = request.query_params.get("code")
    if attempt is None or request.query_params.get("state") != attempt.state or not code:
        message = _("This single sign-on answer does not belong to this browser. Sign in again.")
        return refusal(request, message, LOGIN, status=400)
    now = runtime.clock.now()
    try:
        identity = await identity_of_code(runtime.settings, attempt, code, now)
        user = await staff_user_of_sso(
            session,
            email=identity.email,
            name=identity.name,
            role=identity.role,
            centre=identity.centre,
            now=now,
        )
    except SsoRefused as refused:
        return refusal(request, refused.message, LOGIN, status=refused.status)
    except (InvalidInput, Unauthorized):
        message = _("Your single sign-on account cannot sign in to the Responder console.")
        return refusal(request, message, LOGIN, status=403)
    response = await signed_in(
        request, session, runtime, user=user, next_path=attempt.next_path, method="sso"
    )
    response.delete_cookie(ATTEMPT_COOKIE, path=SSO_PATH)
    return response
