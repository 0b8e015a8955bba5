"""The worker records the accepted SMS of a burst together, after its last request.

Recorded one by one, each accepted alert SMS was a transaction of seven round trips
under its incident's lock, run on the event loop that was still building the
burst's later requests: the last alert of an incident reached the provider later
for every record before it (docs/benchmarks.md). The records now wait until no
request of the worker is out (or ``RECORD_GATHER_S``) and are one transaction; so
are the stand-downs a reply causes, which were most of the worker's CPU per reply.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from sqlalchemy import select

from app.core.models import IncidentEvent, Message
from dispatch import worker as worker_module
from dispatch.delivery import AcceptedSms, record_sms_sent
from tests.test_reply_statements import counted_statements
from tests.twilio_fake import Behaviour, FakeTwilio
from tests.worker_harness import Harness


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch of accepted alert SMS the worker records."""
    sizes: list[int] = []

    async def counting(session: object, accepted: Sequence[AcceptedSms]) -> None:
        sizes.append(len(accepted))
        await record_sms_sent(session, accepted)  # type: ignore[arg-type]

    monkeypatch.setattr(worker_module, "record_sms_sent", counting)
    return sizes


async def test_a_burst_is_recorded_in_one_transaction_with_an_event_per_alert(
    harness: Harness, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = await harness.alerts(12)
    monkeypatch.setattr(worker_module, "RECORD_GATHER_S", 3600.0)  # this process is slow
    batches = count_batches(monkeypatch)
    worker = harness.worker()

    assert await worker.send_due() == 12
    await worker.gateway.close()

    assert batches == [12]
    sids = {request.sid for request in fake_twilio.messages()}
    for alert in alerts:
        message = await harness.message_for(alert)
        assert (message.status, message.claimed_by) == ("sent", None)
        assert message.provider_sid in sids
        assert message.provider == "twilio"
        assert message.sent_at is not None
        assert (await harness.reload(alert)).delivery_status == "sent"
    async with harness.factory() as session:
        events = (
            await session.execute(
                select(IncidentEvent.seq, IncidentEvent.data)
                .where(IncidentEvent.type == "alert.delivery")
                .order_by(IncidentEvent.seq)
            )
        ).all()
    assert {data["alert_id"] for _, data in events} == {str(alert.id) for alert in alerts}
    assert [seq for seq, _ in events] == list(range(events[0].seq, events[0].seq + 12))


async def test_texts_that_are_not_alerts_are_recorded_together_too(
    harness: Harness, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "RECORD_GATHER_S", 3600.0)
    phones = await harness.texts("stand_down", 4)
    batches = count_batches(monkeypatch)
    worker = harness.worker()

    assert await worker.send_due() == 4
    await worker.gateway.close()

    assert batches == [4]
    async with harness.factory() as session:
        rows = (
            await session.execute(
                select(Message.status, Message.provider_sid, Message.claimed_by).where(
                    Message.phone.in_(phones)
                )
            )
        ).all()
        events = (await session.execute(select(IncidentEvent.id))).all()
    assert sorted(rows) == sorted(("sent", request.sid, None) for request in fake_twilio.messages())
    assert events == [], "only an alert SMS's delivery is an incident event"


async def test_an_accepted_alert_waits_for_the_requests_still_out(
    harness: Harness, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = await harness.alerts(2)
    monkeypatch.setattr(worker_module, "RECORD_GATHER_S", 3600.0)
    batches = count_batches(monkeypatch)
    held = threading.Event()
    fake_twilio.script(Behaviour(hold=held))
    worker = harness.worker()

    sending = asyncio.create_task(worker.send_due())
    await asyncio.to_thread(fake_twilio.wait_for, 1)  # one answered, one held
    assert batches == [], "recorded while another alert request was still out"
    held.set()
    assert await sending == 2
    await worker.gateway.close()

    assert batches == [2]
    for alert in (first, second):
        assert (await harness.message_for(alert)).status == "sent"


async def test_a_slow_request_holds_back_the_others_records_only_for_the_gather_time(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await harness.alerts(2)
    held = threading.Event()
    fake_twilio.script(Behaviour(hold=held))
    worker = harness.worker()

    sending = asyncio.create_task(worker.send_due())
    try:
        await harness.wait_until_sent(1)  # recorded RECORD_GATHER_S after it was accepted
    finally:
        held.set()
    assert await sending == 2
    await worker.gateway.close()
    await harness.wait_until_sent(2)


async def test_a_failed_record_leaves_every_sms_of_the_batch_sending_under_its_lease(
    harness: Harness, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What one failed record did to one SMS (the duplicate window): no outcome is invented."""
    alerts = await harness.alerts(3)

    async def lost(session: object, accepted: Sequence[AcceptedSms]) -> None:
        raise ConnectionError("database gone")

    monkeypatch.setattr(worker_module, "record_sms_sent", lost)
    worker = harness.worker()

    tasks = await worker.fill_slots()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await worker.gateway.close()

    assert [type(outcome) for outcome in outcomes] == [ConnectionError] * 3
    for alert in alerts:
        message = await harness.message_for(alert)
        assert (message.status, message.claimed_by) == ("sending", worker.worker_id)
        assert (await harness.reload(alert)).delivery_status == "sending"


async def test_a_batch_without_alert_sms_locks_no_incident_and_skips_the_lock_statement(
    harness: Harness, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock statement takes the incidents of a batch's alert SMS only: for the
    # stand-downs a reply causes it found none, one round trip per batch for nothing.
    monkeypatch.setattr(worker_module, "RECORD_GATHER_S", 3600.0)
    engine = harness.factory.kw["bind"]
    await harness.texts("stand_down", 3)
    worker = harness.worker()
    with counted_statements(engine, words=8) as texts_sent:
        assert await worker.send_due() == 3
    await worker.gateway.close()
    alerts = await harness.alerts(2)
    worker = harness.worker()
    with counted_statements(engine, words=8) as alerts_sent:
        assert await worker.send_due() == 2
    await worker.gateway.close()

    lock = "SELECT incident.id FROM incident WHERE incident.id IN"
    assert not any(statement.startswith(lock) for statement in texts_sent), texts_sent
    assert sum(statement.startswith(lock) for statement in alerts_sent) == 1, alerts_sent
    for alert in alerts:
        assert (await harness.reload(alert)).delivery_status == "sent"
    async with harness.factory() as session:
        statuses = (
            await session.execute(select(Message.status).where(Message.purpose == "stand_down"))
        ).scalars()
        assert list(statuses) == ["sent"] * 3
