"""AEDs and volunteer places: schedules, validation, imports (CSV and GeoJSON)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Aed, Place
from app.core.schedule import covers
from tests.factories import create_key, create_volunteer

CENTRALEN = {
    "location": {"lat": 59.3303, "lon": 18.0588},
    "address": "Centralstationen, Stockholm",
    "description": "Main hall by the ticket office, cabinet code 1234",
    "access": "always",
    "status": "active",
}
OFFICE_HOURS = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00", "end": "22:00"}]


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


async def test_an_aed_is_created_read_and_taken_out_of_service(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post("/v1/aeds", json=CENTRALEN, headers=admin)
    assert created.status_code == 201, created.text
    url = f"/v1/aeds/{created.json()['id']}"
    assert (await client.get(url, headers=admin)).json()["location"] == CENTRALEN["location"]
    changed = await client.patch(url, json={"status": "out_of_service"}, headers=admin)
    assert changed.json()["status"] == "out_of_service"
    assert changed.json()["address"] == CENTRALEN["address"]
    listed = await client.get("/v1/aeds", params={"status": "active"}, headers=admin)
    assert listed.json()["items"] == []


async def test_opening_hours_are_stored_as_minutes_of_the_week(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    created = await client.post(
        "/v1/aeds", json={**CENTRALEN, "access": OFFICE_HOURS}, headers=admin
    )
    assert created.json()["access"] == OFFICE_HOURS
    aed_id = uuid.UUID(created.json()["id"])
    monday_noon, saturday_noon = 12 * 60, 5 * 24 * 60 + 12 * 60
    open_at = await session.execute(
        select(
            covers(Aed.open_minutes, monday_noon), covers(Aed.open_minutes, saturday_noon)
        ).where(Aed.id == aed_id)
    )
    assert tuple(open_at.one()) == (True, False)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"access": [{"days": ["funday"], "start": "06:00", "end": "22:00"}]}, "access"),
        ({"access": [{"days": ["mon"], "start": "6:00", "end": "22:00"}]}, "access"),
        ({"access": [{"days": [], "start": "06:00", "end": "22:00"}]}, "access"),
        ({"access": "sometimes"}, "access"),
        ({"status": "broken"}, "status"),
        ({"location": {"lat": 59.3, "lon": 181}}, "location.lon"),
        ({"cabinet": "red"}, "cabinet"),
    ],
)
async def test_invalid_aeds_are_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    session: AsyncSession,
    changes: dict[str, object],
    field: str,
) -> None:
    response = await client.post("/v1/aeds", json={**CENTRALEN, **changes}, headers=admin)
    assert response.status_code == 422
    fields = [error["field"] for error in response.json()["errors"]]
    assert any(name.startswith(field) for name in fields), fields
    assert await session.scalar(select(func.count()).select_from(Aed)) == 0


async def test_patching_an_unknown_aed_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.patch(
        f"/v1/aeds/{uuid.uuid4()}", json={"status": "active"}, headers=admin
    )
    assert response.status_code == 404


async def test_csv_import_of_aeds_reports_bad_lines(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    body = (
        b"lat,lon,address,description,access,status\n"
        b"59.3303,18.0588,Centralstationen,By the ticket office,always,active\n"
        b'59.3326,18.0649,Drottninggatan 1,Lobby,"mon-fri 06:00-22:00; sat 10:00-16:00",\n'
        b"north,18.0,Nowhere,,always,active\n"
        b"59.1,18.1,Somewhere,,always,broken\n"
        b"59.2,18.2,Elsewhere,,sun-tue 25:00-01:00,active\n"
        b"95,18.2,Pole,,always,active\n"
    )
    response = await client.post(
        "/v1/aeds/import", content=body, headers={**admin, "Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    assert [(error["line"], error["field"]) for error in response.json()["errors"]] == [
        (4, "location"),
        (5, "status"),
        (6, "access"),
        (7, "location.lat"),
    ]
    access = await session.scalar(select(Aed.access).where(Aed.address == "Drottninggatan 1"))
    assert access == [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "06:00", "end": "22:00"},
        {"days": ["sat"], "start": "10:00", "end": "16:00"},
    ]


async def test_geojson_import_of_aeds_reports_bad_features(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    def feature(lon: float, lat: float, **properties: object) -> dict[str, object]:
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"address": "Somewhere", **properties},
        }

    document = {
        "type": "FeatureCollection",
        "features": [
            feature(18.0588, 59.3303, access=OFFICE_HOURS),
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": []}},
            feature(18.0, 59.0, status="lost"),
            feature(18.1, 59.1),
        ],
    }
    response = await client.post(
        "/v1/aeds/import",
        content=json.dumps(document).encode(),
        headers={**admin, "Content-Type": "application/geo+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    assert [(error["line"], error["field"]) for error in response.json()["errors"]] == [
        (1, "geometry"),
        (2, "status"),
    ]
    assert await session.scalar(select(func.count()).select_from(Aed)) == 2


async def test_an_import_that_is_not_geojson_is_refused_whole(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/aeds/import",
        content=b'{"type": "Feature"}',
        headers={**admin, "Content-Type": "application/geo+json"},
    )
    assert response.status_code == 422
    broken = await client.post(
        "/v1/aeds/import",
        content=b"{not json",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert broken.status_code == 422


async def test_a_place_with_a_schedule_crossing_midnight(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    body = {
        "label": "home",
        "location": {"lat": 59.3326, "lon": 18.0649},
        "timezone": "Europe/Stockholm",
        "schedule": [{"days": ["fri", "mon"], "start": "17:00", "end": "08:00"}],
    }
    created = await client.post(f"/v1/volunteers/{volunteer.id}/places", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["schedule"] == [
        {"days": ["mon", "fri"], "start": "17:00", "end": "08:00"}
    ]
    place_id = uuid.UUID(created.json()["id"])
    tuesday_7am, tuesday_9am = 24 * 60 + 7 * 60, 24 * 60 + 9 * 60
    covered = await session.execute(
        select(
            covers(Place.active_minutes, tuesday_7am), covers(Place.active_minutes, tuesday_9am)
        ).where(Place.id == place_id)
    )
    assert tuple(covered.one()) == (True, False)


async def test_a_place_without_schedule_or_zone_is_always_in_the_service_zone(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    body = {"label": "work", "location": {"lat": 59.0, "lon": 18.0}}
    created = await client.post(f"/v1/volunteers/{volunteer.id}/places", json=body, headers=admin)
    assert created.json()["timezone"] == "Europe/Stockholm"
    assert created.json()["schedule"] is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"location": {"lat": "59", "lon": 18}}, "location.lat"),
        ({"schedule": [{"days": ["mon"], "start": "17:00", "end": "24:00"}]}, "schedule.0.end"),
    ],
)
async def test_invalid_places_are_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    session: AsyncSession,
    changes: dict[str, object],
    field: str,
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    body = {"label": "home", "location": {"lat": 59.0, "lon": 18.0}, **changes}
    response = await client.post(f"/v1/volunteers/{volunteer.id}/places", json=body, headers=admin)
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_deleting_a_place(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    body = {"label": "home", "location": {"lat": 59.0, "lon": 18.0}}
    created = await client.post(f"/v1/volunteers/{volunteer.id}/places", json=body, headers=admin)
    url = f"/v1/volunteers/{volunteer.id}/places/{created.json()['id']}"
    assert (await client.delete(url, headers=admin)).status_code == 204
    assert (await client.delete(url, headers=admin)).status_code == 404
    listed = await client.get(f"/v1/volunteers/{volunteer.id}/places", headers=admin)
    assert listed.json() == []
