"""The outbound SMS queue: every text we send is first a ``message`` row.

Rows are inserted in the caller's transaction, so an SMS exists exactly when the
state change that caused it was committed (an alert is never lost between the
incident's commit and the send). ``pg_notify`` in the same transaction wakes the
workers at commit, not before; polling is only their fallback.

Each row carries the ``priority`` of its purpose, so that the workers' claim
(``ORDER BY priority, next_attempt_at``, on an index in that order) hands an alert
to the provider before anything else that is due.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ARRAY, bindparam, case, exists, func, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE

from app.core.db import SessionQuery, random_uuids, unnest_insert, unnest_rows
from app.core.models import Incident, Message, Volunteer
from app.core.texts import exercise_text

OUTBOX_CHANNEL = "responder_outbox"

ALERT_PRIORITY = 0
URGENT_PRIORITY = 1
BULK_PRIORITY = 3
PURPOSE_PRIORITY = {
    "alert": ALERT_PRIORITY,
    "alert_call": ALERT_PRIORITY,
    "instructions": URGENT_PRIORITY,
    "update": URGENT_PRIORITY,
    "stand_down": URGENT_PRIORITY,
    "cancellation": URGENT_PRIORITY,
    "signup_code": URGENT_PRIORITY,
    "login_code": URGENT_PRIORITY,
    "cert_reminder": BULK_PRIORITY,
    "consent": BULK_PRIORITY,
    "follow_up": BULK_PRIORITY,
}
"""Lower goes first: the alert itself; then what changes where a volunteer goes (or
lets a person in: sign-up and login codes); then everything else (2: thanks, a
responder's debrief request); last, bulk non-urgent traffic (renewal reminders,
the consent requests of an import), which the worker also bounds to a share of
its send slots and to daytime hours."""
OTHER_PRIORITY = 2


def priority_of(purpose: str) -> int:
    return PURPOSE_PRIORITY.get(purpose, OTHER_PRIORITY)


@dataclass(frozen=True)
class OutboundSms:
    phone: str
    body: str
    purpose: str
    volunteer_id: uuid.UUID | None = None
    incident_id: uuid.UUID | None = None
    alert_id: uuid.UUID | None = None
    deadline_at: datetime | None = None
    channel: str = "sms"
    """``voice``: placed as a call by the call worker (``dispatch/voice.py``)."""


@dataclass(frozen=True)
class LeasedSms:
    """An alert SMS queued already claimed by a :class:`Lease`, as stored."""

    id: uuid.UUID
    sms: OutboundSms
    priority: int
    exercise: bool
    queued_at: datetime


@dataclass
class Lease:
    """Room, held back in one worker of this process, for alert SMS that are claimed as
    they are queued (the incident POST's burst, ``dispatch.worker.DispatchWorker.reserve``).

    Such a row is stored ``sending``, leased to ``holder`` until ``until``, exactly as
    the worker's claim would leave it, so a crash after the commit costs what a crash
    after a claim costs (the lease runs out, another worker sends it); and no worker
    is woken for it, since none could claim it.
    """

    holder: str
    until: datetime
    room: int
    channel: str = "sms"
    alert_ids: set[uuid.UUID] = field(default_factory=set)
    """The alerts whose SMS it takes (:meth:`take`)."""
    taken: list[LeasedSms] = field(default_factory=list)
    """Those SMS as queued, for the worker to send once the transaction commits."""

    def take(self, messages: Sequence[OutboundSms]) -> set[uuid.UUID]:
        """Take the alert SMS of ``messages`` in order (nearest first) while room is left;
        returns the alerts taken so far."""
        for item in messages:
            if len(self.alert_ids) >= self.room:
                break
            if item.purpose == "alert" and item.channel == self.channel and item.alert_id:
                self.alert_ids.add(item.alert_id)
        return self.alert_ids

    def leases(self, item: OutboundSms) -> bool:
        return item.purpose == "alert" and item.alert_id in self.alert_ids


_KNOWN_EXERCISES = "responder.known_exercises"


def note_exercise(session: AsyncSession, incident_id: uuid.UUID, *, exercise: bool) -> None:
    """What the session already knows of an incident it created (the flag never changes
    after), so the texts queued for it need no look-up (the dispatcher's POST)."""
    session.info.setdefault(_KNOWN_EXERCISES, {})[incident_id] = exercise


# Built once: a stand-down runs both under a reply's incident lock.
_UUIDS = ARRAY(UUID(as_uuid=True))
_EXERCISES_AMONG = select(Incident.id).where(
    Incident.id == func.any(bindparam("incident_ids", type_=_UUIDS)), Incident.exercise
)
_CALLED_AMONG = select(Message.alert_id).where(
    Message.alert_id == func.any(bindparam("alert_ids", type_=_UUIDS)),
    Message.channel == "voice",
    Message.purpose == "alert",
)


async def _mark_exercises(
    session: AsyncSession, messages: list[OutboundSms]
) -> tuple[list[OutboundSms], set[uuid.UUID]]:
    """Every text about an exercise incident starts with ``EXERCISE`` / ``ÖVNING``.

    Marked here, where every incident's texts pass, rather than at each of their
    call sites, so no new kind of text can forget it. One indexed look-up per call
    with an incident the transaction has not told it about (:func:`note_exercise`);
    a second (the recipients' language) only for an exercise.
    """
    incident_ids = {item.incident_id for item in messages if item.incident_id is not None}
    if not incident_ids:
        return messages, set()
    known: dict[uuid.UUID, bool] = session.info.get(_KNOWN_EXERCISES, {})
    exercises = {incident_id for incident_id in incident_ids if known.get(incident_id)}
    unknown = incident_ids - known.keys()
    if unknown:
        exercises |= set(
            (await session.execute(_EXERCISES_AMONG, {"incident_ids": list(unknown)})).scalars()
        )
    if not exercises:
        return messages, exercises
    volunteer_ids = {
        item.volunteer_id
        for item in messages
        if item.incident_id in exercises and item.volunteer_id is not None
    }
    recipients = await session.execute(
        select(Volunteer.id, Volunteer.language).where(Volunteer.id.in_(volunteer_ids))
    )
    languages: dict[uuid.UUID, str] = dict(recipients.all())
    marked = [
        replace(item, body=exercise_text(languages.get(item.volunteer_id, "sv"), item.body))
        if item.incident_id in exercises and item.volunteer_id is not None
        else item
        for item in messages
    ]
    return marked, exercises


SAID_BY_CALL_TOO = ("stand_down", "cancellation")
STAND_DOWN_CALL_LIFETIME = timedelta(minutes=5)
"""A stand-down or cancellation call later than this is no longer worth a ring."""


async def _calls_too(
    session: AsyncSession, messages: list[OutboundSms], *, now: datetime
) -> list[OutboundSms]:
    """A volunteer whose alert was a call (``voice``: a landline, say) also hears the
    stand-down or the cancellation in a short call, beside the SMS.

    Here, where every such text passes, for the reason exercises are marked here.
    One indexed look-up, only for a stand-down or a cancellation.
    """
    alert_ids = {
        item.alert_id
        for item in messages
        if item.purpose in SAID_BY_CALL_TOO and item.alert_id is not None
    }
    if not alert_ids:
        return []
    called = set((await session.execute(_CALLED_AMONG, {"alert_ids": list(alert_ids)})).scalars())
    return [
        replace(item, channel="voice", deadline_at=now + STAND_DOWN_CALL_LIFETIME)
        for item in messages
        if item.purpose in SAID_BY_CALL_TOO and item.alert_id in called
    ]


_MESSAGE_COLUMNS = (
    "id",
    "status",
    "purpose",
    "priority",
    "phone",
    "body",
    "volunteer_id",
    "incident_id",
    "alert_id",
    "deadline_at",
    "channel",
    "claimed_by",
    "attempts",
    "next_attempt_at",
)
_MESSAGE_CONSTANTS = ("direction", "may_have_reached", "created_at", "updated_at")
"""The columns every text queued together holds the same value in, bound once
(``app.core.db.unnest_insert``'s ``constant``; :func:`_constants`)."""
_PREFIX = "message_"
"""The texts' parameters are named apart from any column's: in a statement with other
writes (:func:`queue_statement_beside`), SQLAlchemy would make a parameter named as a
column of an ``UPDATE`` there part of that ``UPDATE``'s ``SET``
(``tests/test_post_statements.py``)."""
_queued = (
    unnest_insert(Message, _MESSAGE_COLUMNS, prefix=_PREFIX, constant=_MESSAGE_CONSTANTS)
    .returning(Message.id, Message.status)
    .cte("queued")
)
_ANY_QUEUED = exists(select(_queued.c.id).where(_queued.c.status == "queued"))
_QUEUE_AND_NOTIFY = SessionQuery(select(func.pg_notify(OUTBOX_CHANNEL, "")).where(_ANY_QUEUED))
"""The insert and the senders' wake-up (delivered at commit) in one round trip; no
wake-up when a :class:`Lease` took every row."""


def queue_statement_beside(rows: CTE, *, announce: tuple[CTE, ColumnElement[Any]]) -> SessionQuery:
    """The texts' statement that also runs the data-modifying CTE ``rows`` (what the
    texts are about: an incident's new alerts) and ``announce`` (a CTE with the column
    computed per row of it: its events and their NOTIFY), for :func:`queue_sms`'s
    ``beside``: one round trip for all. Build it once.

    The texts' foreign keys are checked at the end of the statement, when every
    insert is done; the senders' wake-up is the same as :data:`_QUEUE_AND_NOTIFY`'s.
    """
    announced_rows, announced = announce
    wake = case((_ANY_QUEUED, func.pg_notify(OUTBOX_CHANNEL, "")))
    return SessionQuery(select(wake, announced).select_from(announced_rows).add_cte(rows))


async def queue_sms(
    session: AsyncSession,
    messages: list[OutboundSms],
    *,
    now: datetime,
    lease: Lease | None = None,
    beside: tuple[SessionQuery, dict[str, Any]] | None = None,
) -> None:
    """Queue texts (and the calls that repeat some of them) with one INSERT statement
    (``app.core.db.unnest_insert``) and wake the senders when the transaction commits.

    The alert SMS that ``lease`` took (:meth:`Lease.take`) are stored claimed by it
    and listed in ``lease.taken``. ``beside``: a statement of
    :func:`queue_statement_beside` and its own parameters, run instead.
    """
    if not messages and beside is None:
        return
    messages = messages + await _calls_too(session, messages, now=now)
    messages, exercises = await _mark_exercises(session, messages)
    rows = [
        _row(item, message_id, now=now, lease=lease)
        for item, message_id in zip(messages, random_uuids(len(messages)), strict=True)
    ]
    if lease is not None:
        lease.taken.extend(
            LeasedSms(
                id=row["id"],
                sms=item,
                priority=row["priority"],
                exercise=item.incident_id in exercises,
                queued_at=now,
            )
            for item, row in zip(messages, rows, strict=True)
            if row["claimed_by"] is not None
        )
    statement, parameters = (_QUEUE_AND_NOTIFY, {}) if beside is None else beside
    await statement.fetch(
        session,
        {
            **parameters,
            **unnest_rows(_MESSAGE_COLUMNS, rows, prefix=_PREFIX, constant=_constants(now)),
        },
    )


def _constants(now: datetime) -> dict[str, Any]:
    return {
        "direction": "out",
        # Named, not left to its default: a default in a CTE's INSERT gets no value.
        "may_have_reached": False,
        "created_at": now,
        "updated_at": now,
    }


def _row(
    item: OutboundSms, message_id: uuid.UUID, *, now: datetime, lease: Lease | None
) -> dict[str, Any]:
    held_by = lease if lease is not None and lease.leases(item) else None
    return {
        "id": message_id,
        "status": "queued" if held_by is None else "sending",
        "purpose": item.purpose,
        "priority": priority_of(item.purpose),
        "phone": item.phone,
        "body": item.body,
        "volunteer_id": item.volunteer_id,
        "incident_id": item.incident_id,
        "alert_id": item.alert_id,
        "deadline_at": item.deadline_at,
        "channel": item.channel,
        # As the worker's claim leaves a row: its first attempt, under lease.
        "claimed_by": None if held_by is None else held_by.holder,
        "attempts": 0 if held_by is None else 1,
        "next_attempt_at": now if held_by is None else held_by.until,
    }
