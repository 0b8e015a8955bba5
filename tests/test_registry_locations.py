"""Live locations: the app's single fix, the feed's bulk upload, races, and the purge."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.locations import MAX_BULK_ITEMS
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import LiveLocation, Volunteer
from app.registry.locations import LocationFix, purge_live_locations, record_location
from geo.points import latitude, longitude
from tests.factories import STOCKHOLM, create_key, create_volunteer


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def fix(
    clock: FrozenClock, *, ago: timedelta = timedelta(0), **changes: object
) -> dict[str, object]:
    return {
        "lat": STOCKHOLM.lat,
        "lon": STOCKHOLM.lon,
        "accuracy_m": 12,
        "recorded_at": stamp(clock.now() - ago),
        **changes,
    }


async def stored(
    session: AsyncSession, volunteer_id: uuid.UUID
) -> tuple[float, float, float, str] | None:
    row = (
        await session.execute(
            select(
                latitude(LiveLocation.location),
                longitude(LiveLocation.location),
                LiveLocation.accuracy_m,
                LiveLocation.source,
            ).where(LiveLocation.volunteer_id == volunteer_id)
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2], row[3])


@pytest.fixture
async def volunteer(session: AsyncSession) -> Volunteer:
    return await create_volunteer(session)


@pytest.fixture
async def token(session: AsyncSession, volunteer: Volunteer) -> dict[str, str]:
    return await create_key(session, role="volunteer", volunteer=volunteer)


@pytest.fixture
async def locator(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="locator", name="operator feed")


async def test_the_app_stores_a_fix_with_its_accuracy(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    volunteer: Volunteer,
    token: dict[str, str],
) -> None:
    response = await client.put("/v1/me/location", json=fix(clock), headers=token)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted"}
    assert await stored(session, volunteer.id) == (STOCKHOLM.lat, STOCKHOLM.lon, 12.0, "app")
    me = await client.get("/v1/me", headers=token)
    assert me.json()["location"]["accuracy_m"] == 12


async def test_an_older_fix_never_replaces_a_newer_one(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    volunteer: Volunteer,
    token: dict[str, str],
) -> None:
    await client.put("/v1/me/location", json=fix(clock, lat=59.0), headers=token)
    older = await client.put(
        "/v1/me/location", json=fix(clock, ago=timedelta(seconds=5), lat=58.0), headers=token
    )
    assert older.json() == {"status": "stale"}
    same_time = await client.put("/v1/me/location", json=fix(clock, lat=57.0), headers=token)
    assert same_time.json() == {"status": "stale"}
    location = await stored(session, volunteer.id)
    assert location is not None
    assert location[0] == 59.0


async def test_a_newer_feed_fix_replaces_the_apps_and_not_the_other_way(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    volunteer: Volunteer,
    token: dict[str, str],
    locator: dict[str, str],
) -> None:
    await client.put("/v1/me/location", json=fix(clock, ago=timedelta(minutes=1)), headers=token)
    item = {**fix(clock, lat=59.5), "volunteer_id": str(volunteer.id)}
    bulk = await client.post("/v1/locations/bulk", json={"locations": [item]}, headers=locator)
    assert bulk.json() == {"accepted": 1, "stale": [], "errors": []}
    assert (await stored(session, volunteer.id) or ())[3] == "feed"
    late = await client.put(
        "/v1/me/location", json=fix(clock, ago=timedelta(seconds=30)), headers=token
    )
    assert late.json() == {"status": "stale"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"lat": 90.5}, "lat"),
        ({"lon": -180.01}, "lon"),
        ({"lat": "59.33"}, "lat"),
        ({"accuracy_m": -1}, "accuracy_m"),
        ({"recorded_at": "2026-11-24T14:32:00"}, "recorded_at"),
        ({"altitude": 12}, "altitude"),
    ],
)
async def test_bad_fixes_are_422_naming_the_field_and_store_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    volunteer: Volunteer,
    token: dict[str, str],
    changes: dict[str, object],
    field: str,
) -> None:
    response = await client.put("/v1/me/location", json=fix(clock, **changes), headers=token)
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]
    assert await stored(session, volunteer.id) is None


async def test_nan_coordinates_are_422(
    client: httpx.AsyncClient, clock: FrozenClock, token: dict[str, str]
) -> None:
    recorded_at = stamp(clock.now())
    body = f'{{"lat": NaN, "lon": 18.0, "accuracy_m": 5, "recorded_at": "{recorded_at}"}}'
    response = await client.put(
        "/v1/me/location",
        content=body.encode(),
        headers={**token, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_fix_from_the_future_is_422(
    client: httpx.AsyncClient, clock: FrozenClock, token: dict[str, str]
) -> None:
    response = await client.put(
        "/v1/me/location", json=fix(clock, ago=-timedelta(minutes=10)), headers=token
    )
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["recorded_at"]


async def test_deleting_my_location_forgets_it(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    volunteer: Volunteer,
    token: dict[str, str],
) -> None:
    await client.put("/v1/me/location", json=fix(clock), headers=token)
    assert (await client.delete("/v1/me/location", headers=token)).status_code == 204
    assert await stored(session, volunteer.id) is None


async def test_pausing_and_resuming_availability(
    client: httpx.AsyncClient, clock: FrozenClock, token: dict[str, str]
) -> None:
    until = stamp(clock.now() + timedelta(hours=8))
    paused = await client.put("/v1/me/availability", json={"paused_until": until}, headers=token)
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused_until"] == until
    assert paused.json()["eligible"] is False
    resumed = await client.put("/v1/me/availability", json={"paused_until": None}, headers=token)
    assert resumed.json()["eligible"] is True
    assert (await client.put("/v1/me/availability", json={}, headers=token)).status_code == 422


async def test_bulk_reports_each_item_and_keeps_the_good_ones(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock, locator: dict[str, str]
) -> None:
    by_id = await create_volunteer(session)
    by_phone = await create_volunteer(session, phone="+46701234567")
    with_newer = await create_volunteer(session)
    session.add(
        LiveLocation(
            volunteer_id=with_newer.id,
            location="SRID=4326;POINT(18 59)",
            accuracy_m=5,
            recorded_at=clock.now(),
            source="app",
        )
    )
    await session.flush()
    items = [
        {**fix(clock), "volunteer_id": str(by_id.id)},
        {**fix(clock, lat=91), "volunteer_id": str(by_id.id)},
        {**fix(clock, accuracy_m=800), "phone": "070-123 45 67"},
        {**fix(clock), "volunteer_id": str(uuid.uuid4())},
        {**fix(clock, ago=timedelta(minutes=1)), "volunteer_id": str(with_newer.id)},
        {**fix(clock), "phone": "+46709999999"},
        {**fix(clock)},
        {**fix(clock, ago=timedelta(hours=25)), "volunteer_id": str(by_id.id)},
        "not an object",
        {**fix(clock, ago=timedelta(seconds=10)), "volunteer_id": str(by_id.id)},
    ]
    response = await client.post("/v1/locations/bulk", json={"locations": items}, headers=locator)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["stale"] == [4, 7, 9]
    assert [(error["index"], error["field"]) for error in body["errors"]] == [
        (1, "lat"),
        (3, "volunteer_id"),
        (5, "phone"),
        (6, None),
        (8, None),
    ]
    assert await stored(session, by_id.id) == (STOCKHOLM.lat, STOCKHOLM.lon, 12.0, "feed")
    assert await stored(session, by_phone.id) == (STOCKHOLM.lat, STOCKHOLM.lon, 800.0, "feed")


async def test_bulk_skips_erased_volunteers(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock, locator: dict[str, str]
) -> None:
    erased = await create_volunteer(session, status="erased")
    items = [{**fix(clock), "volunteer_id": str(erased.id)}]
    response = await client.post("/v1/locations/bulk", json={"locations": items}, headers=locator)
    assert response.json()["accepted"] == 0
    assert await stored(session, erased.id) is None


async def test_bulk_writes_ten_thousand_points_in_one_request(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock, locator: dict[str, str]
) -> None:
    await session.execute(
        Volunteer.__table__.insert(),
        [
            {
                "id": uuid.uuid4(),
                "name": "v",
                "phone": f"+4670{n:07d}",
                "language": "sv",
                "status": "active",
            }
            for n in range(MAX_BULK_ITEMS)
        ],
    )
    items = [
        {**fix(clock, lat=59 + n / 1e5), "phone": f"+4670{n:07d}"} for n in range(MAX_BULK_ITEMS)
    ]
    response = await client.post("/v1/locations/bulk", json={"locations": items}, headers=locator)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": MAX_BULK_ITEMS, "stale": [], "errors": []}
    assert await session.scalar(select(func.count()).select_from(LiveLocation)) == MAX_BULK_ITEMS


async def test_bulk_over_ten_thousand_points_is_refused_whole(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock, locator: dict[str, str]
) -> None:
    volunteer = await create_volunteer(session)
    items = [{**fix(clock), "volunteer_id": str(volunteer.id)}] * (MAX_BULK_ITEMS + 1)
    response = await client.post("/v1/locations/bulk", json={"locations": items}, headers=locator)
    assert response.status_code == 422
    assert await stored(session, volunteer.id) is None


async def test_live_locations_are_purged_a_day_after_they_were_recorded(
    session: AsyncSession, clock: FrozenClock
) -> None:
    old = await create_volunteer(
        session, live_at=STOCKHOLM, live_recorded_at=clock.now() - timedelta(hours=24, seconds=1)
    )
    fresh = await create_volunteer(
        session, live_at=STOCKHOLM, live_recorded_at=clock.now() - timedelta(hours=23)
    )
    purged = await purge_live_locations(session, now=clock.now(), retention=timedelta(hours=24))
    assert purged == 1
    assert await stored(session, old.id) is None
    assert await stored(session, fresh.id) is not None


async def test_racing_writers_keep_the_newest_fix_whoever_commits_last(
    committed_db: str, clock: FrozenClock
) -> None:
    """The feed's newer fix is in flight when the app's older one arrives: the older
    writer waits on the row, then its conditional upsert declines to overwrite."""
    engine = create_engine(committed_db, pool_size=3)
    factory = create_session_factory(engine)
    try:
        async with unit_of_work(factory) as setup:
            volunteer_id = (await create_volunteer(setup)).id
        newer = LocationFix(lat=59.5, lon=18.0, accuracy_m=5, recorded_at=clock.now())
        older = LocationFix(
            lat=58.0, lon=18.0, accuracy_m=5, recorded_at=clock.now() - timedelta(seconds=20)
        )
        retention = timedelta(hours=24)
        async with factory() as first, first.begin():
            assert await record_location(
                first,
                volunteer_id=volunteer_id,
                fix=newer,
                now=clock.now(),
                retention=retention,
                source="feed",
            )
            first_pid = await first.scalar(text("SELECT pg_backend_pid()"))

            async def second_writer() -> bool:
                async with unit_of_work(factory) as second:
                    return await record_location(
                        second,
                        volunteer_id=volunteer_id,
                        fix=older,
                        now=clock.now(),
                        retention=retention,
                    )

            racing = asyncio.create_task(second_writer())

            async def blocked_by_first() -> int:
                # A transaction of its own per look: within one transaction
                # pg_stat_activity is a snapshot, blind to a backend that connects later.
                async with engine.connect() as observer:
                    return int(
                        await observer.scalar(
                            text(
                                "SELECT count(*) FROM pg_stat_activity"
                                " WHERE :pid = ANY(pg_blocking_pids(pid))"
                            ),
                            {"pid": first_pid},
                        )
                        or 0
                    )

            async def second_waits_for_first() -> None:
                # Until the second writer queues on the row, however long a loaded
                # machine takes to start it; finishing first would be the defect.
                while not await blocked_by_first():
                    assert not racing.done(), "the second writer never waited for the first"
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(second_waits_for_first(), 120)
        assert await asyncio.wait_for(racing, 120) is False
        async with unit_of_work(factory) as check:
            assert await stored(check, volunteer_id) == (59.5, 18.0, 5.0, "feed")
    finally:
        await engine.dispose()


async def test_an_oversized_bulk_body_is_413_and_stores_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    clock: FrozenClock,
    locator: dict[str, str],
    volunteer: Volunteer,
) -> None:
    item = {**fix(clock), "volunteer_id": str(volunteer.id), "phone": None}
    padding = "x" * (6 * 1024 * 1024)
    body = json.dumps({"locations": [item], "padding": padding}).encode()
    response = await client.post(
        "/v1/locations/bulk",
        content=body,
        headers={**locator, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert await stored(session, volunteer.id) is None
