"""Alerts first, and no duplicate outside the documented window (issue 11, points 1-2).

The worker is a pipeline of ``SEND_CONCURRENCY`` slots, claiming in priority order,
with bulk traffic bounded to a share of the slots and to ``REMINDER_HOURS``; a
message is claimed only when a slot is free, so its lease starts when it is sent.
Each test drives a real worker (the real Twilio client) against the fake provider,
holding requests with its controls and moving the injected clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

from app.core.clock import FrozenClock
from app.core.db import unit_of_work
from app.registry.certifications import queue_certification_reminders
from tests.factories import create_volunteer
from tests.twilio_fake import Behaviour, FakeTwilio
from tests.worker_harness import Harness, message_id_of, wait_listening


async def test_an_alert_overtakes_200_reminders_while_the_provider_hangs(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await harness.texts("cert_reminder", 200)
    hanging = threading.Event()
    fake_twilio.script(Behaviour(hold=hanging), Behaviour(hold=hanging))
    worker = harness.worker(
        overrides={"send_concurrency": 4, "send_bulk_share": 0.5}, poll_interval_s=3600.0
    )
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.to_thread(wait_listening, worker)
        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 2)
        [alert] = await harness.alerts()
        [first] = await asyncio.to_thread(fake_twilio.wait_for, 1)
        assert message_id_of(first) == str((await harness.message_for(alert)).id)
        assert fake_twilio.arrivals == 3, "bulk holds at most its share of the slots"
        assert not hanging.is_set(), "the alert did not wait for the hanging sends"
    finally:
        hanging.set()
        worker.stop()
        await running
        await worker.gateway.close()


async def test_an_alert_takes_a_reserved_slot_while_updates_hang_on_every_other(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """Urgent non-alert traffic (updates, stand-downs) never holds every slot."""
    await harness.texts("update", 200)
    hanging = threading.Event()
    fake_twilio.script(*(Behaviour(hold=hanging) for _ in range(3)))
    # No send times out during the test: a timeout would free a slot by itself.
    worker = harness.worker(
        overrides={"send_concurrency": 4, "send_alert_reserve": 0.25, "send_timeout_s": 60},
        poll_interval_s=3600.0,
    )
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.to_thread(wait_listening, worker)
        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 3)
        [alert] = await harness.alerts()
        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 4)
        [first] = await asyncio.to_thread(fake_twilio.wait_for, 1)
        assert message_id_of(first) == str((await harness.message_for(alert)).id)
        assert not hanging.is_set(), "the alert did not wait for the hanging updates"
    finally:
        hanging.set()
        worker.stop()
        await running
        await worker.gateway.close()


async def test_a_claim_takes_alerts_then_instructions_then_the_rest_then_bulk(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await harness.texts("cert_reminder", 1)
    await harness.texts("thanks", 1)
    await harness.texts("update", 1)
    await harness.alerts()
    worker = harness.worker(overrides={"send_concurrency": 1})
    for _ in range(4):
        assert await worker.send_due() == 1
    await worker.gateway.close()

    bodies = [request.form["Body"] for request in fake_twilio.messages()]
    assert bodies[0].startswith("CPR ALERT")
    assert bodies[1:] == ["update text", "thanks text", "cert_reminder text"]


async def test_renewal_reminders_are_queued_and_sent_only_in_the_daytime(
    harness: Harness, fake_twilio: FakeTwilio, clock: FrozenClock
) -> None:
    evening = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)  # 19:00 in Stockholm
    clock.set(evening)
    async with unit_of_work(harness.factory) as session:
        await create_volunteer(session, expires_on=clock.now().date() + timedelta(days=10))
        assert (
            await queue_certification_reminders(session, now=clock.now(), settings=harness.settings)
            == 0
        )
    clock.set(evening - timedelta(minutes=1))
    async with unit_of_work(harness.factory) as session:
        assert (
            await queue_certification_reminders(session, now=clock.now(), settings=harness.settings)
            == 1
        )
    clock.set(evening)
    worker = harness.worker()
    assert await worker.send_due() == 0, "not sent after 19:00, though queued before"
    clock.set(evening + timedelta(hours=15))  # 10:00 the next morning
    assert await worker.send_due() == 1
    await worker.gateway.close()
    assert len(fake_twilio.messages()) == 1


async def test_a_second_worker_never_reclaims_what_a_slow_first_worker_is_about_to_send(
    harness: Harness, fake_twilio: FakeTwilio, clock: FrozenClock
) -> None:
    """The reproduction: one slot, four alerts, each answered after 9.5 s, 30 s leases.

    A worker that claimed all four at once sent the fourth at 28.5 s; its lease ran
    out at 30 s while the request was on the wire and a second worker sent it again.
    """
    alerts = await harness.alerts(4)
    answers = [threading.Event() for _ in alerts]
    fake_twilio.script(*(Behaviour(hold=answer) for answer in answers))
    first = harness.worker(overrides={"send_concurrency": 1}, poll_interval_s=0.05)
    second = harness.worker(overrides={"send_concurrency": 1})
    running = asyncio.create_task(first.run())
    try:
        for number, answer in enumerate(answers[:3], start=1):
            await asyncio.to_thread(fake_twilio.wait_for_arrivals, number)
            clock.advance(timedelta(seconds=9.5))
            answer.set()
        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 4)
        clock.advance(timedelta(seconds=2))
        assert await second.send_due() == 0, "the fourth send's lease started when it was sent"
        answers[3].set()
        await harness.wait_until_sent(4)
    finally:
        for answer in answers:
            answer.set()
        first.stop()
        await running
        await first.gateway.close()
        await second.gateway.close()

    per_message = Counter(message_id_of(request) for request in fake_twilio.requests)
    assert sorted(per_message.values()) == [1, 1, 1, 1]


async def test_an_alert_too_close_to_its_deadline_is_given_up_not_sent_for_a_second(
    harness: Harness, fake_twilio: FakeTwilio, clock: FrozenClock
) -> None:
    [alert] = await harness.alerts()
    clock.advance(timedelta(minutes=2) - timedelta(milliseconds=500))
    worker = harness.worker()
    assert await worker.send_due() == 0
    clock.advance(timedelta(seconds=1))
    await worker.run_timers()
    await worker.gateway.close()

    assert fake_twilio.arrivals == 0
    message = await harness.message_for(alert)
    assert (message.status, message.failure_reason) == ("failed", "deadline")
    assert (await harness.reload(alert)).delivery_status == "failed"
