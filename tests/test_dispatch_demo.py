"""`responder demo` builds the same region every time and never twice."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Aed, Certification, Place
from app.core.settings import Settings
from dispatch.demo import load_demo


async def test_demo_region_loads_eligible_volunteers_and_aeds_once(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    first = await load_demo(session, now=clock.now(), settings=settings, volunteers=120)
    second = await load_demo(session, now=clock.now(), settings=settings, volunteers=120)

    assert (first.volunteers_added, first.aeds_added) == (120, 12)
    assert (second.volunteers_added, second.aeds_added, second.volunteers_total) == (0, 0, 120)
    verified = await session.scalar(select(func.count()).where(Certification.status == "verified"))
    assert verified == 120
    assert (await session.scalar(select(func.count()).select_from(Place))) >= 120
    assert (await session.scalar(select(func.count()).select_from(Aed))) == 12
