"""Replies, cancels, timers and the worker racing on one incident (issue 11, points 3, 5).

Each test opens its transactions by hand on separate connections and lets the
other party run while one is open, waiting on conditions the database reports
(a backend waiting for a lock, a request at the fake provider), never on time:

- a stand-down or a cancel committed while the volunteer's alert is being claimed
  or sent: the volunteer gets no alert, or the alert and then the stand-down;
- the timer pass and a reply or cancel on the same incident: no deadlock, the YES
  stands;
- a reply that the database picks as a deadlock victim is tried again, and one
  that still cannot be applied is answered "reply again", never an error.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import texts
from app.core.clock import FrozenClock
from app.core.db import transactions_of, unit_of_work
from app.core.models import Alert, Incident, Message, Volunteer
from dispatch import responses
from dispatch.lifecycle import cancel_incident, run_timers
from dispatch.responses import InboundSms, handle_inbound_sms
from tests.factories import create_alert, create_incident, create_volunteer, savepoints
from tests.twilio_fake import Behaviour, FakeTwilio
from tests.worker_harness import Harness

WAIT_S = 30.0


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll a condition the database or the fake reports, with a generous timeout."""
    async with asyncio.timeout(WAIT_S):
        while not await condition():
            await asyncio.sleep(0.01)
    assert await condition(), what


async def lock_waiters(harness: Harness) -> int:
    """Backends of this database waiting for a row or transaction lock right now."""
    async with harness.engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        )


@dataclass
class Person:
    volunteer: Volunteer
    alert: Alert

    @property
    def phone(self) -> str:
        return self.volunteer.phone or ""


async def scene(
    harness: Harness, *, sms_statuses: list[str], created_at: datetime | None = None
) -> tuple[Incident, list[Person]]:
    """One CPR slot, no AED; one alerted volunteer per SMS status given."""
    async with unit_of_work(harness.factory) as session:
        when = created_at or harness.clock.now()
        incident = await create_incident(session, created_at=when, cpr_slots=1)
        people = []
        for status in sms_statuses:
            volunteer = await create_volunteer(session, language="en")
            alert = await create_alert(
                session, incident=incident, volunteer=volunteer, now=when, sms_status=status
            )
            people.append(Person(volunteer, alert))
        return incident, people


async def reply(
    session: AsyncSession, harness: Harness, person: Person, body: str, **options: int
) -> str:
    return await handle_inbound_sms(
        savepoints(session),
        sms=InboundSms(f"SM{uuid.uuid4().hex}", person.phone, body),
        now=harness.clock.now(),
        settings=harness.settings,
        **options,
    )


def texts_to(fake: FakeTwilio, person: Person) -> list[str]:
    return [
        request.form["Body"] for request in fake.messages() if request.form["To"] == person.phone
    ]


async def fill_last_slot(session: AsyncSession, harness: Harness, incident: Incident) -> None:
    """The second volunteer's YES takes the only slot and stands the first down."""
    async with harness.factory() as lookup:
        volunteer_id, code = (
            await lookup.execute(
                select(Alert.volunteer_id, Alert.code).where(
                    Alert.incident_id == incident.id, Alert.delivery_status == "sent"
                )
            )
        ).one()
        phone = (await lookup.get_one(Volunteer, volunteer_id)).phone or ""
    # With its code: a bare YES that would stand others down only asks for the code
    # (the sender trust model in docs/reliability.md).
    await handle_inbound_sms(
        savepoints(session),
        sms=InboundSms(f"SM{uuid.uuid4().hex}", phone, f"YES {code}"),
        now=harness.clock.now(),
        settings=harness.settings,
    )


async def cancel(session: AsyncSession, harness: Harness, incident: Incident) -> None:
    await cancel_incident(
        session, incident_id=incident.id, centre=None, reason=None, now=harness.clock.now()
    )


ENDINGS = {"the reply that fills the last slot": fill_last_slot, "a cancel": cancel}


@pytest.mark.parametrize("ending", ENDINGS.values(), ids=ENDINGS.keys())
async def test_an_ending_committed_while_the_alert_is_claimed_leaves_no_lone_alert(
    harness: Harness,
    fake_twilio: FakeTwilio,
    ending: Callable[[AsyncSession, Harness, Incident], Awaitable[None]],
) -> None:
    """The reproduction: the ending's transaction is open while the worker claims."""
    incident, [queued, _] = await scene(harness, sms_statuses=["queued", "sent"])
    worker = harness.worker()
    async with harness.factory() as session, session.begin():
        await ending(session, harness, incident)
        sending = asyncio.create_task(worker.send_due())

        async def claimed_or_sent() -> bool:
            return sending.done() or fake_twilio.arrivals > 0

        await until(claimed_or_sent, "the worker's pass ran while the ending was open")
    await sending
    while await worker.send_due():
        pass
    await worker.gateway.close()

    got = texts_to(fake_twilio, queued)
    assert got == [] or (len(got) == 2 and got[0].startswith("CPR ALERT")), got


