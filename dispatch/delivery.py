"""Delivery state of outbound SMS: forward-only, mirrored onto the alert.

A message's status only moves forward (queued < sending < sent < undelivered /
failed < delivered), whether the news comes from our own send, a status callback, a
duplicate callback or one that arrives out of order: each update is one
``UPDATE … WHERE rank(status) < rank(new)``, so the database decides and two
concurrent callbacks cannot move a status backwards. ``delivered`` ranks above the
failures: it is the provider's word that the phone has the SMS, and outweighs our
own give-up (a timed-out send abandoned at its deadline) or an earlier failure
report; a failure never undoes it. It moves only the status: nothing is sent
again. An alert's ``delivery_status`` mirrors its alert message and each change is
an incident event.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    DateTime,
    Select,
    String,
    Table,
    Update,
    bindparam,
    case,
    column,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.core.db import SessionQuery
from app.core.models import Alert, GatewayHealth, Message
from dispatch.events import (
    Event,
    lock_incident_of_message,
    lock_incidents_of_messages,
    record_event,
    record_events,
)

STATUS_RANK = {
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "undelivered": 3,
    "failed": 3,
    "delivered": 4,
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


def _rank(column: Any) -> ColumnElement[int]:
    return case(STATUS_RANK, value=column, else_=-1)


# Built once: every send the worker records and every delivery receipt runs these,
# and constructing and cache-keying them per call cost more CPU than executing them.
_message: Table = Message.__table__  # type: ignore[assignment]
_alert: Table = Alert.__table__  # type: ignore[assignment]
_SET_PROVIDER_SID = (
    update(_message)
    .where(
        _message.c.id == bindparam("message_id"),
        _message.c.provider_sid.is_(None),
        ~select(_message.c.id).where(_message.c.provider_sid == bindparam("new_sid")).exists(),
    )
    .values(provider_sid=bindparam("new_sid"))
)
_MIRROR_ON_ALERT = (
    update(_alert)
    .where(
        _alert.c.id == bindparam("alert_id"), _rank(_alert.c.delivery_status) < bindparam("rank")
    )
    .values(
        delivery_status=bindparam("new_status"),
        delivery_updated_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(_alert.c.incident_id)
)


@cache
def _advance_statement(
    *, error_code: bool, failure_reason: bool, sent: bool, provider: bool, holder: bool
) -> Update:
    """The forward-only status update, with the columns this news sets (at most 32 shapes).

    Parameters: ``message_id``, ``new_status``, ``rank`` (the new status's), ``now``,
    and ``error_code``, ``failure_reason``, ``provider`` when their flag is set.
    ``holder``: applied only to a message ``provider`` holds (or nobody does).
    """
    values: dict[str, Any] = {
        "status": bindparam("new_status"),
        "updated_at": bindparam("now"),
        "claimed_by": None,
    }
    if error_code:
        values["error_code"] = bindparam("new_error_code")
    if failure_reason:
        values["failure_reason"] = bindparam("new_failure_reason")
    if sent:
        values["sent_at"] = func.coalesce(_message.c.sent_at, bindparam("now"))
        if provider:
            values["provider"] = bindparam("new_provider")
    held = (
        or_(_message.c.provider.is_(None), _message.c.provider == bindparam("new_provider"))
        if holder
        else true()
    )
    return (
        update(_message)
        .where(
            _message.c.id == bindparam("message_id"),
            _message.c.direction == "out",
            _rank(_message.c.status) < bindparam("rank"),
            held,
        )
        .values(values)
        .returning(_message.c.alert_id, _message.c.volunteer_id, _message.c.purpose)
    )


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
    purpose: str | None = None,
) -> bool:
    """Move one outbound message forward; ``False`` when that would not be forward.

    ``purpose``: the message's, when the caller knows it (the worker claimed it): only
    an alert SMS has an incident to lock first, so for any other that round trip is
    skipped.

    ``provider``: whose news this is (our send's or a receipt's). A failure it reports
    is applied only to a message that provider holds: after the secondary took a
    message over, a late failure receipt for the primary's earlier try must not fail
    the secondary's send. A success from either is applied (the volunteer has the
    alert) and makes that provider the message's, so that what follows goes the same
    way. Written here, under the incident's lock, not before it: the lock order.

    A provider id we learn here is kept even when the status does not move (a
    callback can overtake our own record of the send). Locks in the order every
    writer of an incident uses: the incident of an alert SMS (its event takes the
    incident's counter: ``dispatch.events``), then the message, then the alert. An
    ``error_code`` of 21610 (opted out at the carrier) is the caller's to act on
    first, with :func:`dispatch.responses.carrier_opt_out` (it ends open alerts,
    which this module, below the reply path, cannot).
    """
    if purpose in (None, "alert"):
        await lock_incident_of_message(session, message_id)
    if provider_sid is not None:
        await session.execute(
            _SET_PROVIDER_SID, {"message_id": message_id, "new_sid": provider_sid}
        )
    sent = status in ("sent", "delivered")
    statement = _advance_statement(
        error_code=error_code is not None,
        failure_reason=failure_reason is not None,
        sent=sent,
        provider=sent and provider is not None,
        holder=provider is not None and status in ("failed", "undelivered"),
    )
    row = (
        await session.execute(
            statement,
            {
                "message_id": message_id,
                "new_status": status,
                "rank": STATUS_RANK[status],
                "now": now,
                "new_error_code": error_code,
                "new_failure_reason": None if failure_reason is None else failure_reason[:200],
                "new_provider": provider,
            },
        )
    ).one_or_none()
    if row is None:
        return False
    if row.alert_id is not None and row.purpose == "alert":
        await mirror_alert_delivery(session, alert_id=row.alert_id, status=status, now=now)
    return True


async def mirror_alert_delivery(
    session: AsyncSession, *, alert_id: uuid.UUID, status: str, now: datetime
) -> None:
    """Under the incident's lock (taken by :func:`advance_message`)."""
    incident_id = (
        await session.execute(
            _MIRROR_ON_ALERT,
            {"alert_id": alert_id, "rank": STATUS_RANK[status], "new_status": status, "now": now},
        )
    ).scalar_one_or_none()
    if incident_id is not None:
        await record_event(
            session,
            incident_id=incident_id,
            type="alert.delivery",
            data={"alert_id": str(alert_id), "delivery_status": status, "at": now.isoformat()},
        )


@dataclass(frozen=True)
class AcceptedSms:
    """An SMS (or call) the provider accepted (status ``sent``), to be recorded."""

    message_id: uuid.UUID
    provider_sid: str | None
    provider: str | None
    at: datetime
    purpose: str | None = None
    """The message's purpose; ``None``: not known, recorded as an alert SMS would be
    (its incident locked first)."""


_ids = bindparam("message_ids", type_=ARRAY(UUID(as_uuid=True)))


def _accepted_rows() -> Any:
    return (
        func.unnest(
            _ids,
            bindparam("sids", type_=ARRAY(String())),
            bindparam("providers", type_=ARRAY(String())),
            bindparam("ats", type_=ARRAY(DateTime(timezone=True))),
        )
        .table_valued(
            column("id", UUID(as_uuid=True)),
            column("sid", String()),
            column("provider", String()),
            column("at", DateTime(timezone=True)),
        )
        .render_derived(name="accepted")
    )


def _record_sent_statements() -> tuple[Any, Any]:
    """Both statements of :func:`record_sms_sent`, built once.

    The first keeps each provider id (even where the status does not move: a
    callback can overtake the record), skipping one another message holds; the
    second moves each SMS forward to ``sent`` and mirrors that onto its alert
    (forward only, as :func:`advance_message`), returning the alerts it moved.
    """
    accepted = _accepted_rows()
    taken = _message.alias("taken")
    set_sids = (
        update(_message)
        .where(
            _message.c.id == accepted.c.id,
            accepted.c.sid.is_not(None),
            _message.c.provider_sid.is_(None),
            ~select(taken.c.id).where(taken.c.provider_sid == accepted.c.sid).exists(),
        )
        .values(provider_sid=accepted.c.sid)
    )
    sent = STATUS_RANK["sent"]
    advanced = (
        update(_message)
        .where(
            _message.c.id == accepted.c.id,
            _message.c.direction == "out",
            _rank(_message.c.status) < sent,
        )
        .values(
            status="sent",
            updated_at=accepted.c.at,
            claimed_by=None,
            sent_at=func.coalesce(_message.c.sent_at, accepted.c.at),
            provider=func.coalesce(accepted.c.provider, _message.c.provider),
        )
        .returning(_message.c.alert_id, _message.c.purpose, accepted.c.at)
        .cte("advanced")
    )
    mirrored = (
        update(_alert)
        .where(
            _alert.c.id == advanced.c.alert_id,
            advanced.c.purpose == "alert",
            _rank(_alert.c.delivery_status) < sent,
        )
        .values(
            delivery_status="sent",
            delivery_updated_at=advanced.c.at,
            updated_at=advanced.c.at,
        )
        .returning(_alert.c.id, _alert.c.incident_id, advanced.c.at)
        .cte("mirrored")
    )
    return set_sids, select(mirrored.c.id, mirrored.c.incident_id, mirrored.c.at)


# On the driver connection of the record's transaction: the worker runs these for every
# batch of sends it records (docs/benchmarks.md, sixth pass).
_SET_SIDS, _ADVANCE_TO_SENT = (SessionQuery(statement) for statement in _record_sent_statements())


async def record_sms_sent(session: AsyncSession, accepted: Sequence[AcceptedSms]) -> None:
    """Record several accepted SMS in one transaction: what :func:`advance_message` does
    for each, in four round trips for any number (the worker's burst of an incident's
    alerts was seven per SMS, on the loop that was still sending the rest).

    Locks the incidents of the alert SMS first, in id order, then the SMS and alerts:
    the lock order. Events: one ``alert.delivery`` per alert moved, per incident in
    the order accepted. Any other SMS (a stand-down, instructions) moves on its own
    row, as :func:`advance_message` moves it: a batch known to hold no alert SMS
    (the stand-downs a reply causes) locks no incident, and skips the statement that
    would find none to lock.
    """
    if not accepted:
        return
    ids = [sms.message_id for sms in accepted]
    if any(sms.purpose in (None, "alert") for sms in accepted):
        await lock_incidents_of_messages(session, ids)
    seen: set[str] = set()
    sids = []
    for sms in accepted:  # one provider id per SMS: two in one statement could collide
        sids.append(sms.provider_sid if sms.provider_sid not in seen else None)
        if sms.provider_sid is not None:
            seen.add(sms.provider_sid)
    parameters = {
        "message_ids": ids,
        "sids": sids,
        "providers": [sms.provider for sms in accepted],
        "ats": [sms.at for sms in accepted],
    }
    if any(sid is not None for sid in sids):
        await _SET_SIDS.fetch(session, parameters)
    moved = await _ADVANCE_TO_SENT.fetch(session, parameters)
    by_incident: dict[uuid.UUID, list[Event]] = {}
    for row in sorted(moved, key=lambda row: row["at"]):
        alert_id, incident_id, at = row["id"], row["incident_id"], row["at"]
        by_incident.setdefault(incident_id, []).append(
            Event(
                type="alert.delivery",
                data={"alert_id": str(alert_id), "delivery_status": "sent", "at": at.isoformat()},
            )
        )
    for incident_id in sorted(by_incident):
        await record_events(session, incident_id=incident_id, events=by_incident[incident_id])


SettleRead = Select[uuid.UUID, uuid.UUID | None, str, bool]
"""The locking read of :func:`settle_alert_sms` (:func:`settle_statement`)."""

MAY_HAVE_REACHED = ("sending", "sent", "delivered", "undelivered")
"""Alert SMS states in which the volunteer may have the alert: handed to the provider,
or a request in flight or of unknown outcome. Whatever the state, so may a message
with ``may_have_reached``: an earlier attempt's outcome was unknown (a request that
timed out and was given up at its deadline, or queued again after a certain failure
of its retry, may still have reached the phone)."""


def settle_statement(alerts: ColumnElement[bool]) -> SettleRead:
    """The locking read of :func:`settle_alert_sms` for an incident's ``alerts``.

    Built once by each caller at import, with the condition its alerts meet (bound
    parameters for what varies): a stand-down runs it under a reply's incident lock,
    where building and cache-keying a statement per call cost more than running it.
    Parameters: ``incident_id`` and those of ``alerts``.
    """
    return (
        select(Message.id, Message.alert_id, Message.status, Message.may_have_reached)
        .join(Alert, Alert.id == Message.alert_id)
        .where(
            Alert.incident_id == bindparam("incident_id"),
            alerts,
            Message.direction == "out",
            Message.purpose == "alert",
        )
        .order_by(Message.id)
        .with_for_update(of=Message)
    )


_GIVE_UP_UNSENT = (
    update(_message)
    .where(_message.c.id == func.any(bindparam("unsent", type_=ARRAY(UUID(as_uuid=True)))))
    .values(
        status="failed", failure_reason="not_needed", claimed_by=None, updated_at=bindparam("now")
    )
)


async def settle_alert_sms(
    session: AsyncSession,
    *,
    statement: SettleRead,
    parameters: dict[str, Any],
    now: datetime,
) -> set[uuid.UUID]:
    """Of an incident's alerts about to be stood down or cancelled (``statement``, from
    :func:`settle_statement`, with its ``parameters``): those whose volunteer may have
    the alert.

    Decided from each alert SMS's own row, locked here (``FOR UPDATE``, before any
    alert row, the order a worker's record takes too): a worker's claim of it either
    committed first (then it is ``sending`` and counts as reached) or skips it and
    finds it given up. An SMS still ``queued`` is given up here as ``not_needed``
    in the same transaction, so no claim that started earlier can still send it.
    """
    rows = (await session.execute(statement, parameters)).all()
    unsent = [row.id for row in rows if row.status == "queued"]
    if unsent:
        await session.execute(_GIVE_UP_UNSENT, {"unsent": unsent, "now": now})
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
