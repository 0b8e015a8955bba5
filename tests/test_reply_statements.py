"""What one inbound reply costs in statements: the webhook's own share of a reply's CPU.

Each statement costs CPU beside its round trip (through SQLAlchemy ~0.3 ms; the
reply's own now run on the driver connection, docs/benchmarks.md), so the reply path
is held to what it needs: the sender,
locked, with their recent alerts in one read; only while the alert is open the
incident and the alert locked (with the incident's tally of roles and pending
alerts, which every decision of the reply reads), and the change with its event and
the inbound row with its answer in one statement; otherwise the inbound row alone.
No savepoint: a reply retries whole transactions. No timing is asserted: the
statements are counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.core.clock import FrozenClock
from app.core.db import transactions_of, unit_of_work
from app.core.models import Alert, Message, Volunteer
from dispatch.responses import InboundSms, handle_inbound_sms
from tests.factories import create_alert, create_incident, create_volunteer, make_settings
from tests.statements import with_session_queries
from tests.test_worker_statements import count_cache_keys


@contextmanager
def counted_statements(engine: AsyncEngine, words: int = 3) -> Iterator[list[str]]:
    """The first ``words`` of every statement sent while the block runs (BEGIN and
    COMMIT are the driver's own and not seen here: every transaction has one of each)."""
    sent: list[str] = []

    def record(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()[:words]))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        with with_session_queries(sent, words):
            yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def replied(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock, volunteer: Volunteer, body: str
) -> str:
    return await handle_inbound_sms(
        transactions_of(factory),
        sms=InboundSms(f"SM{body.replace(' ', '')}{volunteer.id.hex}", volunteer.phone or "", body),
        now=clock.now(),
        settings=make_settings(),
    )


async def test_a_no_a_yes_and_a_reply_to_an_ended_alert_take_only_the_statements_they_need(
    factory: async_sessionmaker[AsyncSession], committed_engine: AsyncEngine, clock: FrozenClock
) -> None:
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now())
        people = [await create_volunteer(session, language="en") for _ in range(3)]
        alerts = [
            await create_alert(session, incident=incident, volunteer=person, now=clock.now())
            for person in people
        ]
    # Warm: the first reply of a connection prepares its statements.
    await replied(factory, clock, people[0], f"NO {alerts[0].code}")

    with counted_statements(committed_engine) as declining:
        answer = await replied(factory, clock, people[1], f"NO {alerts[1].code}")
    assert "Thank you" in answer
    with counted_statements(committed_engine) as accepting:
        answer = await replied(factory, clock, people[2], f"YES {alerts[2].code}")
    assert "CPR" in answer
    with counted_statements(committed_engine) as too_late:
        answer = await replied(factory, clock, people[1], f"YES {alerts[1].code}")
    assert "ended" in answer

    assert declining == [
        "SELECT volunteer.id, volunteer.language,",  # the sender, locked, and their recent alerts
        "SELECT incident.id, incident.centre,",  # the incident, locked
        "SELECT alert.id, alert.incident_id,",  # the alert, locked, with the incident's tally
        "WITH changed AS",  # the change with its event and the SMS with its answer
    ]
    assert accepting == [
        "SELECT volunteer.id, volunteer.language,",
        "SELECT incident.id, incident.centre,",
        "SELECT alert.id, alert.incident_id,",  # the role is chosen by the tally
        "WITH changed AS",  # where to go is read from the incident as locked
    ]
    assert too_late == ["SELECT volunteer.id, volunteer.language,", "INSERT INTO message"]


async def test_a_stand_down_builds_no_statement_of_its_own(
    factory: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The YES that fills an incident's last slot stands the rest down under the
    # incident's lock: its statements are built once, at import, like the worker's.
    scenes = []
    for _ in range(2):
        async with unit_of_work(factory) as session:
            incident = await create_incident(session, created_at=clock.now(), cpr_slots=1)
            people = [await create_volunteer(session, language="en") for _ in range(2)]
            for person in people:
                await create_alert(
                    session, incident=incident, volunteer=person, now=clock.now(), sms_status="sent"
                )
            scenes.append(people)
    computed = count_cache_keys(monkeypatch)
    built = []
    for responder, stood_down in scenes:
        async with factory() as session:
            code = (
                await session.execute(select(Alert.code).where(Alert.volunteer_id == responder.id))
            ).scalar_one()
        computed[0] = 0
        with counted_statements(factory.kw["bind"], words=5) as sent:
            answer = await replied(factory, clock, responder, f"YES {code}")
        built.append(computed[0])
        assert "CPR" in answer
        # What it sets, and only that (a parameter named as a column is SET too).
        assert "UPDATE alert SET stood_down_at=$1::TIMESTAMP WITH" in sent
        async with factory() as session:
            texts = (
                await session.execute(
                    select(Message.purpose).where(
                        Message.volunteer_id == stood_down.id, Message.direction == "out"
                    )
                )
            ).scalars()
            assert "stand_down" in list(texts)

    # None: no savepoint either (its SAVEPOINT and RELEASE clauses were built per
    # transaction), since a reply retries whole transactions.
    assert built[1] == 0, f"cache keys computed for the second stand-down: {built}"


async def test_a_changing_reply_leaves_nothing_for_the_commit_to_flush(
    factory: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    # The change's own statement writes the alert; the commit's flush would find
    # nothing to write yet run the whole unit of work (a tenth of a NO's CPU).
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now(), cpr_slots=3)
        people = [await create_volunteer(session, language="en") for _ in range(2)]
        alerts = [
            await create_alert(session, incident=incident, volunteer=person, now=clock.now())
            for person in people
        ]
    flushed: list[list[str]] = []

    def record(session: Session, *args: Any) -> None:
        flushed.append([type(instance).__name__ for instance in session.dirty])

    event.listen(Session, "before_flush", record)
    try:
        assert "Thank you" in await replied(factory, clock, people[0], f"NO {alerts[0].code}")
        assert "CPR" in await replied(factory, clock, people[1], f"YES {alerts[1].code}")
    finally:
        event.remove(Session, "before_flush", record)
    assert flushed == []
    async with factory() as session:
        stored = {
            alert.id: (alert.response, alert.role)
            for alert in (await session.execute(select(Alert))).scalars()
        }
    assert stored == {alerts[0].id: ("declined", None), alerts[1].id: ("accepted", "cpr")}
