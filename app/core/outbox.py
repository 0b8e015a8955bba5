"""The outbound SMS queue: every text we send is first a ``message`` row.

Rows are inserted in the caller's transaction, so an SMS exists exactly when the
state change that caused it was committed (an alert is never lost between the
incident's commit and the send). ``pg_notify`` in the same transaction wakes the
workers at commit, not before; polling is only their fallback.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Message

OUTBOX_CHANNEL = "responder_outbox"


@dataclass(frozen=True)
class OutboundSms:
    phone: str
    body: str
    purpose: str
    volunteer_id: uuid.UUID | None = None
    incident_id: uuid.UUID | None = None
    alert_id: uuid.UUID | None = None
    deadline_at: datetime | None = None


async def queue_sms(session: AsyncSession, messages: list[OutboundSms], *, now: datetime) -> None:
    """Queue texts with one INSERT and wake the senders when the transaction commits."""
    if not messages:
        return
    await session.execute(
        insert(Message),
        [
            {
                "id": uuid.uuid4(),
                "direction": "out",
                "status": "queued",
                "purpose": item.purpose,
                "phone": item.phone,
                "body": item.body,
                "volunteer_id": item.volunteer_id,
                "incident_id": item.incident_id,
                "alert_id": item.alert_id,
                "deadline_at": item.deadline_at,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for item in messages
        ],
    )
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": OUTBOX_CHANNEL})
