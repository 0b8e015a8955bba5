"""The 500 m rule is geodesic on WGS84, checked against geographiclib (not PostGIS).

Volunteers stand 499 m and 501 m from the incident along eight bearings, at the
equator and at the latitudes of Malmö, Stockholm and Kiruna, registered either as
a home place or as a fresh live location: exactly those inside are alerted, and the
distance recorded on their alert is the geodesic one.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.settings import Settings
from dispatch.selection import select_candidates
from geo.points import LatLon
from tests.factories import create_volunteer, geodesic_distance_m, offset

LATITUDES = {"equator": 0.0, "malmo": 55.6, "stockholm": 59.3, "kiruna": 67.8}
BEARINGS = [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0, 22.5, 292.5]


@pytest.mark.parametrize("latitude", LATITUDES.values(), ids=LATITUDES.keys())
@pytest.mark.parametrize("registered_as", ["place", "live"])
async def test_exactly_the_volunteers_within_500_m_are_alerted(
    session: AsyncSession,
    settings: Settings,
    clock: FrozenClock,
    latitude: float,
    registered_as: str,
) -> None:
    incident = LatLon(latitude, 18.0649)
    inside, outside = set(), set()
    for bearing in BEARINGS:
        for distance, bucket in ((499.0, inside), (501.0, outside)):
            at = offset(incident, bearing_deg=bearing, distance_m=distance)
            assert abs(geodesic_distance_m(incident, at) - distance) < 1e-6
            if registered_as == "place":
                volunteer = await create_volunteer(session, near=at)
            else:
                volunteer = await create_volunteer(
                    session, live_at=at, live_recorded_at=clock.now()
                )
            bucket.add(volunteer.id)

    candidates = await select_candidates(
        session, point=incident, settings=settings, now=clock.now(), limit=30
    )

    assert {candidate.volunteer_id for candidate in candidates} == inside
    assert {candidate.location_source for candidate in candidates} == {registered_as}
    for candidate in candidates:
        assert candidate.distance_m == pytest.approx(499.0, abs=0.01)


async def test_volunteers_are_ordered_by_geodesic_distance(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    incident = LatLon(67.8, 20.2)
    expected = []
    for distance, bearing in ((480.0, 90.0), (120.0, 10.0), (300.0, 200.0), (481.0, 0.0)):
        volunteer = await create_volunteer(
            session, near=offset(incident, bearing_deg=bearing, distance_m=distance)
        )
        expected.append((distance, volunteer.id))

    candidates = await select_candidates(
        session, point=incident, settings=settings, now=clock.now(), limit=30
    )

    assert [candidate.volunteer_id for candidate in candidates] == [
        volunteer_id for _, volunteer_id in sorted(expected)
    ]
