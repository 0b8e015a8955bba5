"""Live locations are a privacy liability: gone 24 h after the time they were recorded."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import FrozenClock
from app.core.models import LiveLocation
from app.core.settings import Settings
from dispatch.lifecycle import run_timers
from tests.factories import STOCKHOLM, create_key, create_volunteer

DAY = timedelta(hours=24)


async def stored_location(session: AsyncSession, volunteer_id: object) -> LiveLocation | None:
    return (
        await session.execute(
            select(LiveLocation)
            .where(LiveLocation.volunteer_id == volunteer_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def test_the_worker_purges_a_live_location_24_hours_after_it_was_recorded(
    client: httpx.AsyncClient,
    session: AsyncSession,
    session_factory: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    settings: Settings,
) -> None:
    volunteer = await create_volunteer(session)
    token = await create_key(session, role="volunteer", volunteer=volunteer)
    recorded_at = clock.now() - timedelta(minutes=5)
    answer = await client.put(
        "/v1/me/location",
        headers=token,
        json={
            "lat": STOCKHOLM.lat,
            "lon": STOCKHOLM.lon,
            "accuracy_m": 12,
            "recorded_at": recorded_at.isoformat(),
        },
    )
    assert answer.status_code == 200

    clock.set(recorded_at + DAY - timedelta(seconds=1))
    await run_timers(session_factory, now=clock.now(), settings=settings)
    assert await stored_location(session, volunteer.id) is not None

    clock.set(recorded_at + DAY + timedelta(seconds=1))
    await run_timers(session_factory, now=clock.now(), settings=settings)
    assert await stored_location(session, volunteer.id) is None


async def test_the_purge_follows_the_recorded_time_not_when_the_fix_arrived(
    session: AsyncSession,
    session_factory: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    settings: Settings,
) -> None:
    old = clock.now() - DAY - timedelta(minutes=1)
    fresh = clock.now() - timedelta(hours=23)
    stale = await create_volunteer(session, live_at=STOCKHOLM, live_recorded_at=old)
    recent = await create_volunteer(session, live_at=STOCKHOLM, live_recorded_at=fresh)

    await run_timers(session_factory, now=clock.now(), settings=settings)

    assert await stored_location(session, stale.id) is None
    assert await stored_location(session, recent.id) is not None