@pytest.mark.parametrize("ending", ENDINGS.values(), ids=ENDINGS.keys())
async def test_an_ending_committed_while_the_alert_is_on_the_wire_follows_the_alert(
    harness: Harness,
    fake_twilio: FakeTwilio,
    ending: Callable[[AsyncSession, Harness, Incident], Awaitable[None]],
) -> None:
    incident, [queued, _] = await scene(harness, sms_statuses=["queued", "sent"])
    answer = threading.Event()
    fake_twilio.script(Behaviour(hold=answer))
    worker = harness.worker()
    sending = asyncio.create_task(worker.send_due())
    try:
        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 1)
        async with unit_of_work(harness.factory) as session:
            await ending(session, harness, incident)
        await asyncio.gather(*await worker.fill_slots())
        assert texts_to(fake_twilio, queued) == [], "nothing overtakes the alert on the wire"
    finally:
        answer.set()
    assert await sending == 1
    assert await worker.send_due() == 1
    await worker.gateway.close()

    alert_text, ending_text = texts_to(fake_twilio, queued)
    assert alert_text.startswith("CPR ALERT")
    code = queued.alert.code
    assert ending_text in (
        texts.stand_down_text("en", code=code),
        texts.cancellation_text("en", code=code),
    )


@pytest.mark.parametrize("action", ["YES", "cancel"])
async def test_the_timer_pass_and_a_reply_or_cancel_on_one_incident_both_complete(
    harness: Harness, clock: FrozenClock, action: str
) -> None:
    """The reproduction: A1 and A2 of one incident, A3 of an older one, all past the
    reply window; a NO to A3 is open while the timer pass runs; then V2's YES (or a
    cancel) takes A2's incident and stands A1 down; then the NO commits. Before,
    the pass held A1 while it waited for A3, and the YES's stand-down waited for A1:
    a deadlock, and the YES was lost."""
    older, newer = clock.now() - timedelta(minutes=12), clock.now() - timedelta(minutes=11)
    async with unit_of_work(harness.factory) as session:
        incident = await create_incident(session, created_at=newer, cpr_slots=1)
        other = await create_incident(session, created_at=older)
        v1, v2, v3 = [await create_volunteer(session, language="en") for _ in range(3)]
        a1 = await create_alert(
            session, incident=incident, volunteer=v1, now=newer, sms_status="sent"
        )
        a3 = await create_alert(session, incident=other, volunteer=v3, now=older, sms_status="sent")
        a2 = await create_alert(
            session, incident=incident, volunteer=v2, now=newer, sms_status="sent"
        )

    async def waiting(count: int) -> Callable[[], Awaitable[bool]]:
        async def enough() -> bool:
            return await lock_waiters(harness) >= count

        return enough

    async def act() -> str:
        async with unit_of_work(harness.factory) as session:
            if action == "YES":
                return await reply(session, harness, Person(v2, a2), f"YES {a2.code}")
            await cancel(session, harness, incident)
            return ""

    async with harness.factory() as holding, holding.begin():
        await reply(holding, harness, Person(v3, a3), "NO")
        timers = asyncio.create_task(
            run_timers(harness.factory, now=clock.now(), settings=harness.settings)
        )
        await until(await waiting(1), "the timer pass waits for the NO")
        acting = asyncio.create_task(act())
        two_waiting = await waiting(2)

        async def acted_or_waiting() -> bool:
            return acting.done() or await two_waiting()

        await until(acted_or_waiting, "the reply or cancel ran or waits")
    await timers
    answer = await acting

    async with harness.factory() as session:
        accepted = await session.get_one(Alert, a2.id)
        stood_down = await session.get_one(Alert, a1.id)
        declined = await session.get_one(Alert, a3.id)
        ended = await session.get_one(Incident, incident.id)
    assert declined.response == "declined"
    if action == "YES":
        assert (accepted.response, accepted.role) == ("accepted", "cpr")
        assert "CPR" in answer
        assert stood_down.stood_down_at is not None
    else:
        assert ended.status == "cancelled"
        assert accepted.cancelled_at is not None


