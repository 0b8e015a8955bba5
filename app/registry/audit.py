"""The audit log: who changed the registry, what, and when.

Written by the service that makes the change, in the same transaction, so an
audited change and its record commit or roll back together.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import AuditLog
from app.registry.keys import Principal


async def record_audit(
    session: AsyncSession,
    *,
    actor: Principal,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None,
    details: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(AuditLog).values(
            actor_key_id=actor.key_id if actor.kind == "api_key" else None,
            actor_user_id=actor.key_id if actor.kind == "staff_user" else None,
            actor_name=actor.name,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            details=details or {},
        )
    )
