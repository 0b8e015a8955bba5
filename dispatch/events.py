"""Incident events: an append-only log in the database, announced with NOTIFY.

Each change to an incident or one of its alerts appends an ``incident_event`` row in
the same transaction as the change, and every API process learns of it through
``LISTEN responder_events`` whichever process wrote it.

Order. An event is numbered per incident (``seq`` = 1, 2, 3 …) by incrementing
``incident.event_seq`` in the writing transaction, so the writer holds the
incident's row lock from that moment until it commits. A second writer of the same
incident waits at its own increment until the first has committed (or rolled back,
which gives its number back), so the incident's events become visible strictly in
``seq`` order and without gaps: whatever a reader sees is 1..n, and a reader that
resumes after n (``Last-Event-ID``) gets every later event exactly once. A global
sequence id cannot promise that: two transactions take ids in one order and may
commit in the other, and a reader that saw the higher id skips the lower one.

Lock order. Every writer of an incident's events takes the incident row before any
alert or alert SMS row of it (replies, cancel, close, PATCH and the timers lock the
incident first; a delivery receipt locks it before the alert SMS it advances,
``lock_incident_of_message``), so waiting on the event counter never closes a cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy import (
    ARRAY,
    Integer,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select

from app.core.db import sync_url
from app.core.models import Incident, IncidentEvent, Message

log = structlog.get_logger(__name__)

EVENTS_CHANNEL = "responder_events"
ANY_INCIDENT = "*"


async def record_event(
    session: AsyncSession, *, incident_id: uuid.UUID, type: str, data: dict[str, Any]
) -> None:
    """Append the incident's next event; listeners are notified when the transaction commits.

    One round trip: the counter increment (which takes or re-takes the incident's
    row lock until commit), the insert and its ``pg_notify`` are one statement.
    """
    await record_events(session, incident_id=incident_id, events=[Event(type=type, data=data)])


@dataclass(frozen=True)
class Event:
    """One event to append (``type`` as in ``app/api/schemas/events.py``)."""

    type: str
    data: dict[str, Any]


async def record_events(
    session: AsyncSession, *, incident_id: uuid.UUID, events: Sequence[Event]
) -> None:
    """Append several events of one incident, numbered in order, in that one statement."""
    await session.execute(_RECORD_EVENTS, event_parameters(incident_id, events))


def event_parameters(
    incident_id: uuid.UUID, events: Sequence[Event], *, prefix: str = ""
) -> dict[str, Any]:
    """The parameters of :func:`recorded_events` built with the same ``prefix``."""
    return {
        f"{prefix}incident_id": incident_id,
        f"{prefix}count": len(events),
        f"{prefix}events": [{"type": event.type, "data": event.data} for event in events],
    }


def recorded_events(*, prefix: str = "") -> tuple[CTE, ColumnElement[Any]]:
    """The events' append as a data-modifying CTE (one row per event appended), and the
    column that announces them, computed per row of it (:func:`event_parameters`).

    For a statement that also does something else (the incident POST's alerts and
    texts: one round trip for all three); ``prefix`` names the parameters apart.
    Built on the tables (an ORM-enabled ``UPDATE`` or ``INSERT`` has its cache key
    rebuilt on every execution, and every writer of an event runs this).
    """
    incident: Table = Incident.__table__  # type: ignore[assignment]
    event: Table = IncidentEvent.__table__  # type: ignore[assignment]
    count = bindparam(f"{prefix}count", type_=Integer())
    numbered = (
        update(incident)
        .where(incident.c.id == bindparam(f"{prefix}incident_id"))
        # updated_at named so its onupdate does not fire: an event is not an edit.
        .values(event_seq=incident.c.event_seq + count, updated_at=incident.c.updated_at)
        .returning(incident.c.id, incident.c.event_seq)
        .cte(f"{prefix}numbered")
    )
    given = (
        func.jsonb_array_elements(bindparam(f"{prefix}events", type_=JSONB()))
        .table_valued(column("event", JSONB()), with_ordinality="position")
        .render_derived()
    )
    inserted = (
        insert(event)
        .from_select(
            ["incident_id", "seq", "type", "data"],
            select(
                numbered.c.id,
                numbered.c.event_seq - count + cast(given.c.position, Integer()),
                given.c.event["type"].astext,
                given.c.event["data"],
            ).select_from(numbered.join(given, true())),
        )
        .returning(event.c.incident_id)
        .cte(f"{prefix}inserted")
    )
    # One row per event, one payload: PostgreSQL delivers it once per transaction.
    return inserted, func.pg_notify(EVENTS_CHANNEL, cast(inserted.c.incident_id, Text))


def _record_events_statement() -> Select[Any]:
    """Built once: every writer of an event runs it."""
    inserted, announced = recorded_events()
    return select(announced).select_from(inserted)


_RECORD_EVENTS = _record_events_statement()


async def lock_incident_of_message(session: AsyncSession, message_id: uuid.UUID) -> None:
    """Take the incident of an alert SMS (FOR NO KEY UPDATE) before touching the SMS.

    For writers that do not otherwise lock the incident (delivery receipts, the
    worker's record of a send): the event they record takes the incident's lock
    anyway, and taking it first keeps the one lock order (incident, then its alert
    SMS and alerts) that replies and cancels use. Other messages: nothing to lock.
    """
    await session.execute(_LOCK_INCIDENT_OF_MESSAGE, {"message_id": message_id})


# Built once: every recorded send and every delivery receipt runs it.
_LOCK_INCIDENT_OF_MESSAGE = (
    select(literal(1, Integer()))
    .select_from(Incident)
    .where(
        Incident.id
        == select(Message.incident_id)
        .where(Message.id == bindparam("message_id"), Message.purpose == "alert")
        .scalar_subquery()
    )
    .with_for_update(key_share=True)
)


async def lock_incidents_of_messages(
    session: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> None:
    """:func:`lock_incident_of_message` for several alert SMS at once: their incidents
    in id order (the order every writer of several incidents takes them in)."""
    await session.execute(_LOCK_INCIDENTS_OF_MESSAGES, {"message_ids": list(message_ids)})


_LOCK_INCIDENTS_OF_MESSAGES = (
    select(Incident.id)
    .where(
        Incident.id.in_(
            select(Message.incident_id).where(
                Message.id == func.any(bindparam("message_ids", type_=ARRAY(UUID(as_uuid=True)))),
                Message.purpose == "alert",
            )
        )
    )
    .order_by(Incident.id)
    .with_for_update(key_share=True)
)


async def events_after(
    session: AsyncSession, *, incident_id: uuid.UUID, after_seq: int, limit: int
) -> list[IncidentEvent]:
    """The incident's events numbered above ``after_seq``, in order (see the module docstring)."""
    rows = await session.execute(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident_id, IncidentEvent.seq > after_seq)
        .order_by(IncidentEvent.seq)
        .limit(limit)
    )
    return list(rows.scalars())


