"""Who looked: reads of personal data through the API are logged once per reader,
record and day, so a CAD polling its incident does not flood the log."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import AccessLog, Incident, Volunteer
from tests.factories import create_alert, create_incident, create_key, create_volunteer


async def _incident_with_responder(
    session: AsyncSession, now: datetime
) -> tuple[Incident, Volunteer]:
    incident = await create_incident(session, created_at=now, centre="SOS Syd")
    responder = await create_volunteer(session)
    alert = await create_alert(session, incident=incident, volunteer=responder, now=now)
    alert.response, alert.role, alert.accepted_at = "accepted", "cpr", now
    bystander = await create_volunteer(session)
    await create_alert(session, incident=incident, volunteer=bystander, now=now)
    await session.flush()
    return incident, responder


async def _log(session: AsyncSession) -> list[tuple[object, ...]]:
    rows = await session.execute(
        select(
            AccessLog.day,
            AccessLog.reader_name,
            AccessLog.volunteer_id,
            AccessLog.what,
            AccessLog.target_id,
        ).order_by(AccessLog.day, AccessLog.what)
    )
    return [tuple(row) for row in rows]


async def test_a_polling_dispatcher_is_logged_once_a_day_per_responder(
    session: AsyncSession, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    incident, responder = await _incident_with_responder(session, clock.now())
    cad = await create_key(session, role="dispatcher", name="CAD Syd", centre="SOS Syd")

    for path in ("", "", "/alerts", ""):
        answer = await client.get(f"/v1/incidents/{incident.id}{path}", headers=cad)
        assert answer.status_code == 200
    await client.get("/v1/incidents", headers=cad)
    today = clock.now().date()
    assert await _log(session) == [(today, "CAD Syd", responder.id, "contacts", str(incident.id))]

    clock.advance(timedelta(days=1))
    await client.get(f"/v1/incidents/{incident.id}", headers=cad)
    assert [row[0] for row in await _log(session)] == [today, today + timedelta(days=1)]


async def test_an_incident_without_responders_logs_nothing(
    session: AsyncSession, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    incident = await create_incident(session, created_at=clock.now(), centre="SOS Syd")
    await create_alert(
        session, incident=incident, volunteer=await create_volunteer(session), now=clock.now()
    )
    cad = await create_key(session, role="dispatcher", name="CAD Syd", centre="SOS Syd")

    await client.get(f"/v1/incidents/{incident.id}", headers=cad)
    await client.get(f"/v1/incidents/{incident.id}/alerts", headers=cad)

    assert await _log(session) == []


async def test_an_administrator_reading_explain_and_a_volunteer_is_logged(
    session: AsyncSession, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    incident, responder = await _incident_with_responder(session, clock.now())
    admin = await create_key(session, role="admin", name="Coordinator Kim")

    explain = await client.get(
        f"/v1/incidents/{incident.id}/explain",
        params={"volunteer_id": str(responder.id)},
        headers=admin,
    )
    opened = await client.get(f"/v1/volunteers/{responder.id}", headers=admin)
    places = await client.get(f"/v1/volunteers/{responder.id}/places", headers=admin)

    assert explain.status_code == opened.status_code == places.status_code == 200
    today = clock.now().date()
    assert await _log(session) == [
        (today, "Coordinator Kim", responder.id, "explain", str(incident.id)),
        (today, "Coordinator Kim", responder.id, "profile", ""),
    ]


async def test_explain_for_an_id_that_names_no_one_still_answers(
    session: AsyncSession, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    incident = await create_incident(session, created_at=clock.now())
    admin = await create_key(session, role="admin")
    nobody = uuid.uuid4()

    answer = await client.get(
        f"/v1/incidents/{incident.id}/explain", params={"volunteer_id": str(nobody)}, headers=admin
    )

    assert answer.status_code == 200
    assert [row[2] for row in await _log(session)] == [nobody]
