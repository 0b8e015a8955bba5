"""API keys as a coordinator manages them in the console: list, issue, revoke, audited.

The key itself is returned once, at issue, and never stored (only its hash, in
``app.registry.keys``). A dispatcher key must name its centre here: a key named
after a person would otherwise open a centre of that name.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidInput, NotFound
from app.core.models import ApiKey
from app.core.paging import fetch_page
from app.registry.audit import record_audit
from app.registry.keys import Principal, Role, issue_key, revoke_key

STAFF_ISSUED_ROLES: tuple[Role, ...] = ("admin", "dispatcher", "locator")


async def list_keys(
    session: AsyncSession, *, cursor: str | None, limit: int
) -> tuple[list[ApiKey], str | None]:
    """Service keys (not volunteers' app tokens), newest first, and the next page's cursor."""
    statement: Select[Any] = select(ApiKey).where(ApiKey.role != "volunteer")
    page = await fetch_page(session, statement, model=ApiKey, cursor=cursor, limit=limit)
    return list(page.rows), page.next_cursor


async def create_service_key(
    session: AsyncSession, *, role: str, name: str, centre: str | None, actor: Principal
) -> tuple[str, ApiKey]:
    if role not in STAFF_ISSUED_ROLES:
        raise InvalidInput("role", "role must be admin, dispatcher or locator")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name", "name is required (at most 200 characters)")
    centre = (centre or "").strip() or None
    if role == "dispatcher" and centre is None:
        raise InvalidInput("centre", "a dispatcher key needs a dispatch centre")
    if centre is not None and len(centre) > 200:
        raise InvalidInput("centre", "at most 200 characters")
    plaintext, record = await issue_key(
        session,
        role=role,
        name=name,
        centre=centre,
    )
    await record_audit(
        session,
        actor=actor,
        action="key.create",
        target_type="api_key",
        target_id=record.id,
        details={"role": role, "centre": record.centre},
    )
    return plaintext, record


async def revoke_service_key(session: AsyncSession, *, key_id: uuid.UUID, actor: Principal) -> None:
    if not await revoke_key(session, key_id=key_id):
        raise NotFound("no active key with this id")
    await record_audit(
        session, actor=actor, action="key.revoke", target_type="api_key", target_id=key_id
    )
