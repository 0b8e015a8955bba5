"""The event stream never skips an event, whatever order its writers commit in.

Two transactions write events of one incident: a delivery receipt (which, before
the fix, took no incident lock) and a volunteer's YES. The receipt's event is
written first and left uncommitted; the YES runs meanwhile. Before the fix the YES
committed at once, a reader saw it, resumed after its id, and never got the
receipt's event, which committed later with a lower id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import IncidentEvent
from dispatch.delivery import advance_message
from dispatch.events import events_after
from dispatch.responses import InboundSms, handle_inbound_sms
from tests.factories import create_alert, create_incident, create_volunteer, make_settings

WAIT_S = 10.0


@pytest.fixture
async def committed_engine(committed_db: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(committed_db, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
def factory(committed_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(committed_engine)


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
    factory: async_sessionmaker[AsyncSession], pid: int, task: asyncio.Task[str]
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


async def test_a_reader_resuming_after_the_later_commit_still_gets_the_earlier_event(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings()
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

    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def yes() -> str:
        async with unit_of_work(factory) as session:
            pid.set_result((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            return await handle_inbound_sms(
                session,
                sms=InboundSms("SM" + "1" * 32, replier.phone or "", "YES"),
                now=clock.now(),
                settings=settings,
            )

    reply = asyncio.create_task(yes())
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
