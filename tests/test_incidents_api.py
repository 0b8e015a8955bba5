"""POST /v1/incidents and the read endpoints, as a dispatch centre and an admin see them."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, Incident, Message
from tests.factories import STOCKHOLM, create_aed, create_key, create_volunteer, offset


def incident_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_ref": f"CAD-{uuid.uuid4().hex[:10]}",
        "kind": "cardiac_arrest",
        "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
        "address": "Drottninggatan 1, Stockholm",
        "access_notes": "Door code 1234, 3rd floor",
    }
    body.update(overrides)
    return body


@pytest.fixture
async def dispatcher(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="dispatcher", name="SOS Alarm Stockholm")


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


async def count(session: AsyncSession, model: Any) -> int:
    return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_incident_alerts_volunteers_nearest_first_and_queues_their_sms(
    client: httpx.AsyncClient,
    session: AsyncSession,
    dispatcher: dict[str, str],
    admin: dict[str, str],
) -> None:
    far = await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=90, distance_m=400))
    near = await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=120))
    await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=900))

    response = await client.post("/v1/incidents", json=incident_body(), headers=dispatcher)

    assert response.status_code == 201, response.text
    incident = response.json()
    assert incident["status"] == "alerting"
    assert incident["not_alerted_reason"] is None
    assert incident["radius_m"] == 500
    assert incident["counts"]["alerted"] == 2
    assert response.headers["location"] == f"/v1/incidents/{incident['id']}"
    alerts = (await client.get(f"/v1/incidents/{incident['id']}/alerts", headers=admin)).json()
    assert [alert["volunteer_id"] for alert in alerts] == [str(near.id), str(far.id)]
    assert [alert["distance_m"] for alert in alerts] == [120, 400]
    assert all(alert["name"] is None and alert["phone"] is None for alert in alerts)
    messages = (
        (await session.execute(select(Message).where(Message.purpose == "alert"))).scalars().all()
    )
    assert {message.volunteer_id for message in messages} == {near.id, far.id}
    assert all(message.status == "queued" for message in messages)
    codes = {message.alert_id: message.body for message in messages}
    for alert in (await session.execute(select(Alert))).scalars():
        assert f"JA {alert.code}" in (codes[alert.id] or "")


@pytest.mark.parametrize(
    "case", ["alerting with an AED", "no eligible volunteers", "alert false", "duplicate"]
)
async def test_the_posts_answer_is_what_reading_the_incident_back_gives(
    client: httpx.AsyncClient, session: AsyncSession, dispatcher: dict[str, str], case: str
) -> None:
    """The POST builds its answer from what it holds (dispatch.views.new_incident_view)."""
    if case != "no eligible volunteers":
        for distance in (80, 160, 240):
            await create_volunteer(
                session, near=offset(STOCKHOLM, bearing_deg=45, distance_m=distance)
            )
        await create_aed(session, at=offset(STOCKHOLM, bearing_deg=180, distance_m=60))
    if case == "duplicate":
        first = await client.post("/v1/incidents", json=incident_body(), headers=dispatcher)
        assert first.status_code == 201, first.text
    body = incident_body(alert=case != "alert false", flags={"trauma": False})

    posted = await client.post("/v1/incidents", json=body, headers=dispatcher)

    assert posted.status_code == 201, posted.text
    read = await client.get(posted.headers["location"], headers=dispatcher)
    assert read.status_code == 200, read.text
    assert posted.json() == read.json()
    expected_status = "alerting" if case == "alerting with an AED" else "not_alerted"
    assert posted.json()["status"] == expected_status


async def test_same_external_ref_and_body_again_returns_the_stored_incident(
    client: httpx.AsyncClient, session: AsyncSession, dispatcher: dict[str, str]
) -> None:
    await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=10, distance_m=50))
    body = incident_body()
    first = await client.post("/v1/incidents", json=body, headers=dispatcher)
    reordered = dict(reversed(list(body.items())))
    reordered["flags"] = {"trauma": False}

    again = await client.post("/v1/incidents", json=reordered, headers=dispatcher)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert await count(session, Incident) == 1
    assert await count(session, Alert) == 1


async def test_same_external_ref_with_a_different_body_is_a_conflict(
    client: httpx.AsyncClient, session: AsyncSession, dispatcher: dict[str, str]
) -> None:
    body = incident_body()
    await client.post("/v1/incidents", json=body, headers=dispatcher)

    response = await client.post(
        "/v1/incidents", json={**body, "address": "Sveavägen 2"}, headers=dispatcher
    )

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert await count(session, Incident) == 1


async def test_another_centre_may_reuse_an_external_ref(
    client: httpx.AsyncClient, session: AsyncSession, dispatcher: dict[str, str]
) -> None:
    other = await create_key(session, role="dispatcher", name="SOS Alarm Göteborg")
    body = incident_body()
    first = await client.post("/v1/incidents", json=body, headers=dispatcher)
    second = await client.post("/v1/incidents", json=body, headers=other)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


async def test_a_dispatcher_sees_only_its_own_centres_incidents(
    client: httpx.AsyncClient,
    session: AsyncSession,
    dispatcher: dict[str, str],
    admin: dict[str, str],
) -> None:
    other = await create_key(session, role="dispatcher", name="SOS Alarm Göteborg")
    mine = (await client.post("/v1/incidents", json=incident_body(), headers=dispatcher)).json()
    theirs = (await client.post("/v1/incidents", json=incident_body(), headers=other)).json()

    assert (
        await client.get(f"/v1/incidents/{theirs['id']}", headers=dispatcher)
    ).status_code == 404
    listed = (await client.get("/v1/incidents", headers=dispatcher)).json()
    assert [item["id"] for item in listed["items"]] == [mine["id"]]
    everything = (await client.get("/v1/incidents", headers=admin)).json()
    assert {item["id"] for item in everything["items"]} == {mine["id"], theirs["id"]}


async def test_incident_list_pages_newest_first(
    client: httpx.AsyncClient,
    session: AsyncSession,
    dispatcher: dict[str, str],
    clock: FrozenClock,
) -> None:
    ids = []
    for _ in range(3):
        ids.append(
            (
                await client.post(
                    "/v1/incidents", json=incident_body(alert=False), headers=dispatcher
                )
            ).json()["id"]
        )
        clock.advance(timedelta(minutes=1))

    first = (await client.get("/v1/incidents?limit=2", headers=dispatcher)).json()
    second = (
        await client.get(f"/v1/incidents?limit=2&cursor={first['next_cursor']}", headers=dispatcher)
    ).json()

    assert [item["id"] for item in first["items"]] == ids[:0:-1]
    assert [item["id"] for item in second["items"]] == ids[:1]
    assert second["next_cursor"] is None


async def test_nearest_open_aed_is_stored_and_returned(
    client: httpx.AsyncClient, session: AsyncSession, dispatcher: dict[str, str]
) -> None:
    await create_aed(
        session, at=offset(STOCKHOLM, bearing_deg=0, distance_m=150), status="out_of_service"
    )
    await create_aed(
        session,
        at=offset(STOCKHOLM, bearing_deg=0, distance_m=180),
        access=[{"days": ["sat", "sun"], "start": "10:00", "end": "16:00"}],
    )
    open_one = await create_aed(
        session, at=offset(STOCKHOLM, bearing_deg=200, distance_m=210), address="Sergels torg"
    )
    await create_aed(session, at=offset(STOCKHOLM, bearing_deg=0, distance_m=1200))

    incident = (await client.post("/v1/incidents", json=incident_body(), headers=dispatcher)).json()

    assert incident["nearest_aed"] == {
        "id": str(open_one.id),
        "distance_m": 210,
        "address": "Sergels torg",
        "description": "Main hall by the ticket office, cabinet code 1234",
    }
    # Stored with the incident (its INSERT looked the AED up): read back the same.
    read = await client.get(f"/v1/incidents/{incident['id']}", headers=dispatcher)
    assert read.json()["nearest_aed"] == incident["nearest_aed"]
    stored = await session.get(Incident, uuid.UUID(incident["id"]))
    assert stored is not None
    assert (stored.nearest_aed_id, stored.aed_slots) == (open_one.id, 1)


async def test_no_aed_within_the_search_radius_gives_none(
    client: httpx.AsyncClient, session: AsyncSession, dispatcher: dict[str, str]
) -> None:
    await create_aed(session, at=offset(STOCKHOLM, bearing_deg=0, distance_m=1010))
    incident = (await client.post("/v1/incidents", json=incident_body(), headers=dispatcher)).json()
    assert incident["nearest_aed"] is None
    stored = await session.get(Incident, uuid.UUID(incident["id"]))
    assert stored is not None
    assert (stored.nearest_aed_id, stored.nearest_aed_distance_m, stored.aed_slots) == (
        None,
        None,
        0,
    )


async def test_alerts_record_location_source_and_aed_detour(
    client: httpx.AsyncClient,
    session: AsyncSession,
    dispatcher: dict[str, str],
    admin: dict[str, str],
) -> None:
    await create_aed(session, at=offset(STOCKHOLM, bearing_deg=0, distance_m=200))
    beside_aed = await create_volunteer(
        session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=250)
    )
    opposite = await create_volunteer(
        session, near=offset(STOCKHOLM, bearing_deg=180, distance_m=250)
    )

    incident = (await client.post("/v1/incidents", json=incident_body(), headers=dispatcher)).json()
    alerts = {
        alert["volunteer_id"]: alert
        for alert in (
            await client.get(f"/v1/incidents/{incident['id']}/alerts", headers=admin)
        ).json()
    }

    assert alerts[str(beside_aed.id)]["location_source"] == "place"
    assert alerts[str(beside_aed.id)]["aed_detour_m"] == 0
    assert alerts[str(opposite.id)]["aed_detour_m"] == 400


async def test_unknown_incident_is_404_problem(
    client: httpx.AsyncClient, dispatcher: dict[str, str]
) -> None:
    response = await client.get(f"/v1/incidents/{uuid.uuid4()}", headers=dispatcher)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_admin_key_cannot_create_incidents(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post("/v1/incidents", json=incident_body(), headers=admin)
    assert response.status_code == 403


async def test_without_a_key_incidents_are_401(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/incidents", json=incident_body())).status_code == 401
    assert (await client.get("/v1/incidents")).status_code == 401
