"""The worker sends the queue through the real Twilio client to a local fake Twilio."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from app.core.db import unit_of_work
from app.core.models import GatewayHealth, IncidentEvent, Volunteer
from dispatch.delivery import advance_message
from dispatch.responses import InboundSms, handle_inbound_sms
from dispatch.worker import claim_tiers
from tests.factories import create_alert, create_incident, create_volunteer, savepoints
from tests.twilio_fake import (
    AUTH_FAILED,
    DROPPED,
    MESSAGING_SERVICE_SID,
    OPTED_OUT,
    SERVER_ERROR,
    TOO_MANY,
    FakeTwilio,
    hang,
)
from tests.worker_harness import Harness, wait_listening


async def test_queued_alert_is_sent_with_status_callback_and_validity_period(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    worker = harness.worker()

    assert await worker.send_due() == 1
    await worker.gateway.close()

    [sent] = fake_twilio.messages()
    message = await harness.message_for(alert)
    assert sent.form["MessagingServiceSid"] == MESSAGING_SERVICE_SID
    assert sent.form["Body"] == message.body
    assert sent.form["ValidityPeriod"] == "120"
    callback = urlsplit(sent.form["StatusCallback"])
    assert callback.netloc == "responder.example.org"
    assert callback.path == "/webhooks/twilio/status"
    assert parse_qs(callback.query) == {
        "message_id": [str(message.id)],
        "alert_id": [str(alert.id)],
    }
    assert message.status == "sent"
    assert message.provider_sid == sent.sid
    assert (await harness.reload(alert)).delivery_status == "sent"
    async with harness.factory() as session:
        events = (await session.execute(select(IncidentEvent.data))).scalars().all()
    assert {"alert_id": str(alert.id), "delivery_status": "sent"}.items() <= events[-1].items()


async def test_429_and_500_are_retried_with_backoff_until_accepted(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    fake_twilio.script(TOO_MANY, SERVER_ERROR)
    worker = harness.worker()

    assert await worker.send_due() == 0
    assert (await harness.message_for(alert)).status == "queued"
    assert await worker.send_due() == 0, "nothing is due before the backoff"
    harness.clock.advance(timedelta(seconds=20))
    assert await worker.send_due() == 0
    harness.clock.advance(timedelta(seconds=20))
    assert await worker.send_due() == 1
    await worker.gateway.close()

    message = await harness.message_for(alert)
    assert message.status == "sent"
    assert message.attempts == 3
    assert [request.answered for request in fake_twilio.requests] == [429, 500, 201]


async def test_retries_stop_at_the_send_deadline_and_the_alert_shows_failed(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    fake_twilio.script(*[SERVER_ERROR] * 50)
    worker = harness.worker()
    for _ in range(30):
        await worker.send_due()
        harness.clock.advance(timedelta(seconds=16))
    await worker.run_timers()
    await worker.gateway.close()

    message = await harness.message_for(alert)
    assert message.status == "failed"
    assert (await harness.reload(alert)).delivery_status == "failed"
    async with harness.factory() as session:
        health = await session.get_one(GatewayHealth, "twilio")
    assert health.consecutive_failures >= 3
    assert health.refused is False


async def test_opted_out_recipient_is_not_retried_and_is_marked_opted_out(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    fake_twilio.script(OPTED_OUT)
    worker = harness.worker()
    await worker.send_due()
    harness.clock.advance(timedelta(minutes=1))
    await worker.send_due()
    await worker.gateway.close()

    message = await harness.message_for(alert)
    assert (message.status, message.error_code) == ("failed", 21610)
    assert len(fake_twilio.requests) == 1
    async with harness.factory() as session:
        volunteer = await session.get_one(Volunteer, alert.volunteer_id)
    assert volunteer.opted_out is True


async def test_a_carrier_opt_out_ends_the_volunteers_open_alerts_as_a_texted_stop_does(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """Twilio filtered the volunteer's STOP (21610 on our next send): their other alerts
    are ended too, a pending one declined and a role given up, so neither holds a
    place that another volunteer could take."""
    now = harness.clock.now()
    async with unit_of_work(harness.factory) as session:
        volunteer = await create_volunteer(session)
        holding, waiting, refused = [
            await create_alert(
                session,
                incident=await create_incident(session, created_at=now),
                volunteer=volunteer,
                now=now,
                sms_status=sms_status,
            )
            for sms_status in ("sent", "sent", "queued")
        ]
        holding.response, holding.role, holding.responded_at = "accepted", "cpr", now
    fake_twilio.script(OPTED_OUT)
    worker = harness.worker()
    await worker.send_due()
    await worker.gateway.close()

    assert len(fake_twilio.requests) == 1
    ended = [await harness.reload(alert) for alert in (holding, waiting, refused)]
    assert [(alert.response, alert.role) for alert in ended] == [
        ("withdrawn", None),
        ("declined", None),
        ("declined", None),
    ]
    async with harness.factory() as session:
        reasons = (
            await session.scalars(
                select(IncidentEvent.data["reason"].astext).where(
                    IncidentEvent.type.in_(("alert.withdrawn", "alert.declined"))
                )
            )
        ).all()
        assert (await session.get_one(Volunteer, volunteer.id)).opted_out is True
    assert reasons == ["stop"] * 3


async def test_authentication_failure_marks_the_gateway_refused(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await harness.alerts()
    fake_twilio.script(AUTH_FAILED)
    worker = harness.worker()
    await worker.send_due()
    async with harness.factory() as session:
        health = await session.get_one(GatewayHealth, "twilio")
    assert health.refused is True

    harness.clock.advance(timedelta(seconds=20))
    assert await worker.send_due() == 1
    await worker.gateway.close()
    async with harness.factory() as session:
        health = await session.get_one(GatewayHealth, "twilio")
    assert (health.refused, health.consecutive_failures) == (False, 0)


async def test_timed_out_send_reconciled_by_a_callback_is_not_sent_again(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    fake_twilio.script(hang(1.5))
    worker = harness.worker(send_timeout_s=0.5)
    assert await worker.send_due() == 0
    [accepted] = await asyncio.to_thread(fake_twilio.wait_for, 1)
    message = await harness.message_for(alert)
    assert (message.status, message.claimed_by) == ("sending", None), "outcome unknown"

    async with unit_of_work(harness.factory) as session:
        await advance_message(
            session,
            message_id=message.id,
            status="delivered",
            now=harness.clock.now(),
            provider_sid=accepted.sid,
        )
    harness.clock.advance(timedelta(seconds=30))
    assert await worker.send_due() == 0
    await worker.gateway.close()

    assert len(fake_twilio.requests) == 1
    assert (await harness.message_for(alert)).provider_sid == accepted.sid
    assert (await harness.reload(alert)).delivery_status == "delivered"


async def test_a_timed_out_alert_that_the_volunteer_answered_is_not_sent_again(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """Their reply proves the first copy arrived: recorded sent, no second copy."""
    [alert] = await harness.alerts()
    fake_twilio.script(hang(1.5))
    worker = harness.worker(send_timeout_s=0.5)
    assert await worker.send_due() == 0
    await asyncio.to_thread(fake_twilio.wait_for, 1)
    async with unit_of_work(harness.factory) as session:
        volunteer = await session.get_one(Volunteer, alert.volunteer_id)
        await handle_inbound_sms(
            savepoints(session),
            sms=InboundSms("SM" + "d" * 32, volunteer.phone or "", f"NO {alert.code}"),
            now=harness.clock.now(),
            settings=harness.settings,
        )
    harness.clock.advance(timedelta(seconds=30))
    assert await worker.send_due() == 0
    await worker.run_timers()
    await worker.gateway.close()

    assert len(fake_twilio.requests) == 1
    assert (await harness.message_for(alert)).status == "sent"
    assert (await harness.reload(alert)).delivery_status == "sent"


async def test_timed_out_send_without_callback_is_sent_again(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    fake_twilio.script(hang(2.0))
    worker = harness.worker(send_timeout_s=0.5)
    await worker.send_due()
    harness.clock.advance(timedelta(seconds=10))
    assert await worker.send_due() == 1
    await worker.gateway.close()
    assert (await harness.message_for(alert)).status == "sent"


async def test_a_connection_closed_without_answer_is_resent_at_once(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """The keep-alive race: no 5 s unknown-outcome grace, one SMS at the provider."""
    [alert] = await harness.alerts()
    fake_twilio.script(DROPPED)
    worker = harness.worker()
    assert await worker.send_due() == 1
    await worker.gateway.close()

    assert fake_twilio.arrivals == 2
    [sent] = fake_twilio.messages()
    message = await harness.message_for(alert)
    assert (message.status, message.attempts, message.provider_sid) == ("sent", 1, sent.sid)


async def test_a_second_close_without_answer_is_an_unknown_outcome(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """Resent once only: then it waits for a status callback, as a timeout does."""
    [alert] = await harness.alerts()
    fake_twilio.script(DROPPED, DROPPED)
    worker = harness.worker()
    assert await worker.send_due() == 0
    message = await harness.message_for(alert)
    assert (message.status, message.attempts) == ("sending", 1), "outcome unknown"
    assert message.next_attempt_at is not None
    assert message.next_attempt_at - harness.clock.now() >= timedelta(seconds=5)
    harness.clock.advance(timedelta(seconds=10))
    assert await worker.send_due() == 1
    await worker.gateway.close()
    assert fake_twilio.arrivals == 3
    assert len(fake_twilio.messages()) == 1


async def test_alert_past_its_deadline_is_abandoned_without_sending(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    harness.clock.advance(timedelta(minutes=3))
    worker = harness.worker()
    assert await worker.send_due() == 0
    await worker.run_timers()
    await worker.gateway.close()

    assert fake_twilio.requests == []
    message = await harness.message_for(alert)
    assert (message.status, message.failure_reason) == ("failed", "deadline")
    assert (await harness.reload(alert)).delivery_status == "failed"


async def test_alert_of_a_cancelled_incident_is_not_sent(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts(incident_status="cancelled")
    worker = harness.worker()
    assert await worker.send_due() == 0, "the claim itself passes it over"
    await worker.run_timers()
    await worker.gateway.close()

    assert fake_twilio.requests == []
    assert (await harness.message_for(alert)).failure_reason == "not_needed"


async def test_two_workers_send_each_message_exactly_once(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await harness.alerts(12)
    first, second = harness.worker(), harness.worker()
    sent = await asyncio.gather(first.send_due(), second.send_due())
    await first.gateway.close()
    await second.gateway.close()

    assert sum(sent) == 12
    assert len({request.form["To"] for request in fake_twilio.requests}) == 12
    assert len(fake_twilio.requests) == 12


async def test_message_of_a_worker_that_died_mid_send_is_claimed_again_after_its_lease(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    async with unit_of_work(harness.factory) as session:
        [claimed] = (
            await claim_tiers(
                session,
                now=harness.clock.now(),
                worker_id="dead",
                limit=10,
                lease=timedelta(seconds=30),
            )
        ).claimed
    worker = harness.worker()
    assert await worker.send_due() == 0, "the lease still holds"
    harness.clock.advance(timedelta(seconds=31))
    assert await worker.send_due() == 1
    await worker.gateway.close()
    message = await harness.message_for(alert)
    assert (message.status, message.attempts) == ("sent", 2)


async def test_running_worker_is_woken_by_notify_not_by_polling(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    worker = harness.worker(poll_interval_s=3600.0)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0)
        await asyncio.to_thread(wait_listening, worker)
        await harness.alerts(2)
        requests = await asyncio.to_thread(fake_twilio.wait_for, 2)
        assert len(requests) == 2
    finally:
        worker.stop()
        await task
        await worker.gateway.close()


async def test_a_finished_send_claims_nothing_more_after_a_claim_that_drained_the_queue(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    # An incident's stand-downs: each finished send used to wake a claim and the idle
    # query that found nothing (docs/benchmarks.md, "second pass").
    await harness.texts("stand_down", 3)
    worker = harness.worker()

    assert await worker.send_due() == 3
    await worker.gateway.close()

    assert not worker.claim_wanted


async def test_a_finished_send_claims_again_while_the_last_claim_left_rows_for_want_of_slots(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await harness.texts("stand_down", 2)
    worker = harness.worker(overrides={"send_concurrency": 2})  # one slot for non-alerts

    assert await worker.send_due() == 1
    assert worker.claim_wanted
    assert await worker.send_due() == 1
    await worker.gateway.close()


async def test_a_failed_send_claims_again_so_that_its_retry_time_is_seen(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await harness.texts("stand_down", 1)
    fake_twilio.script(SERVER_ERROR)
    worker = harness.worker()

    assert await worker.send_due() == 0
    await worker.gateway.close()

    assert worker.claim_wanted
