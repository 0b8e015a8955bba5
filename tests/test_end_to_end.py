"""The whole loop, with real commits, the real Twilio client and a local fake Twilio.

10 eligible volunteers around an incident and 2 just outside → POST → exactly 10
SMS → signed replies (YES, no, "ja <code>", "<code> YES", WITHDRAW, ARRIVED) →
roles by the rule → stand-down to the rest → cancel → the expected texts, with the
incident's counts and events checked at each step.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import IncidentEvent, Volunteer
from app.runtime import Runtime
from dispatch.gateway import create_gateway
from dispatch.worker import DispatchWorker
from tests.factories import STOCKHOLM, create_aed, create_key, create_volunteer, offset
from tests.twilio_fake import (
    TWILIO_SPEC,
    FakeTwilio,
    RecordedRequest,
    contract_violations,
    twilio_settings,
)

BASE = "https://responder.example.org"
INSIDE_M = [100, 200, 300, 150, 250, 350, 400, 420, 450, 480]
OUTSIDE_M = [520, 560]


@dataclass
class World:
    client: httpx.AsyncClient
    fake: FakeTwilio
    worker: DispatchWorker
    factory: async_sessionmaker[AsyncSession]
    dispatcher: dict[str, str]
    people: list[Volunteer]

    async def deliver_queue(self) -> list[RecordedRequest]:
        before = len(self.fake.messages())
        await self.worker.send_due()
        return self.fake.messages()[before:]

    async def reply(self, person: Volunteer, body: str) -> str:
        content, headers = self.fake.inbound_sms(
            f"{BASE}/webhooks/twilio/sms", from_phone=person.phone or "", body=body
        )
        response = await self.client.post("/webhooks/twilio/sms", content=content, headers=headers)
        assert response.status_code == 200, response.text
        match = re.search(r"<Message>(.*)</Message>", response.text, re.S)
        assert match is not None
        return html.unescape(match.group(1))

    async def incident(self, incident_id: str) -> dict[str, object]:
        response = await self.client.get(f"/v1/incidents/{incident_id}", headers=self.dispatcher)
        assert response.status_code == 200
        body: dict[str, object] = response.json()
        return body

    async def counts(self, incident_id: str) -> dict[str, int]:
        counts: dict[str, int] = (await self.incident(incident_id))["counts"]  # type: ignore[assignment]
        return counts

    async def event_types(self, incident_id: str) -> list[str]:
        async with self.factory() as session:
            rows = await session.execute(
                select(IncidentEvent.type)
                .where(IncidentEvent.incident_id == incident_id)
                .order_by(IncidentEvent.id)
            )
            return list(rows.scalars())


@pytest.fixture
async def world(
    committed_db: str, fake_twilio: FakeTwilio, clock: FrozenClock
) -> AsyncIterator[World]:
    settings = twilio_settings(fake_twilio, public_base_url=BASE)
    engine: AsyncEngine = create_engine(committed_db, pool_size=5)
    factory = create_session_factory(engine)
    app = create_app(settings, database_url=committed_db, run_worker=False, clock=clock)
    app.state.runtime = Runtime(
        settings=settings,
        database_url=committed_db,
        engine=engine,
        session_factory=factory,
        clock=clock,
    )
    async with unit_of_work(factory) as session:
        dispatcher = await create_key(session, role="dispatcher", name="sos", centre="sos")
        await create_aed(session, at=offset(STOCKHOLM, bearing_deg=270, distance_m=250))
        people = [
            await create_volunteer(
                session,
                near=offset(STOCKHOLM, bearing_deg=90, distance_m=distance),
                language="en" if index % 2 == 0 else "sv",
                name=f"Volunteer {index}",
            )
            for index, distance in enumerate(INSIDE_M + OUTSIDE_M)
        ]
    worker = DispatchWorker(
        session_factory=factory, gateway=create_gateway(settings), settings=settings, clock=clock
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield World(client, fake_twilio, worker, factory, dispatcher, people)
    await worker.gateway.close()
    await engine.dispose()


def code_in(text: str) -> str:
    match = re.search(r"(?:YES|JA) (\d+)", text)
    assert match is not None, text
    return match.group(1)


async def test_alert_reply_roles_stand_down_and_cancel_end_to_end(world: World) -> None:
    response = await world.client.post(
        "/v1/incidents",
        headers=world.dispatcher,
        json={
            "external_ref": "CAD-E2E-1",
            "kind": "cardiac_arrest",
            "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
            "address": "Drottninggatan 1, Stockholm",
            "access_notes": "Door code 1234, 3rd floor",
        },
    )
    assert response.status_code == 201, response.text
    incident_id = response.json()["id"]
    assert response.json()["counts"]["alerted"] == 10

    alerts = await world.deliver_queue()
    assert len(alerts) == 10
    by_phone = {request.form["To"]: request for request in alerts}
    inside, outside = world.people[:10], world.people[10:]
    assert set(by_phone) == {person.phone for person in inside}
    assert not {person.phone for person in outside} & set(by_phone)
    if TWILIO_SPEC.is_file():
        assert [contract_violations(request) for request in alerts] == [[]] * 10
    for person in inside:
        body = by_phone[person.phone or ""].form["Body"]
        assert ("CPR ALERT" if person.language == "en" else "HLR-LARM") in body
        assert "Drottninggatan 1, Stockholm" in body
    codes = {person.id: code_in(by_phone[person.phone or ""].form["Body"]) for person in inside}

    for request in alerts:
        url, content, headers = world.fake.status_callback(request, "delivered")
        result = await world.client.post(url.removeprefix(BASE), content=content, headers=headers)
        assert result.status_code == 204
    assert (await world.counts(incident_id))["delivered"] == 10

    # 100 m east, AED 250 m west: detour 500 m > 100 m, nobody at the patient yet → CPR.
    first = await world.reply(inside[0], "YES")
    assert "start CPR" in first
    assert "https://maps.google.com/?q=" in first
    declined = await world.reply(inside[1], "no")
    assert "Tack" in declined
    # 200 m east: detour 500 m ≤ 600 m and someone is at the patient → AED.
    second = await world.reply(inside[2], f"ja {codes[inside[2].id]}")
    assert "Fetch the AED" in second
    assert "Centralstationen, Stockholm" in second
    # The second CPR slot fills: every slot is full, the rest are stood down.
    third = await world.reply(inside[3], f"{codes[inside[3].id]} YES")
    assert "starta HLR" in third
    counts = await world.counts(incident_id)
    assert (counts["accepted"], counts["declined"], counts["stood_down"]) == (3, 1, 6)
    stand_downs = await world.deliver_queue()
    assert {request.form["To"] for request in stand_downs} == {
        person.phone for person in inside[4:]
    }
    assert all(
        "do not need to go" in request.form["Body"] or "behöver inte gå" in request.form["Body"]
        for request in stand_downs
    )

    late = await world.reply(inside[4], "YES")
    assert "Do not go" in late
    withdrawn = await world.reply(inside[0], "WITHDRAW")
    assert "no longer on your way" in withdrawn
    arrived = await world.reply(inside[3], "FRAMME")
    assert "framme" in arrived
    view = await world.incident(incident_id)
    counts = view["counts"]  # type: ignore[assignment]
    assert (counts["accepted"], counts["withdrawn"], counts["arrived"]) == (2, 1, 1)  # type: ignore[index]
    responders = {r["volunteer_id"]: r["role"] for r in view["responders"]}  # type: ignore[attr-defined]
    assert responders == {str(inside[2].id): "aed", str(inside[3].id): "cpr"}

    cancelled = await world.client.post(
        f"/v1/incidents/{incident_id}/cancel",
        json={"reason": "ambulance on scene"},
        headers=world.dispatcher,
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    cancellations = await world.deliver_queue()
    assert {request.form["To"] for request in cancellations} == {
        inside[2].phone,
        inside[3].phone,
    }
    assert all(
        "cancelled" in request.form["Body"] or "avbrutet" in request.form["Body"]
        for request in cancellations
    )
    assert "ended" in await world.reply(inside[2], "ARRIVED")

    types = await world.event_types(incident_id)
    assert types[:2] == ["incident.created", "alerts.queued"]
    assert types.count("alert.delivery") >= 10
    for expected in (
        "alert.accepted",
        "alert.declined",
        "alerts.stood_down",
        "alert.withdrawn",
        "alert.arrived",
        "incident.cancelled",
    ):
        assert expected in types, expected
    assert types.count("alert.accepted") == 3
    assert len(world.fake.messages()) == 10 + 6 + 2
