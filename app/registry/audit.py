"""The audit log: who changed the registry, what, and when.

Written by the service that makes the change, in the same transaction, so an
audited change and its record commit or roll back together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import AuditLog

ActorKind = Literal["api_key", "staff_user", "volunteer"]


class Actor(Protocol):
    """Whoever acts: a ``Principal`` (an API key or a console user), or a volunteer
    on their own pages (:class:`VolunteerSelf`)."""

    @property
    def key_id(self) -> uuid.UUID | None: ...

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> ActorKind: ...


@dataclass(frozen=True)
class VolunteerSelf:
    """A volunteer acting on their own record through the self-service pages."""

    volunteer_id: uuid.UUID
    key_id: None = None
    kind: Literal["volunteer"] = "volunteer"

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
            actor_key_id=actor.key_id if actor.kind == "api_key" else None,
            actor_user_id=actor.key_id if actor.kind == "staff_user" else None,
            actor_name=actor.name,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            details=details or {},
        )
    )


async def list_audit(
    session: AsyncSession,
    *,
    actor: str | None,
    action: str | None,
    before_id: int | None,
    limit: int,
) -> tuple[list[AuditLog], int | None]:
    """Newest first, filtered by who (name contains) and what (action prefix)."""
    statement = select(AuditLog)
    if actor:
        statement = statement.where(AuditLog.actor_name.icontains(actor, autoescape=True))
    if action:
        statement = statement.where(AuditLog.action.startswith(action, autoescape=True))
    if before_id is not None:
        statement = statement.where(AuditLog.id < before_id)
    rows = list(
        (await session.scalars(statement.order_by(AuditLog.id.desc()).limit(limit + 1))).all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].id if more else None
