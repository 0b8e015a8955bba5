"""An alert SMS whose send timed out may be on the phone, whatever happens to it next.

A timed-out request has an unknown outcome: the provider may have accepted it. Given
up later (its send deadline passed, or an incident's end gave it up while queued for
a retry), it is still treated as "may have the alert", so the volunteer gets the
stand-down or cancellation that goes with it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from app.core.db import unit_of_work
from app.core.models import Message
from dispatch.lifecycle import cancel_incident
from dispatch.worker import abandon_unsendable, claim_tiers
from tests.twilio_fake import SERVER_ERROR, FakeTwilio, hang
from tests.worker_harness import Harness


async def cancellations(harness: Harness, alert_id: object) -> list[str]:
    async with harness.factory() as session:
        return list(
            await session.scalars(
                select(Message.purpose).where(
                    Message.alert_id == alert_id, Message.purpose != "alert"
                )
            )
        )


async def cancel(harness: Harness, incident_id: object) -> None:
    async with unit_of_work(harness.factory) as session:
        await cancel_incident(
            session,
            incident_id=incident_id,
            centre=None,
            reason=None,
            now=harness.clock.now(),  # type: ignore[arg-type]
        )


async def test_an_alert_given_up_at_its_deadline_after_a_timed_out_send_gets_its_cancellation(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    [alert] = await harness.alerts()
    fake_twilio.script(hang(1.5))
    worker = harness.worker(send_timeout_s=0.5)
    assert await worker.send_due() == 0
    await asyncio.to_thread(fake_twilio.wait_for, 1)  # the provider accepted it after all
    harness.clock.advance(timedelta(minutes=3))  # past the 2-minute send deadline
    async with unit_of_work(harness.factory) as session:
        assert await abandon_unsendable(session, now=harness.clock.now()) == 1
    await worker.gateway.close()
    assert (await harness.message_for(alert)).status == "failed"

    await cancel(harness, alert.incident_id)

    assert await cancellations(harness, alert.id) == ["cancellation"]


async def test_an_alert_queued_again_after_a_timed_out_send_and_given_up_gets_its_cancellation(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """The retry after the grace failed for certain (500): back to queued, yet the
    first request may have reached the phone."""
    [alert] = await harness.alerts()
    fake_twilio.script(hang(1.5), SERVER_ERROR)
    worker = harness.worker(send_timeout_s=0.5)
    assert await worker.send_due() == 0
    await asyncio.to_thread(fake_twilio.wait_for, 1)
    harness.clock.advance(timedelta(seconds=10))  # the unknown outcome's grace is over
    assert await worker.send_due() == 0
    await worker.gateway.close()
    assert (await harness.message_for(alert)).status == "queued"

    await cancel(harness, alert.incident_id)

    assert (await harness.message_for(alert)).status == "failed"
    assert await cancellations(harness, alert.id) == ["cancellation"]


async def test_an_alert_never_handed_over_gets_no_cancellation(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """A certain failure (500) before any unknown outcome: the volunteer has nothing."""
    [alert] = await harness.alerts()
    fake_twilio.script(SERVER_ERROR)
    worker = harness.worker(send_timeout_s=0.5)
    assert await worker.send_due() == 0
    await worker.gateway.close()
    assert (await harness.message_for(alert)).status == "queued"

    await cancel(harness, alert.incident_id)

    assert await cancellations(harness, alert.id) == []


async def test_an_alert_whose_worker_died_mid_send_gets_its_cancellation_once_given_up(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """A lease that ran out: the dead worker's request may be at the provider."""
    [alert] = await harness.alerts()
    async with unit_of_work(harness.factory) as session:
        await claim_tiers(
            session,
            now=harness.clock.now(),
            worker_id="died",
            limit=1,
            lease=timedelta(seconds=30),
        )
    harness.clock.advance(timedelta(seconds=31))
    fake_twilio.script(SERVER_ERROR)
    worker = harness.worker()
    assert await worker.send_due() == 0  # the re-claim's retry fails for certain
    await worker.gateway.close()
    assert (await harness.message_for(alert)).status == "queued"

    await cancel(harness, alert.incident_id)

    assert await cancellations(harness, alert.id) == ["cancellation"]
