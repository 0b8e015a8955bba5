"""POST /webhooks/twilio/status: delivery only moves forward; 21610 opts the volunteer out."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, IncidentEvent, Message, Volunteer
from app.core.settings import Settings
from dispatch.worker import claim_tiers
from tests.factories import create_alert, create_incident, create_volunteer, make_settings
from tests.twilio_fake import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    MESSAGING_SERVICE_SID,
    FakeTwilio,
    RecordedRequest,
)

BASE = "https://responder.example.org"
TWILIO = FakeTwilio()


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_messaging_service_sid=MESSAGING_SERVICE_SID,
        public_base_url=BASE,
    )


async def sent_alert(
    session: AsyncSession, clock: FrozenClock
) -> tuple[Alert, Message, RecordedRequest]:
    incident = await create_incident(session, created_at=clock.now())
    volunteer = await create_volunteer(session)
    alert = await create_alert(session, incident=incident, volunteer=volunteer, now=clock.now())
    message = (
        await session.execute(select(Message).where(Message.alert_id == alert.id))
    ).scalar_one()
    message.status = "sent"
    message.provider_sid = "SM" + "c" * 32
    alert.delivery_status = "sent"
    await session.flush()
    request = RecordedRequest(
        "POST",
        "/",
        {},
        {
            "To": volunteer.phone or "",
            "StatusCallback": (
                f"{BASE}/webhooks/twilio/status?message_id={message.id}&alert_id={alert.id}"
            ),
        },
        sid=message.provider_sid,
    )
    return alert, message, request


async def callback(
    client: httpx.AsyncClient, request: RecordedRequest, status: str, error: int | None = None
) -> httpx.Response:
    url, body, headers = TWILIO.status_callback(request, status, error_code=error)
    return await client.post(url.removeprefix(BASE), content=body, headers=headers)


async def test_status_moves_forward_and_ignores_duplicates_and_late_arrivals(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    alert, message, request = await sent_alert(session, clock)

    for status in ("delivered", "delivered", "sent", "queued"):
        response = await callback(client, request, status)
        assert response.status_code == 204

    await session.refresh(alert)
    await session.refresh(message)
    assert (message.status, alert.delivery_status) == ("delivered", "delivered")


async def test_undelivered_after_sent_is_recorded_with_its_error(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    alert, message, request = await sent_alert(session, clock)
    await callback(client, request, "undelivered", 30003)
    await session.refresh(message)
    await session.refresh(alert)
    assert (message.status, message.error_code, alert.delivery_status) == (
        "undelivered",
        30003,
        "undelivered",
    )


async def test_delivered_after_we_gave_up_at_the_deadline_wins_and_sends_nothing_again(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    """Our own give-up (a timed-out send, then its deadline) is a guess; the provider's
    receipt saying delivered is its word that the phone has the alert."""
    alert, message, request = await sent_alert(session, clock)
    message.status, message.failure_reason, message.may_have_reached = "failed", "deadline", True
    alert.delivery_status = "failed"
    await session.flush()

    assert (await callback(client, request, "delivered")).status_code == 204
    await callback(client, request, "failed", 30008)

    await session.refresh(message)
    await session.refresh(alert)
    assert (message.status, alert.delivery_status) == ("delivered", "delivered")
    events = await session.scalars(
        select(IncidentEvent.data).where(
            IncidentEvent.incident_id == alert.incident_id, IncidentEvent.type == "alert.delivery"
        )
    )
    assert [data["delivery_status"] for data in events] == ["delivered"]
    claimed = (
        await claim_tiers(
            session, now=clock.now(), worker_id="w", limit=10, lease=timedelta(seconds=30)
        )
    ).claimed
    assert claimed == [], "a receipt never resurrects a send"


async def test_error_21610_opts_the_volunteer_out_and_ends_their_alert_as_a_stop_does(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    alert, _, request = await sent_alert(session, clock)
    await callback(client, request, "failed", 21610)
    volunteer = await session.get_one(Volunteer, alert.volunteer_id)
    await session.refresh(volunteer)
    await session.refresh(alert)
    assert volunteer.opted_out is True
    assert (alert.response, alert.delivery_status) == ("declined", "failed")


async def test_unsigned_or_forged_callback_is_403_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    alert, message, request = await sent_alert(session, clock)
    url, body, headers = TWILIO.status_callback(request, "delivered")
    path = url.removeprefix(BASE)
    forged = {**headers, "X-Twilio-Signature": "AAAA"}
    other_message = path.replace(str(message.id), "00000000-0000-0000-0000-000000000000")
    for target, sent_headers in ((path, forged), (path, {}), (other_message, headers)):
        response = await client.post(target, content=body, headers=sent_headers)
        assert response.status_code == 403
    await session.refresh(message)
    assert message.status == "sent"
