"""Behaviour that needs real commits: the event stream across processes, racing replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.routers.incident_actions import incident_event_stream
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, transactions_of, unit_of_work
from app.core.models import Alert, IncidentEvent, Message
from dispatch.events import EventHub, record_event
from dispatch.responses import InboundSms, handle_inbound_sms
from tests.factories import create_alert, create_incident, create_volunteer, make_settings


async def next_event(stream: AsyncIterator[str]) -> dict[str, object]:
    """The next real event (comments and retry hints skipped), within a timeout."""
    while True:
        chunk = await asyncio.wait_for(anext(stream), 10)
        if chunk.startswith("id: "):
            lines = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
            return {"id": int(lines["id"]), "event": lines["event"], **json.loads(lines["data"])}


async def test_stream_replays_after_last_event_id_then_follows_changes_from_any_process(
    committed_db: str, factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now())
        for number in range(3):
            await record_event(session, incident_id=incident.id, type="test", data={"n": number})
    hub = EventHub(committed_db)
    hub.start()
    other_process = create_engine(committed_db, pool_size=1)
    try:
        stream = incident_event_stream(factory, incident_id=incident.id, after_seq=0, hub=hub)
        first = await next_event(stream)
        stream = incident_event_stream(
            factory, incident_id=incident.id, after_seq=int(str(first["id"])), hub=hub
        )
        replayed = [await next_event(stream), await next_event(stream)]
        assert [event["n"] for event in replayed] == [1, 2]

        pending = asyncio.ensure_future(next_event(stream))
        async with unit_of_work(create_session_factory(other_process)) as session:
            await record_event(session, incident_id=incident.id, type="live", data={"n": 3})
        live = await pending
        assert (live["event"], live["n"]) == ("live", 3)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await hub.stop()
        await other_process.dispose()


async def test_two_simultaneous_yes_never_take_one_slot(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    settings = make_settings()
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now(), cpr_slots=1)
        people = [await create_volunteer(session, language="en") for _ in range(6)]
        alerts = [
            await create_alert(session, incident=incident, volunteer=person, now=clock.now())
            for person in people
        ]

    async def yes(index: int) -> str:
        return await handle_inbound_sms(
            transactions_of(factory),
            sms=InboundSms(
                f"SM{index:032d}", people[index].phone or "", f"YES {alerts[index].code}"
            ),
            now=clock.now(),
            settings=settings,
        )

    await asyncio.gather(*(yes(index) for index in range(6)))

    async with factory() as session:
        roles = (
            await session.execute(
                select(Alert.role).where(Alert.id.in_([alert.id for alert in alerts]))
            )
        ).scalars()
        assert sorted(role or "-" for role in roles) == ["-"] * 5 + ["cpr"]


async def test_one_sms_delivered_twice_at_once_is_applied_and_stored_once(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    # The inbound row is written last, with its answer: the second copy's insert waits
    # for the first's transaction, finds the row, and rolls back what it did.
    settings = make_settings()
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now())
        volunteer = await create_volunteer(session, language="en")
        alert = await create_alert(session, incident=incident, volunteer=volunteer, now=clock.now())
    sms = InboundSms("SM" + "7" * 32, volunteer.phone or "", f"YES {alert.code}")

    async def deliver() -> str:
        return await handle_inbound_sms(
            transactions_of(factory), sms=sms, now=clock.now(), settings=settings
        )

    first, second = await asyncio.gather(deliver(), deliver())

    assert first == second
    async with factory() as session:
        stored = (
            await session.execute(select(Message.reply_body).where(Message.direction == "in"))
        ).scalars()
        accepted = (
            await session.execute(
                select(IncidentEvent.type).where(
                    IncidentEvent.incident_id == incident.id, IncidentEvent.type == "alert.accepted"
                )
            )
        ).scalars()
        assert list(stored) == [first]
        assert list(accepted) == ["alert.accepted"]