@pytest.mark.parametrize(("attempts", "applied"), [(3, True), (1, False)])
async def test_a_reply_picked_as_deadlock_victim_is_tried_again_or_asked_for_again(
    harness: Harness, attempts: int, applied: bool
) -> None:
    """A real deadlock that the reply closes (so the database aborts the reply)."""
    incident, [person] = await scene(harness, sms_statuses=["sent"])

    async with (
        harness.engine.connect() as incident_holder,
        harness.engine.connect() as alert_holder,
    ):
        for holder in (incident_holder, alert_holder):
            await holder.begin()
            await holder.execute(text("SET LOCAL deadlock_timeout = '60s'"))
        await incident_holder.execute(
            select(Incident.id).where(Incident.id == incident.id).with_for_update(key_share=True)
        )
        await alert_holder.execute(
            select(Alert.id).where(Alert.id == person.alert.id).with_for_update()
        )

        async def answer() -> str:
            # Each attempt a transaction of its own, as the webhook's are.
            return await handle_inbound_sms(
                transactions_of(harness.factory),
                sms=InboundSms(f"SM{uuid.uuid4().hex}", person.phone, f"YES {person.alert.code}"),
                now=harness.clock.now(),
                settings=harness.settings,
                attempts=attempts,
            )

        async def waiters(count: int) -> bool:
            return await lock_waiters(harness) >= count

        replying = asyncio.create_task(answer())
        await until(lambda: waiters(1), "the reply waits for the incident")
        taking_volunteer = asyncio.create_task(
            alert_holder.execute(
                select(Volunteer.id).where(Volunteer.id == person.volunteer.id).with_for_update()
            )
        )
        await until(lambda: waiters(2), "the other waits for the reply's volunteer")
        await incident_holder.rollback()

        async def victim_let_go() -> bool:
            return taking_volunteer.done()

        await until(victim_let_go, "the database aborted the reply's attempt")
        await taking_volunteer
        await alert_holder.rollback()
        answered = await replying

    async with harness.factory() as session:
        alert = await session.get_one(Alert, person.alert.id)
        stored = (
            await session.execute(select(Message.reply_body).where(Message.direction == "in"))
        ).scalar_one()
    assert stored == answered
    if applied:
        assert (alert.response, alert.role) == ("accepted", "cpr")
        assert "CPR" in answered
    else:
        assert alert.response == "pending"
        assert answered == texts.reply_not_recorded_text()


async def test_a_finished_alert_sms_claims_again_for_the_stand_down_waiting_behind_it(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    # The claim after the stand-down was committed found it behind its alert and the
    # queue otherwise empty; the alert's end must still let it go.
    incident, [queued, _] = await scene(harness, sms_statuses=["queued", "sent"])
    answer = threading.Event()
    fake_twilio.script(Behaviour(hold=answer))
    worker = harness.worker()
    sending = asyncio.create_task(worker.send_due())
    try:
        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 1)
        async with unit_of_work(harness.factory) as session:
            await fill_last_slot(session, harness, incident)
        assert await asyncio.gather(*await worker.fill_slots()) == []
        assert not worker.claim_wanted
    finally:
        answer.set()
    assert await sending == 1

    assert worker.claim_wanted
    assert await worker.send_due() == 1
    await worker.gateway.close()
    assert texts_to(fake_twilio, queued)[1] == texts.stand_down_text("en", code=queued.alert.code)


class Deadlocked(Exception):
    sqlstate = "40P01"


async def test_a_reply_aborted_after_it_changed_its_alert_is_tried_again_on_what_it_reads_afresh(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database may abort a reply after it wrote its change: the transaction's rollback
    # expires what the attempt changed (the alert, the volunteer), and the next attempt
    # must read them again rather than touch what it holds (no implicit IO under asyncio).
    incident, [person] = await scene(harness, sms_statuses=["sent"])
    aborted = []
    stored_with_event = responses._store_with_event

    async def aborts_once(*args: Any, **kwargs: Any) -> None:
        await stored_with_event(*args, **kwargs)
        if not aborted:
            aborted.append(True)
            raise DBAPIError("WITH changed AS …", None, Deadlocked())

    monkeypatch.setattr(responses, "_store_with_event", aborts_once)
    answered = await handle_inbound_sms(
        transactions_of(harness.factory),
        sms=InboundSms(f"SM{uuid.uuid4().hex}", person.phone, f"YES {person.alert.code}"),
        now=harness.clock.now(),
        settings=harness.settings,
    )

    assert aborted
    assert "CPR" in answered
    alert = await harness.reload(person.alert)
    assert (alert.response, alert.role) == ("accepted", "cpr")
