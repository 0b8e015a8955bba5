"""The trust model of SMS senders: a code-less YES never stands other volunteers down.

A signed webhook proves Twilio sent it, not who typed it: on some carrier routes the
sender's number can be spoofed. The reply code went only to the real phone, so a
reply that would end the alert for others (the accept that fills the last slot)
must carry it (docs/reliability.md, "Who an SMS is from").
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, Message
from app.core.settings import Settings
from tests.factories import create_alert, create_incident, create_volunteer, make_settings
from tests.test_webhooks_sms import reply
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, MESSAGING_SERVICE_SID


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_messaging_service_sid=MESSAGING_SERVICE_SID,
        public_base_url="https://responder.example.org",
    )


async def one_slot_two_pending(
    session: AsyncSession, clock: FrozenClock
) -> tuple[list[Alert], list[str]]:
    incident = await create_incident(session, created_at=clock.now(), cpr_slots=1)
    people = [await create_volunteer(session, language="en") for _ in range(2)]
    alerts = [
        await create_alert(session, incident=incident, volunteer=person, now=clock.now())
        for person in people
    ]
    for alert in alerts:
        alert.delivery_status = "delivered"
    await session.flush()
    return alerts, [person.phone or "" for person in people]


async def test_a_yes_without_code_that_would_stand_others_down_asks_for_the_code(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    alerts, phones = await one_slot_two_pending(session, clock)

    answer = await reply(client, phones[0], "YES")

    assert f"reply YES {alerts[0].code}" in answer
    for alert in alerts:
        await session.refresh(alert)
        assert (alert.response, alert.role, alert.stood_down_at) == ("pending", None, None)
    stand_downs = await session.execute(select(Message).where(Message.purpose == "stand_down"))
    assert stand_downs.first() is None


async def test_the_coded_yes_takes_the_last_slot_and_stands_the_others_down(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    alerts, phones = await one_slot_two_pending(session, clock)
    await reply(client, phones[0], "YES")

    answer = await reply(client, phones[0], f"YES {alerts[0].code}")

    assert "start CPR" in answer
    await session.refresh(alerts[0])
    await session.refresh(alerts[1])
    assert (alerts[0].response, alerts[0].role) == ("accepted", "cpr")
    assert alerts[1].stood_down_at is not None


async def test_a_yes_without_code_is_accepted_while_it_stands_nobody_down(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    incident = await create_incident(session, created_at=clock.now(), cpr_slots=2)
    people = [await create_volunteer(session, language="en") for _ in range(3)]
    alerts = [
        await create_alert(session, incident=incident, volunteer=person, now=clock.now())
        for person in people
    ]

    first = await reply(client, people[0], "JA")  # one slot stays open
    alone = await create_incident(session, created_at=clock.now(), cpr_slots=1)
    lone_volunteer = await create_volunteer(session, language="en")
    lone = await create_alert(session, incident=alone, volunteer=lone_volunteer, now=clock.now())
    last_and_alone = await reply(client, lone_volunteer, "yes")  # nobody else to stand down

    assert "start CPR" in first
    assert "start CPR" in last_and_alone
    await session.refresh(alerts[0])
    await session.refresh(lone)
    assert alerts[0].role == "cpr"
    assert lone.role == "cpr"
