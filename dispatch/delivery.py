"""Delivery state of outbound SMS: forward-only, mirrored onto the alert.

A message's status only moves forward (queued < sending < sent < delivered, or
the terminal undelivered / failed), whether the news comes from our own send, a
status callback, a duplicate callback or one that arrives out of order: each update
is one ``UPDATE … WHERE rank(status) < rank(new)``, so the database decides and two
concurrent callbacks cannot move a status backwards. An alert's ``delivery_status``
mirrors its alert message and each change is an incident event.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.core.models import Alert, GatewayHealth, Message
from app.registry.volunteers import opt_out
from dispatch.events import lock_incident_of_message, record_event

STATUS_RANK = {
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "undelivered": 3,
    "failed": 3,
}
PROVIDER_STATUS = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
"""Twilio's message statuses onto ours; any provider status means it accepted the SMS."""
OPTED_OUT_CODE = 21610


def _rank(column: Any) -> ColumnElement[int]:
    return case(STATUS_RANK, value=column, else_=-1)


async def advance_message(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    status: str,
    now: datetime,
    provider_sid: str | None = None,
    error_code: int | None = None,
    failure_reason: str | None = None,
    provider: str | None = None,
) -> bool:
    """Move one outbound message forward; ``False`` when that would not be forward.

    ``provider``: whose news this is (our send's or a receipt's). A failure it reports
    is applied only to a message that provider holds: after the secondary took a
    message over, a late failure receipt for the primary's earlier try must not fail
    the secondary's send. A success from either is applied (the volunteer has the
    alert) and makes that provider the message's, so that what follows goes the same
    way. Written here, under the incident's lock, not before it: the lock order.

    A provider id we learn here is kept even when the status does not move (a
    callback can overtake our own record of the send). Locks in the order every
    writer of an incident uses: the volunteer (an opt-out, 21610), the incident of
    an alert SMS (its event takes the incident's counter: ``dispatch.events``), then
    the message, then the alert.
    """
    if error_code == OPTED_OUT_CODE:
        await _opt_out_recipient(session, message_id=message_id, now=now)
    await lock_incident_of_message(session, message_id)
    if provider_sid is not None:
        await session.execute(
            update(Message)
            .where(
                Message.id == message_id,
                Message.provider_sid.is_(None),
                ~select(Message.id).where(Message.provider_sid == provider_sid).exists(),
            )
            .values(provider_sid=provider_sid)
        )
    values: dict[str, Any] = {"status": status, "updated_at": now, "claimed_by": None}
    if error_code is not None:
        values["error_code"] = error_code
    if failure_reason is not None:
        values["failure_reason"] = failure_reason[:200]
    if status in ("sent", "delivered"):
        values["sent_at"] = func.coalesce(Message.sent_at, now)
        if provider is not None:
            values["provider"] = provider
    holder = (
        or_(Message.provider.is_(None), Message.provider == provider)
        if provider is not None and status in ("failed", "undelivered")
        else true()
    )
    row = (
        await session.execute(
            update(Message)
            .where(
                Message.id == message_id,
                Message.direction == "out",
                _rank(Message.status) < STATUS_RANK[status],
                holder,
            )
            .values(values)
            .returning(Message.alert_id, Message.volunteer_id, Message.purpose)
        )
    ).one_or_none()
    if row is None:
        return False
    if row.alert_id is not None and row.purpose == "alert":
        await mirror_alert_delivery(session, alert_id=row.alert_id, status=status, now=now)
    return True


async def _opt_out_recipient(
    session: AsyncSession, *, message_id: uuid.UUID, now: datetime
) -> None:
    """The carrier says the recipient opted out (21610), whatever the message's status."""
    volunteer_id = (
        await session.execute(select(Message.volunteer_id).where(Message.id == message_id))
    ).scalar_one_or_none()
    if volunteer_id is not None:
        await opt_out(session, volunteer_id=volunteer_id, now=now)


async def mirror_alert_delivery(
    session: AsyncSession, *, alert_id: uuid.UUID, status: str, now: datetime
) -> None:
    """Under the incident's lock (taken by :func:`advance_message`)."""
    incident_id = (
        await session.execute(
            update(Alert)
            .where(Alert.id == alert_id, _rank(Alert.delivery_status) < STATUS_RANK[status])
            .values(delivery_status=status, delivery_updated_at=now, updated_at=now)
            .returning(Alert.incident_id)
        )
    ).scalar_one_or_none()
    if incident_id is not None:
        await record_event(
            session,
            incident_id=incident_id,
            type="alert.delivery",
            data={"alert_id": str(alert_id), "delivery_status": status, "at": now.isoformat()},
        )


MAY_HAVE_REACHED = ("sending", "sent", "delivered", "undelivered")
"""Alert SMS states in which the volunteer may have the alert: handed to the provider,
or a request in flight or of unknown outcome. Whatever the state, so may a message
with ``may_have_reached``: an earlier attempt's outcome was unknown (a request that
timed out and was given up at its deadline, or queued again after a certain failure
of its retry, may still have reached the phone)."""


async def settle_alert_sms(
    session: AsyncSession, *, incident_id: uuid.UUID, alerts: ColumnElement[bool], now: datetime
) -> set[uuid.UUID]:
    """Of an incident's ``alerts`` about to be stood down or cancelled: those whose
    volunteer may have the alert.

    Decided from each alert SMS's own row, locked here (``FOR UPDATE``, before any
    alert row, the order a worker's record takes too): a worker's claim of it either
    committed first (then it is ``sending`` and counts as reached) or skips it and
    finds it given up. An SMS still ``queued`` is given up here as ``not_needed``
    in the same transaction, so no claim that started earlier can still send it.
    """
    rows = (
        await session.execute(
            select(Message.id, Message.alert_id, Message.status, Message.may_have_reached)
            .join(Alert, Alert.id == Message.alert_id)
            .where(
                Alert.incident_id == incident_id,
                alerts,
                Message.direction == "out",
                Message.purpose == "alert",
            )
            .order_by(Message.id)
            .with_for_update(of=Message)
        )
    ).all()
    unsent = [row.id for row in rows if row.status == "queued"]
    if unsent:
        await session.execute(
            update(Message)
            .where(Message.id.in_(unsent))
            .values(status="failed", failure_reason="not_needed", claimed_by=None, updated_at=now)
        )
    return {row.alert_id for row in rows if row.status in MAY_HAVE_REACHED or row.may_have_reached}


async def note_gateway_result(
    session: AsyncSession,
    *,
    gateway: str,
    now: datetime,
    ok: bool,
    refused: bool = False,
    error: str | None = None,
) -> None:
    """Keep the shared health row current: one upsert per send outcome."""
    if ok:
        values: dict[str, Any] = {
            "consecutive_failures": 0,
            "refused": False,
            "last_success_at": now,
        }
        insert_values = {**values}
    else:
        values = {
            "consecutive_failures": GatewayHealth.consecutive_failures + 1,
            "refused": refused,
            "last_error": error,
            "last_error_at": now,
        }
        insert_values = {**values, "consecutive_failures": 1}
    statement = pg_insert(GatewayHealth).values(name=gateway, **insert_values)
    await session.execute(
        statement.on_conflict_do_update(index_elements=[GatewayHealth.name], set_=values)
    )


async def gateway_health(session: AsyncSession, *, gateway: str) -> GatewayHealth | None:
    return (
        await session.execute(select(GatewayHealth).where(GatewayHealth.name == gateway))
    ).scalar_one_or_none()
