"""Incident events: an append-only log in the database, announced with NOTIFY.

Each change to an incident or one of its alerts appends an ``incident_event`` row in
the same transaction as the change; its id is the SSE event id, so a client that
reconnects with ``Last-Event-ID`` replays exactly what it missed, and every API
process learns of it through ``LISTEN responder_events`` whichever process wrote it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import IncidentEvent

EVENTS_CHANNEL = "responder_events"


async def record_event(
    session: AsyncSession, *, incident_id: uuid.UUID, type: str, data: dict[str, Any]
) -> None:
    """Append one event; listeners are notified when the transaction commits."""
    await session.execute(
        insert(IncidentEvent).values(incident_id=incident_id, type=type, data=data)
    )
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": EVENTS_CHANNEL, "payload": str(incident_id)},
    )