async def listen(
    database_url: str, channel: str, on_notify: Callable[[str], None], stopping: asyncio.Event
) -> None:
    """LISTEN on a dedicated connection until ``stopping``; reconnect when it is lost.

    ``on_notify`` gets each payload, and an empty payload after every (re)connect:
    whatever was announced while the connection was down must be looked up again.
    """
    while not stopping.is_set():
        connection: asyncpg.Connection | None = None
        try:
            connection = await asyncpg.connect(sync_url(database_url), timeout=10)
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
            await connection.add_listener(
                channel, lambda _connection, _pid, _channel, payload: on_notify(payload)
            )
            on_notify("")
            stop_wait = asyncio.ensure_future(stopping.wait())
            lost_wait = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                lost_wait.cancel()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("listener connection lost", channel=channel, error=type(exc).__name__)
        finally:
            if connection is not None and not connection.is_closed():
                with contextlib.suppress(Exception):
                    await connection.close()
        if not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)


class EventHub:
    """One LISTEN connection per process, fanned out to every SSE subscriber in it.

    A notification only says "incident X has new events"; subscribers read them
    from ``incident_event`` after the id they last sent, so nothing is lost when a
    notification is (or the connection was): after a reconnect every subscriber
    is woken to look again.
    """

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._subscribers: dict[str, set[asyncio.Event]] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            listen(self._database_url, EVENTS_CHANNEL, self._notified, self._stopping),
            name="event-hub",
        )

    async def stop(self) -> None:
        self._stopping.set()
        for waiters in self._subscribers.values():
            for waiter in waiters:
                waiter.set()
        if self._task is not None:
            await self._task

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def subscribe(self, incident_id: uuid.UUID | None) -> asyncio.Event:
        """Woken on each new event of the incident; ``None``: of any incident (a board)."""
        waiter = asyncio.Event()
        self._subscribers.setdefault(self._key(incident_id), set()).add(waiter)
        return waiter

    def unsubscribe(self, incident_id: uuid.UUID | None, waiter: asyncio.Event) -> None:
        key = self._key(incident_id)
        waiters = self._subscribers.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._subscribers[key]

    @staticmethod
    def _key(incident_id: uuid.UUID | None) -> str:
        return ANY_INCIDENT if incident_id is None else str(incident_id)

    def _notified(self, payload: str) -> None:
        if payload == "":
            targets = [waiter for waiters in self._subscribers.values() for waiter in waiters]
        else:
            targets = [
                *self._subscribers.get(payload, ()),
                *self._subscribers.get(ANY_INCIDENT, ()),
            ]
        for waiter in targets:
            waiter.set()
