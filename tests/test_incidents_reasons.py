"""Every reason an incident is not alerted, with the spec's code, and bad input refused."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, Incident, Message
from app.core.settings import Settings
from dispatch.alerting import SCENE_FLAGS, NewIncident, create_incident
from geo.points import LatLon
from tests.factories import STOCKHOLM, create_key, create_volunteer, make_settings, offset


def new_incident(**overrides: Any) -> NewIncident:
    fields: dict[str, Any] = {
        "external_ref": f"CAD-{uuid.uuid4().hex[:10]}",
        "kind": "cardiac_arrest",
        "location": STOCKHOLM,
        "address": "Drottninggatan 1, Stockholm",
    }
    fields.update(overrides)
    return NewIncident(**fields)


async def post(
    session: AsyncSession,
    request: NewIncident,
    *,
    settings: Settings,
    now: datetime,
    centre: str = "sos",
) -> Incident:
    return (
        await create_incident(session, centre=centre, request=request, settings=settings, now=now)
    ).incident


@pytest.fixture
async def volunteer_nearby(session: AsyncSession) -> None:
    await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=100))


async def alert_count(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(Alert))).scalar_one()


@pytest.mark.usefixtures("volunteer_nearby")
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"kind": "drowning"}, "kind_not_alertable"),
        ({"alert": False}, "alert_false"),
        *(
            ({"flags": {**dict.fromkeys(SCENE_FLAGS, False), name: True}}, f"flag:{name}")
            for name in SCENE_FLAGS
        ),
        ({"kind": "choking", "flags": {"trauma": True}}, "kind_not_alertable"),
    ],
)
async def test_rules_before_selection_store_the_incident_unalerted(
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    incident = await post(session, new_incident(**overrides), settings=settings, now=clock.now())
    assert (incident.status, incident.not_alerted_reason) == ("not_alerted", reason)
    assert await alert_count(session) == 0


@pytest.mark.usefixtures("volunteer_nearby")
async def test_alertable_kinds_come_from_the_settings(
    session: AsyncSession, clock: FrozenClock
) -> None:
    settings = make_settings(alertable_kinds="cardiac_arrest,drowning")
    incident = await post(
        session, new_incident(kind="drowning"), settings=settings, now=clock.now()
    )
    assert incident.status == "alerting"


@pytest.mark.usefixtures("volunteer_nearby")
async def test_incident_outside_the_service_area_is_not_alerted(
    session: AsyncSession, clock: FrozenClock, tmp_path: Path
) -> None:
    area = tmp_path / "area.geojson"
    area.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [
                                    [17.5, 59.0],
                                    [18.5, 59.0],
                                    [18.5, 59.6],
                                    [17.5, 59.6],
                                    [17.5, 59.0],
                                ]
                            ],
                        },
                    }
                ],
            }
        )
    )
    settings = make_settings(service_area=area)
    inside = await post(session, new_incident(), settings=settings, now=clock.now())
    outside = await post(
        session, new_incident(location=LatLon(57.7, 11.97)), settings=settings, now=clock.now()
    )
    assert inside.status == "alerting"
    assert (outside.status, outside.not_alerted_reason) == ("not_alerted", "outside_service_area")


@pytest.mark.usefixtures("volunteer_nearby")
@pytest.mark.parametrize(
    ("utc", "quiet"),
    [
        (datetime(2026, 11, 24, 22, 0, tzinfo=UTC), True),  # 23:00 Stockholm
        (datetime(2026, 11, 25, 5, 59, tzinfo=UTC), True),  # 06:59
        (datetime(2026, 11, 25, 6, 0, tzinfo=UTC), False),  # 07:00
        (datetime(2026, 11, 24, 21, 59, tzinfo=UTC), False),  # 22:59
    ],
)
async def test_quiet_hours_cross_midnight_in_the_service_time_zone(
    session: AsyncSession, utc: datetime, quiet: bool
) -> None:
    settings = make_settings(quiet_hours="23:00-07:00")
    incident = await post(session, new_incident(), settings=settings, now=utc)
    assert incident.not_alerted_reason == ("quiet_hours" if quiet else None)


@pytest.mark.usefixtures("volunteer_nearby")
async def test_second_call_nearby_within_the_window_is_a_duplicate(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    first = await post(session, new_incident(), settings=settings, now=clock.now())
    clock.advance(timedelta(minutes=9))
    near = offset(STOCKHOLM, bearing_deg=90, distance_m=99)
    second = await post(session, new_incident(location=near), settings=settings, now=clock.now())
    other_centre = await post(
        session, new_incident(location=near), settings=settings, now=clock.now(), centre="other"
    )
    farther = await post(
        session,
        new_incident(location=offset(STOCKHOLM, bearing_deg=90, distance_m=101)),
        settings=settings,
        now=clock.now(),
    )

    assert (second.status, second.not_alerted_reason, second.duplicate_of) == (
        "not_alerted",
        "duplicate",
        first.id,
    )
    assert other_centre.not_alerted_reason != "duplicate"
    assert farther.not_alerted_reason != "duplicate"


@pytest.mark.usefixtures("volunteer_nearby")
async def test_a_call_after_the_duplicate_window_is_a_new_incident(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    await post(session, new_incident(), settings=settings, now=clock.now())
    clock.advance(timedelta(minutes=10, seconds=1))
    later = await post(session, new_incident(), settings=settings, now=clock.now())
    assert later.not_alerted_reason != "duplicate"


async def test_nobody_in_range_is_no_eligible_volunteers(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    await create_volunteer(session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=600))
    incident = await post(session, new_incident(), settings=settings, now=clock.now())
    assert (incident.status, incident.not_alerted_reason) == (
        "not_alerted",
        "no_eligible_volunteers",
    )


VALID: dict[str, Any] = {
    "external_ref": "CAD-1",
    "kind": "cardiac_arrest",
    "location": {"lat": 59.3326, "lon": 18.0649},
    "address": "Drottninggatan 1, Stockholm",
}


def without(name: str) -> dict[str, Any]:
    return {key: value for key, value in VALID.items() if key != name}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**VALID, "location": {"lat": 90.5, "lon": 18.0}}, "location.lat"),
        ({**VALID, "location": {"lat": 59.0, "lon": -180.01}}, "location.lon"),
        ({**VALID, "location": {"lat": "59.3", "lon": 18.0}}, "location.lat"),
        ({**VALID, "location": {"lat": "NaN", "lon": 18.0}}, "location.lat"),
        ({**VALID, "location": {"lat": 59.3}}, "location.lon"),
        ({**VALID, "kind": "heart_attack"}, "kind"),
        ({**VALID, "flags": {"drunk": True}}, "flags.drunk"),
        ({**VALID, "flags": {"trauma": "maybe"}}, "flags.trauma"),
        ({**VALID, "priority": 1}, "priority"),
        ({**VALID, "address": "   "}, "address"),
        ({**VALID, "external_ref": "x" * 201}, "external_ref"),
        (without("external_ref"), "external_ref"),
        (without("kind"), "kind"),
        (without("location"), "location"),
        (without("address"), "address"),
    ],
)
async def test_invalid_incident_is_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient, session: AsyncSession, body: dict[str, Any], field: str
) -> None:
    headers = await create_key(session, role="dispatcher", name="sos")
    response = await client.post("/v1/incidents", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]
    assert (await session.execute(select(func.count()).select_from(Incident))).scalar_one() == 0


async def test_nan_literal_and_non_json_bodies_are_refused(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    headers = await create_key(session, role="dispatcher", name="sos")
    nan = json.dumps(VALID).replace("59.3326", "NaN")
    json_headers = {**headers, "Content-Type": "application/json"}
    assert (await client.post("/v1/incidents", content=nan, headers=json_headers)).status_code in (
        400,
        422,
    )
    broken = await client.post("/v1/incidents", content=b'{"external_ref": ', headers=json_headers)
    assert broken.status_code == 400
    text_body = await client.post(
        "/v1/incidents", content=b"hello", headers={**headers, "Content-Type": "text/plain"}
    )
    assert text_body.status_code == 415
    assert (await session.execute(select(func.count()).select_from(Incident))).scalar_one() == 0


async def test_oversized_body_is_413_and_stores_nothing(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await create_key(session, role="dispatcher", name="sos")
    body = {**VALID, "access_notes": "x" * (settings.max_body_bytes + 1)}
    response = await client.post("/v1/incidents", json=body, headers=headers)
    assert response.status_code == 413
    assert (await session.execute(select(func.count()).select_from(Message))).scalar_one() == 0
    assert (await session.execute(select(func.count()).select_from(Incident))).scalar_one() == 0
