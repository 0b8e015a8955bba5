"""The recorded selection and /explain: why each volunteer in the radius was or was not alerted."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, Incident, SelectionRecord
from app.core.settings import Settings
from dispatch.alerting import alert_more
from dispatch.selection import record_selection
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset
from tests.statements import count_cache_keys


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "external_ref": f"CAD-{uuid.uuid4().hex[:10]}",
        "kind": "cardiac_arrest",
        "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
        "address": "Drottninggatan 1, Stockholm",
        **overrides,
    }


def at(distance_m: float, bearing_deg: float = 0.0) -> Any:
    return offset(STOCKHOLM, bearing_deg=bearing_deg, distance_m=distance_m)


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


@pytest.fixture
async def dispatcher(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="dispatcher", name="sos")


async def explain(
    client: httpx.AsyncClient, headers: dict[str, str], incident_id: str, volunteer_id: object
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/incidents/{incident_id}/explain",
        params={"volunteer_id": str(volunteer_id)},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_explain_names_the_first_rule_that_excluded_each_volunteer(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    admin: dict[str, str],
    dispatcher: dict[str, str],
) -> None:
    now = clock.now()
    settings.max_alerted = 1
    nearest = await create_volunteer(session, near=at(50))
    second = await create_volunteer(session, near=at(60, 90))
    suspended_and_paused = await create_volunteer(
        session, near=at(70), status="suspended", paused_until=now + timedelta(hours=1)
    )
    uncertified = await create_volunteer(session, near=at(80), certification=None)
    moved_away = await create_volunteer(
        session, near=at(90), live_at=at(3000), live_recorded_at=now
    )
    off_schedule = await create_volunteer(
        session,
        near=at(100),
        schedule=[{"days": ["sat"], "start": "08:00", "end": "09:00"}],
    )
    outside = await create_volunteer(session, near=at(700))
    cooling = await create_volunteer(session, near=at(110))
    earlier = (
        await client.post(
            "/v1/incidents",
            json=body(location={"lat": at(2000).lat, "lon": at(2000).lon}),
            headers=dispatcher,
        )
    ).json()
    assert earlier["not_alerted_reason"] == "no_eligible_volunteers"
    session.add(
        Alert(
            incident_id=uuid.UUID(earlier["id"]),
            volunteer_id=cooling.id,
            code="1111",
            distance_m=400,
            location_source="place",
            created_at=now - timedelta(minutes=5),
        )
    )
    await session.flush()

    incident = (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()

    expected = {
        nearest.id: ("alerted", 50),
        second.id: ("over_cap", 60),
        suspended_and_paused.id: ("not_active", 70),
        uncertified.id: ("no_valid_certification", 80),
        moved_away.id: ("no_usable_location", 90),
        off_schedule.id: ("no_usable_location", 100),
        cooling.id: ("cooldown", 110),
        outside.id: ("not_within_radius", None),
        uuid.uuid4(): ("not_within_radius", None),
    }
    for volunteer_id, (outcome, distance) in expected.items():
        answer = await explain(client, admin, incident["id"], volunteer_id)
        assert (answer["outcome"], answer["distance_m"]) == (outcome, distance), volunteer_id
        assert answer["selection_ran"] is True


async def test_explain_says_when_no_selection_ran(
    client: httpx.AsyncClient,
    session: AsyncSession,
    admin: dict[str, str],
    dispatcher: dict[str, str],
) -> None:
    volunteer = await create_volunteer(session, near=at(50))
    incident = (
        await client.post(
            "/v1/incidents", json=body(flags={"unsafe_scene": True}), headers=dispatcher
        )
    ).json()
    answer = await explain(client, admin, incident["id"], volunteer.id)
    assert answer["selection_ran"] is False
    assert answer["not_alerted_reason"] == "flag:unsafe_scene"


async def test_explain_is_for_admins_only(
    client: httpx.AsyncClient, session: AsyncSession, dispatcher: dict[str, str]
) -> None:
    incident = (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()
    response = await client.get(
        f"/v1/incidents/{incident['id']}/explain",
        params={"volunteer_id": str(uuid.uuid4())},
        headers=dispatcher,
    )
    assert response.status_code == 403


async def test_busy_volunteer_is_explained_as_busy(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    admin: dict[str, str],
    dispatcher: dict[str, str],
) -> None:
    volunteer = await create_volunteer(session, near=at(50))
    first = (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()
    alert = (
        await session.execute(select(Alert).where(Alert.volunteer_id == volunteer.id))
    ).scalar_one()
    alert.response, alert.role, alert.accepted_at = "accepted", "cpr", clock.now()
    await session.flush()
    clock.advance(timedelta(minutes=11))
    far_enough = at(300, 180)
    second = (
        await client.post(
            "/v1/incidents",
            json=body(location={"lat": far_enough.lat, "lon": far_enough.lon}),
            headers=dispatcher,
        )
    ).json()

    assert first["counts"]["alerted"] == 1
    assert second["not_alerted_reason"] == "no_eligible_volunteers"
    assert (await explain(client, admin, second["id"], volunteer.id))["outcome"] == "busy"


async def test_alert_more_tops_the_pending_up_to_the_cap_and_upgrades_the_record(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    dispatcher: dict[str, str],
) -> None:
    settings.max_alerted = 2
    volunteers = [
        await create_volunteer(session, near=at(distance)) for distance in (50, 60, 70, 80, 90)
    ]
    created = (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()
    incident = await session.get(Incident, uuid.UUID(created["id"]))
    assert incident is not None
    await record_selection(session, incident_id=incident.id, settings=settings, now=clock.now())
    assert await alert_more(session, incident=incident, settings=settings, now=clock.now()) == []
    await session.execute(
        update(Alert).where(Alert.incident_id == incident.id).values(response="declined")
    )

    more = await alert_more(session, incident=incident, settings=settings, now=clock.now())
    await record_selection(session, incident_id=incident.id, settings=settings, now=clock.now())

    assert [alert.volunteer_id for alert in more] == [volunteers[2].id, volunteers[3].id]
    records = dict(
        (
            await session.execute(
                select(SelectionRecord.volunteer_id, SelectionRecord.outcome).where(
                    SelectionRecord.incident_id == incident.id
                )
            )
        ).all()
    )
    assert records == {
        volunteers[0].id: "alerted",
        volunteers[1].id: "alerted",
        volunteers[2].id: "alerted",
        volunteers[3].id: "alerted",
        volunteers[4].id: "over_cap",
    }


async def test_recording_twice_changes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    dispatcher: dict[str, str],
) -> None:
    await create_volunteer(session, near=at(50))
    await create_volunteer(session, near=at(60), status="suspended")
    created = (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()
    incident_id = uuid.UUID(created["id"])

    first = await record_selection(
        session, incident_id=incident_id, settings=settings, now=clock.now()
    )
    again = await record_selection(
        session, incident_id=incident_id, settings=settings, now=clock.now()
    )

    assert (first, again) == (2, 0)


async def test_the_record_is_built_once_not_per_incident(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    dispatcher: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Built per call, the record's statement cost as much CPU as the incident's own
    handler, on the loop that sends the next incident's alerts (docs/benchmarks.md).
    Counts the statement cache keys computed; asserts no timing."""
    await create_volunteer(session, near=at(50))
    await create_volunteer(session, near=at(70), status="suspended")
    incident_ids = [
        uuid.UUID(
            (await client.post("/v1/incidents", json=body(), headers=dispatcher)).json()["id"]
        )
        for _ in range(2)
    ]
    computed = count_cache_keys(monkeypatch)
    per_record = []
    for incident_id in incident_ids:
        computed[0] = 0
        await record_selection(session, incident_id=incident_id, settings=settings, now=clock.now())
        per_record.append(computed[0])

    assert per_record[1] == 0, f"cache keys computed for the second record: {per_record}"
    outcomes = (
        await session.execute(
            select(SelectionRecord.outcome).where(SelectionRecord.incident_id == incident_ids[1])
        )
    ).scalars()
    assert sorted(outcomes) == ["cooldown", "not_active"]
