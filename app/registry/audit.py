"""The audit log: who changed the registry, what, and when.

Written by the service that makes the change, in the same transaction, so an
audited change and its record commit or roll back together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import AuditLog


class Actor(Protocol):
    """Whoever acts: an API key's ``Principal``, a volunteer on their own pages."""

    @property
    def key_id(self) -> uuid.UUID | None: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class VolunteerSelf:
    """A volunteer acting on their own record through the self-service pages."""

    volunteer_id: uuid.UUID
    key_id: None = None

    @property
    def name(self) -> str:
        return f"volunteer {self.volunteer_id}"


async def record_audit(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None,
    details: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        insert(AuditLog).values(
            actor_key_id=actor.key_id,
            actor_name=actor.name,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            details=details or {},
        )
    )
