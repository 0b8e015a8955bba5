"""Two transactions on one incident, interleaved deterministically on two connections.

The event stream never skips an event, whatever order its writers commit in: a
delivery receipt (which, before the fix, took no incident lock) writes its event
first and stays uncommitted while a volunteer's YES runs. Before the fix the YES
committed at once, a reader saw it, resumed after its id, and never got the
receipt's event, which committed later with a lower id.

A receipt takes the incident before the alert SMS, as a reply standing volunteers
down does: both complete (with the SMS row first, they deadlocked).

A reply decides on the alert as locked: a stand-down committed while the reply
waited for the incident's lock is seen (before the fix, the alert object the reply
had read before waiting was used, and a stood-down volunteer got a role).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import texts
from app.core.clock import FrozenClock
from app.core.db import unit_of_work
from app.core.models import Alert, Incident, IncidentEvent, Message, Volunteer
from app.registry.audit import VolunteerSelf
from app.registry.volunteers import erase_volunteer
from dispatch.delivery import advance_message
from dispatch.events import events_after
from dispatch.responses import InboundSms, handle_inbound_sms
from dispatch.roles import lock_incident, stand_down_pending
from tests.factories import (
    create_alert,
    create_incident,
    create_volunteer,
    make_settings,
    savepoints,
)

WAIT_S = 10.0


async def read_after(
    factory: async_sessionmaker[AsyncSession], incident_id: object, after_seq: int
) -> list[IncidentEvent]:
    """What a stream (or a replay with ``Last-Event-ID: after_seq``) reads now."""
    async with factory() as session:
        return await events_after(
            session,
            incident_id=incident_id,  # type: ignore[arg-type]
            after_seq=after_seq,
            limit=500,
        )


async def blocked_or_done(
    factory: async_sessionmaker[AsyncSession], pid: int, task: asyncio.Task[Any]
) -> None:
    """Until the backend ``pid`` waits on a lock, or the task finished without waiting."""
    async with asyncio.timeout(WAIT_S):
        while not task.done():
            async with factory() as session:
                waiting = (
                    await session.execute(
                        text(
                            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"
                        ),
                        {"pid": pid},
                    )
                ).scalar_one_or_none()
            if waiting:
                return
            await asyncio.sleep(0.01)


T = TypeVar("T")


def start_in_transaction(
    factory: async_sessionmaker[AsyncSession], work: Callable[[AsyncSession], Awaitable[T]]
) -> tuple[asyncio.Future[int], asyncio.Task[T]]:
    """``work`` in its own transaction, started now: its backend's pid, and its result."""
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def run() -> T:
        async with unit_of_work(factory) as session:
            pid.set_result((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            return await work(session)

    return pid, asyncio.create_task(run())


def start_yes(
    factory: async_sessionmaker[AsyncSession], phone: str, clock: FrozenClock
) -> tuple[asyncio.Future[int], asyncio.Task[str]]:
    """A YES from ``phone`` in its own transaction: its backend's pid, and its answer."""
    return start_in_transaction(
        factory,
        lambda session: handle_inbound_sms(
            savepoints(session),
            sms=InboundSms(f"SM{phone}", phone, "YES"),
            now=clock.now(),
            settings=make_settings(),
        ),
    )


async def one_pending_alert(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> tuple[Incident, Volunteer, Alert]:
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now())
        volunteer = await create_volunteer(session, language="en")
        alert = await create_alert(session, incident=incident, volunteer=volunteer, now=clock.now())
    return incident, volunteer, alert


@contextlib.asynccontextmanager
async def holding_incident(
    factory: async_sessionmaker[AsyncSession], incident_id: uuid.UUID
) -> AsyncIterator[tuple[AsyncSession, Incident]]:
    """A transaction holding the incident's row lock, as a reply or a cancel does;
    committed when the block ends."""
    async with factory() as session, session.begin():
        locked = await lock_incident(session, incident_id)
        assert locked is not None
        yield session, locked


async def test_a_reader_resuming_after_the_later_commit_still_gets_the_earlier_event(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now())
        receiver = await create_volunteer(session, language="en")
        replier = await create_volunteer(session, language="en")
        received = await create_alert(
            session, incident=incident, volunteer=receiver, now=clock.now()
        )
        await create_alert(session, incident=incident, volunteer=replier, now=clock.now())
        receipt_message = (
            await session.execute(
                text("SELECT id FROM message WHERE alert_id = :alert_id"),
                {"alert_id": received.id},
            )
        ).scalar_one()
    before = await read_after(factory, incident.id, 0)
    seen = max((event.seq for event in before), default=0)

    receipt = factory()
    await receipt.begin()
    await advance_message(
        session=receipt, message_id=receipt_message, status="sent", now=clock.now()
    )

    pid, reply = start_yes(factory, replier.phone or "", clock)
    try:
        await blocked_or_done(factory, await pid, reply)
        first_read = await read_after(factory, incident.id, seen)
        resume_from = max((event.seq for event in first_read), default=seen)
        await receipt.commit()
    finally:
        await receipt.close()
    await asyncio.wait_for(reply, WAIT_S)
    replay = await read_after(factory, incident.id, resume_from)

    delivered = [event.type for event in first_read + replay]
    assert delivered == ["alert.delivery", "alert.accepted"]
    everything = await read_after(factory, incident.id, 0)
    assert [event.seq for event in everything] == list(range(1, len(everything) + 1))
    assert [event.type for event in everything][-2:] == delivered


async def test_a_stand_down_committed_while_a_yes_waits_for_the_lock_is_seen_by_the_yes(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    incident, volunteer, alert = await one_pending_alert(factory, clock)

    async with holding_incident(factory, incident.id) as (standing_down, locked):
        await stand_down_pending(standing_down, incident=locked, now=clock.now())
        pid, reply = start_yes(factory, volunteer.phone or "", clock)
        await blocked_or_done(factory, await pid, reply)
    answer = await asyncio.wait_for(reply, WAIT_S)

    assert answer == "This alert has ended. Do not go. Thank you for answering."
    async with factory() as session:
        after = await session.get(Alert, alert.id)
        assert after is not None
        assert (after.response, after.role) == ("pending", None)


async def test_a_receipt_and_a_stand_down_on_one_incident_both_complete(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    incident, _, alert = await one_pending_alert(factory, clock)
    async with unit_of_work(factory) as session:
        alert_sms = (
            await session.execute(
                # As a worker's claim leaves it: the request is on its way.
                text(
                    "UPDATE message SET status = 'sending' WHERE alert_id = :alert_id RETURNING id"
                ),
                {"alert_id": alert.id},
            )
        ).scalar_one()

    async with holding_incident(factory, incident.id) as (standing_down, locked):
        pid, receipt = start_in_transaction(
            factory,
            lambda session: advance_message(
                session, message_id=alert_sms, status="sent", now=clock.now()
            ),
        )
        await blocked_or_done(factory, await pid, receipt)
        # Locks the alert SMS rows of the pending alerts: a receipt that held one while
        # waiting for the incident would make this a deadlock.
        assert await stand_down_pending(standing_down, incident=locked, now=clock.now()) == 1

    assert await asyncio.wait_for(receipt, WAIT_S) is True
    async with factory() as session:
        after = await session.get(Alert, alert.id)
        assert after is not None
        assert (after.delivery_status, after.stood_down_at is not None) == ("sent", True)
        told = await session.execute(
            text("SELECT count(*) FROM message WHERE alert_id = :id AND purpose = 'stand_down'"),
            {"id": alert.id},
        )
        assert told.scalar_one() == 1


async def test_an_erasure_waits_for_a_reply_that_changes_nothing_and_scrubs_its_number_too(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    # A reply that changes nothing (a HELP) locks its sender as every reply does.
    # Before, it read the sender unlocked, so an erasure committing before the reply's
    # inbound row left that row holding the erased volunteer's number.
    async with unit_of_work(factory) as session:
        volunteer = await create_volunteer(session, language="en")
    phone = volunteer.phone or ""
    async with factory() as holder:
        # The same MessageSid, uncommitted: the reply's insert waits for it.
        await holder.execute(
            text(
                "INSERT INTO message (id, direction, purpose, status, provider_sid)"
                " VALUES (gen_random_uuid(), 'in', 'reply', 'received', 'SMheld')"
            )
        )
        reply_pid, replying = start_in_transaction(
            factory,
            lambda session: handle_inbound_sms(
                savepoints(session),
                sms=InboundSms("SMheld", phone, "HELP"),
                now=clock.now(),
                settings=make_settings(),
            ),
        )
        await blocked_or_done(factory, await reply_pid, replying)
        erase_pid, erasing = start_in_transaction(
            factory,
            lambda session: erase_volunteer(
                session,
                volunteer_id=volunteer.id,
                actor=VolunteerSelf(volunteer.id),
                now=clock.now(),
            ),
        )
        await blocked_or_done(factory, await erase_pid, erasing)
        await holder.rollback()
    assert await replying == texts.help_text("en")
    await erasing

    async with factory() as session:
        numbers = (
            await session.execute(select(Message.phone).where(Message.phone == phone))
        ).scalars()
        assert list(numbers) == []
