"""An exercise incident runs the whole alert path, marked, and counts in no statistic."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import unit_of_work
from app.core.models import Message
from dispatch.alerting import NewIncident, create_incident
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset
from tests.twilio_fake import FakeTwilio
from tests.worker_harness import Harness

NEAR = offset(STOCKHOLM, bearing_deg=0, distance_m=100)


def exercise_request() -> NewIncident:
    return NewIncident(
        external_ref=f"DRILL-{uuid.uuid4().hex[:10]}",
        kind="cardiac_arrest",
        location=STOCKHOLM,
        address="Drottninggatan 1, Stockholm",
        exercise=True,
    )


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_exercise_texts_are_marked_in_each_language_and_count_in_no_metric(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    async with unit_of_work(harness.factory) as session:
        await create_volunteer(session, near=NEAR, language="sv")
        await create_volunteer(session, near=NEAR, language="en")
        created = await create_incident(
            session,
            centre="sos",
            request=exercise_request(),
            settings=harness.settings,
            now=harness.clock.now(),
        )
    assert created.incident.exercise
    sent_before = sample("responder_sms_sent_total", {"purpose": "alert"})
    accepted_before = sample("responder_alert_sms_accepted_seconds_count")
    worker = harness.worker()

    assert await worker.send_due() == 2
    await worker.gateway.close()

    bodies = sorted(request.form["Body"] for request in fake_twilio.messages())
    assert bodies[0].startswith("EXERCISE: CPR ALERT ")
    assert bodies[1].startswith("ÖVNING: HLR-LARM ")
    assert sample("responder_sms_sent_total", {"purpose": "alert"}) == sent_before
    assert sample("responder_alert_sms_accepted_seconds_count") == accepted_before


async def test_an_exercise_alert_abandoned_past_its_deadline_is_not_counted(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    async with unit_of_work(harness.factory) as session:
        await create_volunteer(session, near=NEAR, language="en")
        await create_incident(
            session,
            centre="sos",
            request=exercise_request(),
            settings=harness.settings,
            now=harness.clock.now(),
        )
    abandoned_before = sample("responder_sms_abandoned_total", {"reason": "deadline"})
    harness.clock.advance(timedelta(minutes=3))
    worker = harness.worker()

    assert await worker.send_due() == 0
    await worker.run_timers()
    await worker.gateway.close()

    assert fake_twilio.requests == []
    async with harness.factory() as session:
        [reason] = (
            await session.execute(select(Message.failure_reason).where(Message.purpose == "alert"))
        ).scalars()
    assert reason == "deadline"
    assert sample("responder_sms_abandoned_total", {"reason": "deadline"}) == abandoned_before


async def test_a_real_incident_is_not_marked_and_is_counted(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    async with unit_of_work(harness.factory) as session:
        await create_volunteer(session, near=NEAR, language="en")
        request = exercise_request()
        await create_incident(
            session,
            centre="sos",
            request=NewIncident(**{**request.__dict__, "exercise": False}),
            settings=harness.settings,
            now=harness.clock.now(),
        )
    accepted_before = sample("responder_alert_sms_accepted_seconds_count")
    worker = harness.worker()

    assert await worker.send_due() == 1
    await worker.gateway.close()

    [sent] = fake_twilio.messages()
    assert sent.form["Body"].startswith("CPR ALERT ")
    assert sample("responder_alert_sms_accepted_seconds_count") == accepted_before + 1


async def test_an_exercise_posted_over_http_is_shown_as_an_exercise(
    session: AsyncSession, client: httpx.AsyncClient
) -> None:
    await create_volunteer(session, near=NEAR, language="en")
    headers = await create_key(session, role="dispatcher", name="sos")
    body = {
        "external_ref": "DRILL-1",
        "kind": "cardiac_arrest",
        "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
        "address": "Drottninggatan 1, Stockholm",
        "exercise": True,
    }

    response = await client.post("/v1/incidents", json=body, headers=headers)

    assert response.status_code == 201, response.text
    assert response.json()["exercise"] is True
    shown = await client.get(f"/v1/incidents/{response.json()['id']}", headers=headers)
    assert shown.json()["exercise"] is True
    [alert_text] = (
        await session.execute(select(Message.body).where(Message.purpose == "alert"))
    ).scalars()
    assert (alert_text or "").startswith("EXERCISE: CPR ALERT ")
    refused = await client.post(
        "/v1/incidents",
        json={**body, "external_ref": "DRILL-2", "exercise": "maybe"},
        headers=headers,
    )
    assert refused.status_code == 422
