"""Incident events: an append-only log in the database, announced with NOTIFY.

Each change to an incident or one of its alerts appends an ``incident_event`` row in
the same transaction as the change; its id is the SSE event id, so a client that
reconnects with ``Last-Event-ID`` replays exactly what it missed, and every API
process learns of it through ``LISTEN responder_events`` whichever process wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy import Text, cast, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import sync_url
from app.core.models import IncidentEvent

log = structlog.get_logger(__name__)

EVENTS_CHANNEL = "responder_events"
ANY_INCIDENT = "*"


async def record_event(
    session: AsyncSession, *, incident_id: uuid.UUID, type: str, data: dict[str, Any]
) -> None:
    """Append one event; listeners are notified when the transaction commits.

    One round trip: the insert and its ``pg_notify`` are one statement.
    """
    inserted = (
        insert(IncidentEvent)
        .values(incident_id=incident_id, type=type, data=data)
        .returning(IncidentEvent.incident_id)
        .cte("inserted")
    )
    await session.execute(
        select(func.pg_notify(EVENTS_CHANNEL, cast(inserted.c.incident_id, Text))).select_from(
            inserted
        )
    )


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
