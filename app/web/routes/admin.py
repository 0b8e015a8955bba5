"""Coordinator pages that manage access: API keys, staff users, the audit log.

A secret (a new key, a password link) is shown in the answer to the POST that made
it and never again: there is no page to come back to it.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import RuntimeDep, SessionDep
from app.core.errors import Conflict, InvalidInput
from app.registry.audit import list_audit
from app.registry.key_admin import create_service_key, list_keys, revoke_service_key
from app.registry.staff import (
    PasswordLink,
    change_staff_role,
    create_staff_user,
    disable_staff_user,
    list_staff_users,
    principal_of,
    reissue_password_link,
)
from app.web.auth import CoordinatorDep, see_other
from app.web.forms import FormErrors, form_data, text_field
from app.web.i18n import _
from app.web.pages import CONSOLE, render
from app.web.routes.account import role_names

router = APIRouter(prefix=CONSOLE, include_in_schema=False)

PAGE = 50


def key_roles() -> dict[str, str]:
    return {"dispatcher": _("Dispatcher"), "admin": _("Administrator"), "locator": _("Locator")}


async def _keys_page(
    request: Request,
    session: SessionDep,
    *,
    cursor: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    **extra: Any,
) -> Response:
    keys, next_cursor = await list_keys(session, cursor=cursor, limit=PAGE)
    context = {
        "keys": keys,
        "next_url": f"{CONSOLE}/keys?{urlencode({'cursor': next_cursor})}" if next_cursor else None,
        "key_roles": key_roles(),
        "form": form or {"name": "", "role": "dispatcher", "centre": ""},
        "errors": errors or {},
        "created": None,
        "plaintext": None,
        "notice": None,
    } | extra
    return render(request, "keys.html", context, status=status)


@router.get("/keys")
async def keys(
    request: Request,
    staff: CoordinatorDep,
    session: SessionDep,
    cursor: str | None = Query(default=None, max_length=200),
) -> Response:
    return await _keys_page(request, session, cursor=cursor)


@router.post("/keys")
async def create_key(request: Request, staff: CoordinatorDep, session: SessionDep) -> Response:
    form = await form_data(request)
    typed = {name: text_field(form, name) for name in ("name", "role", "centre")}
    try:
        async with session.begin_nested():
            plaintext, record = await create_service_key(
                session,
                role=typed["role"],
                name=typed["name"],
                centre=typed["centre"],
                actor=principal_of(staff.user),
            )
    except InvalidInput as invalid:
        errors = FormErrors.of(invalid).errors
        return await _keys_page(request, session, form=typed, errors=errors, status=422)
    return await _keys_page(request, session, created=record, plaintext=plaintext)


@router.post("/keys/{key_id}/revoke")
async def revoke(
    request: Request, key_id: uuid.UUID, staff: CoordinatorDep, session: SessionDep
) -> Response:
    await revoke_service_key(session, key_id=key_id, actor=principal_of(staff.user))
    return see_other(request, f"{CONSOLE}/keys")


async def _staff_page(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    *,
    link: PasswordLink | None = None,
    cursor: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    people = await list_staff_users(session, cursor=cursor, limit=PAGE)
    context = {
        "people": people.rows,
        "next_url": f"{CONSOLE}/staff?{urlencode({'cursor': people.next_cursor})}"
        if people.next_cursor
        else None,
        "staff_roles": role_names(),
        "form": form or {"name": "", "email": "", "role": "dispatcher", "centre": ""},
        "errors": errors or {},
        "link": link,
        "link_url": f"{runtime.settings.console_origin}{CONSOLE}/password/{link.token}"
        if link
        else "",
        "notice": None,
    }
    return render(request, "staff.html", context, status=status)


@router.get("/staff")
async def staff_users(
    request: Request,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    cursor: str | None = Query(default=None, max_length=200),
) -> Response:
    return await _staff_page(request, session, runtime, cursor=cursor)


@router.post("/staff")
async def invite(
    request: Request, staff: CoordinatorDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    typed = {name: text_field(form, name) for name in ("name", "email", "role", "centre")}
    try:
        async with session.begin_nested():
            link = await create_staff_user(
                session,
                email=typed["email"],
                name=typed["name"],
                role=typed["role"],
                centre=typed["centre"],
                actor=principal_of(staff.user),
                now=runtime.clock.now(),
                settings=runtime.settings,
            )
    except InvalidInput as invalid:
        errors = FormErrors.of(invalid).errors
        return await _staff_page(request, session, runtime, form=typed, errors=errors, status=422)
    except Conflict:
        errors = {"email": _("Someone with this email already has an account.")}
        return await _staff_page(request, session, runtime, form=typed, errors=errors, status=409)
    return await _staff_page(request, session, runtime, link=link)


@router.post("/staff/{user_id}/link")
async def password_link(
    request: Request,
    user_id: uuid.UUID,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    link = await reissue_password_link(
        session,
        user_id=user_id,
        actor=principal_of(staff.user),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return await _staff_page(request, session, runtime, link=link)


@router.post("/staff/{user_id}/role")
async def change_role(
    request: Request,
    user_id: uuid.UUID,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await form_data(request)
    try:
        async with session.begin_nested():
            await change_staff_role(
                session,
                user_id=user_id,
                role=text_field(form, "role"),
                centre=text_field(form, "centre"),
                actor=principal_of(staff.user),
                now=runtime.clock.now(),
            )
    except InvalidInput as invalid:
        errors = {"form": FormErrors.of(invalid).errors[invalid.field]}
        return await _staff_page(request, session, runtime, errors=errors, status=422)
    return see_other(request, f"{CONSOLE}/staff")


@router.post("/staff/{user_id}/disable")
async def disable(
    request: Request,
    user_id: uuid.UUID,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    await disable_staff_user(
        session, user_id=user_id, actor=principal_of(staff.user), now=runtime.clock.now()
    )
    return see_other(request, f"{CONSOLE}/staff")


@router.get("/audit")
async def audit(
    request: Request,
    staff: CoordinatorDep,
    session: SessionDep,
    actor: str = Query(default="", max_length=200),
    action: str = Query(default="", max_length=100),
    before: int | None = Query(default=None, ge=1),
) -> Response:
    entries, next_before = await list_audit(
        session, actor=actor or None, action=action or None, before_id=before, limit=PAGE
    )
    next_url = None
    if next_before is not None:
        next_url = f"{CONSOLE}/audit?" + urlencode(
            {"actor": actor, "action": action, "before": next_before}
        )
    context = {
        "entries": entries,
        "filters": {"actor": actor, "action": action},
        "next_url": next_url,
    }
    return render(request, "audit.html", context)
