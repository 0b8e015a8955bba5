"""PATCH, cancel, close, and the timed transitions run by the worker."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import FrozenClock
from app.core.models import Alert, Incident, IncidentEvent, Message
from app.core.settings import Settings
from dispatch.lifecycle import run_timers
from tests.factories import create_alert, create_incident, create_key, create_volunteer


async def texts_of(session: AsyncSession, purpose: str) -> list[tuple[str | None, str | None]]:
    rows = await session.execute(
        select(Message.phone, Message.body).where(Message.purpose == purpose)
    )
    return [(row.phone, row.body) for row in rows]


@pytest.fixture
async def dispatcher(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="dispatcher", name="centre-a", centre="test")


async def scene(session: AsyncSession, clock: FrozenClock) -> tuple[Incident, list[Alert]]:
    """One responder on the way, one pending who got the SMS, one whose SMS is still queued."""
    incident = await create_incident(session, created_at=clock.now())
    alerts = []
    for delivery in ("delivered", "sent", "queued"):
        volunteer = await create_volunteer(session, language="en")
        alert = await create_alert(
            session, incident=incident, volunteer=volunteer, now=clock.now(), sms_status=delivery
        )
        alerts.append(alert)
    alerts[0].response, alerts[0].role = "accepted", "cpr"
    await session.flush()
    return incident, alerts


async def test_cancel_texts_every_open_alert_that_reached_its_volunteer(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    dispatcher: dict[str, str],
) -> None:
    incident, alerts = await scene(session, clock)

    response = await client.post(
        f"/v1/incidents/{incident.id}/cancel", json={"reason": "false alarm"}, headers=dispatcher
    )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    cancellations = await texts_of(session, "cancellation")
    assert len(cancellations) == 2
    assert all("is cancelled. Do not go." in (body or "") for _, body in cancellations)
    for alert in alerts:
        await session.refresh(alert)
        assert alert.cancelled_at == clock.now()

    again = await client.post(f"/v1/incidents/{incident.id}/cancel", headers=dispatcher)
    assert again.status_code == 200
    assert len(await texts_of(session, "cancellation")) == 2
    closed = await client.post(f"/v1/incidents/{incident.id}/close", headers=dispatcher)
    assert closed.status_code == 409


async def test_close_thanks_responders_with_the_follow_up_contact(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    dispatcher: dict[str, str],
    settings: Settings,
) -> None:
    incident, _ = await scene(session, clock)
    response = await client.post(
        f"/v1/incidents/{incident.id}/close", json={"outcome": "ROSC"}, headers=dispatcher
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "closed"
    [(_, body)] = await texts_of(session, "thanks")
    assert settings.follow_up_text in (body or "")


async def test_another_centre_cannot_touch_the_incident(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    incident, _ = await scene(session, clock)
    other = await create_key(session, role="dispatcher", name="centre-b", centre="other")
    admin = await create_key(session, role="admin", name="admin")
    assert (
        await client.post(f"/v1/incidents/{incident.id}/cancel", headers=other)
    ).status_code == 404
    assert (
        await client.post(f"/v1/incidents/{incident.id}/cancel", headers=admin)
    ).status_code == 403
    assert (await client.post(f"/v1/incidents/{incident.id}/cancel")).status_code == 401


async def test_patch_address_texts_responders_only(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    dispatcher: dict[str, str],
) -> None:
    incident, _ = await scene(session, clock)
    response = await client.patch(
        f"/v1/incidents/{incident.id}",
        json={"address": "Drottninggatan 3, Stockholm", "access_notes": "Code 9999"},
        headers=dispatcher,
    )
    assert response.status_code == 200, response.text
    [(_, body)] = await texts_of(session, "update")
    assert "Drottninggatan 3, Stockholm" in (body or "")
    assert "Code 9999" in (body or "")
    await session.refresh(incident)
    assert incident.address == "Drottninggatan 3, Stockholm"


async def test_patch_with_an_excluding_flag_stands_everyone_down(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    dispatcher: dict[str, str],
) -> None:
    incident, alerts = await scene(session, clock)
    response = await client.patch(
        f"/v1/incidents/{incident.id}", json={"flags": {"unsafe_scene": True}}, headers=dispatcher
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "not_alerted"
    assert response.json()["not_alerted_reason"] == "flag:unsafe_scene"
    for alert in alerts:
        await session.refresh(alert)
        assert alert.stood_down_at == clock.now()
    assert len(await texts_of(session, "cancellation")) == 1
    assert len(await texts_of(session, "stand_down")) == 1


async def test_patch_refuses_unknown_fields_and_bad_coordinates(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    dispatcher: dict[str, str],
) -> None:
    incident, _ = await scene(session, clock)
    for body in ({"colour": "red"}, {"location": {"lat": 91, "lon": 0}}, {"flags": {"x": True}}):
        response = await client.patch(f"/v1/incidents/{incident.id}", json=body, headers=dispatcher)
        assert response.status_code == 422, body


async def test_unanswered_alerts_become_no_reply_after_the_window(
    session: AsyncSession,
    session_factory: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    settings: Settings,
) -> None:
    incident, alerts = await scene(session, clock)
    clock.advance(settings.alert_reply_window - timedelta(seconds=1))
    await run_timers(session_factory, now=clock.now(), settings=settings)
    await session.refresh(alerts[1])
    assert alerts[1].response == "pending"

    clock.advance(timedelta(seconds=1))
    await run_timers(session_factory, now=clock.now(), settings=settings)
    responses = []
    for alert in alerts:
        await session.refresh(alert)
        responses.append(alert.response)
    assert responses == ["accepted", "no_reply", "no_reply"]
    types = (
        await session.execute(
            select(IncidentEvent.type).where(IncidentEvent.incident_id == incident.id)
        )
    ).scalars()
    assert "alerts.no_reply" in list(types)


async def test_incident_still_alerting_after_max_age_is_closed_silently(
    session: AsyncSession,
    session_factory: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    settings: Settings,
) -> None:
    incident, _ = await scene(session, clock)
    clock.advance(settings.incident_max_age)
    await run_timers(session_factory, now=clock.now(), settings=settings)
    await session.refresh(incident)
    assert incident.status == "closed"
    assert await texts_of(session, "thanks") == []
