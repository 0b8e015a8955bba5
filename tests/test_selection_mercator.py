"""The candidate scans walk the Mercator indexes, and that order is nearest-first.

The scans order by distance in World Mercator (EPSG:3395) because its GiST index is
about three times cheaper to walk than the geography one; every radius decision
stays on the spheroid (``tests/test_geodesic.py``). Here: the Mercator order agrees
with the geodesic one (checked against geographiclib) to within 0.02 % of the
distance, the Mercator pre-filter radius never cuts into the spheroid disc, and the
statement's generic plan (the one the service runs) really uses both indexes.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.settings import Settings
from dispatch.selection import KNN_PLANNER_SETTINGS, candidate_statement
from geo.points import LatLon
from geo.search import mercator_radius_m
from tests.factories import geodesic_distance_m, offset

LATITUDES = {"equator": 0.0, "malmo": 55.6, "stockholm": 59.3, "kiruna": 67.8, "south": -45.0}
BEARINGS = [0.0, 22.5, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 292.5, 315.0]
DISTANCES_M = [1.0, 50.0, 250.0, 499.0, 501.0]

MERCATOR_DISTANCE = text(
    "SELECT ST_Distance("
    " ST_Transform(ST_SetSRID(ST_MakePoint(:lon1, :lat1), 4326), 3395),"
    " ST_Transform(ST_SetSRID(ST_MakePoint(:lon2, :lat2), 4326), 3395))"
)


@pytest.mark.parametrize("latitude", LATITUDES.values(), ids=LATITUDES.keys())
async def test_mercator_order_is_geodesic_order_to_two_in_ten_thousand(
    session: AsyncSession, latitude: float
) -> None:
    centre = LatLon(latitude, 18.0649)
    scale: list[float] = []
    for bearing in BEARINGS:
        for distance in DISTANCES_M:
            at = offset(centre, bearing_deg=bearing, distance_m=distance)
            planar = (
                await session.execute(
                    MERCATOR_DISTANCE,
                    {"lon1": centre.lon, "lat1": centre.lat, "lon2": at.lon, "lat2": at.lat},
                )
            ).scalar_one()
            geodesic = geodesic_distance_m(centre, at)
            scale.append(planar / geodesic)
            if geodesic <= 500.0:
                assert planar <= mercator_radius_m(500.0, latitude)

    # One scale factor for the whole disc, up to 4e-4 at 68 deg (2 tan(lat) * 500 m / R):
    # two volunteers whose geodesic distances differ by more than 20 cm at 500 m are
    # never swapped by the scan. (Geography's spherical <-> errs by up to 0.3 %.)
    assert max(scale) / min(scale) - 1 < 4e-4


async def test_the_generic_plan_walks_both_mercator_indexes(
    session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    """The plan the service runs (generic, prepared), not a custom one.

    A custom plan would hide the classic mistake: the SRID sent as a bind parameter
    makes the expression differ from the index's, and the generic plan then sorts
    the whole table (seconds). Sequential scans and sorts are penalised so that a
    nearly empty test table cannot make the ordered index scan look unnecessary.
    """
    statement, parameters = candidate_statement(
        point=LatLon(59.3326, 18.0649), settings=settings, now=clock.now(), limit=30
    )
    connection = await session.connection()
    compiled = statement.compile(dialect=connection.dialect).construct_expanded_state(parameters)
    arguments = [compiled.parameters[name] for name in compiled.positiontup or ()]
    assert all(not isinstance(value, timedelta) or value.days == 0 for value in arguments)
    literals = ", ".join("'" + str(value).replace("'", "''") + "'" for value in arguments)

    await session.execute(text(KNN_PLANNER_SETTINGS))
    await session.execute(
        text(
            "SELECT set_config('enable_seqscan', 'off', true),"
            " set_config('enable_sort', 'off', true)"
        )
    )
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    await driver.execute("PREPARE candidate_plan AS " + compiled.statement)
    try:
        rows = await driver.fetch(f"EXPLAIN (COSTS OFF) EXECUTE candidate_plan({literals})")
    finally:
        await driver.execute("DEALLOCATE candidate_plan")
    plan = "\n".join(row[0] for row in rows)

    for index in ("ix_live_location_mercator_recorded_at", "ix_place_location_mercator"):
        scan = plan.split(f"Index Scan using {index} on ", 1)
        assert len(scan) == 2, plan
        assert "Order By: (st_transform(geometry(location), 3395) <->" in scan[1], plan
    # Stale live positions are dropped inside the index, never fetched (0015).
    live_scan = plan.split("Index Scan using ix_live_location_mercator_recorded_at on ", 1)[1]
    index_condition = live_scan.split("Index Cond: ", 1)[1].splitlines()[0]
    assert "recorded_at >" in index_condition, plan
    # One nearest-first stream of both scans, stopped by one LIMIT: each scan reads
    # only as far as the merged stream needs, not `limit` rows of its own.
    merged = plan.split("Merge Append", 1)
    assert len(merged) == 2, plan
    assert "Limit" in merged[0].splitlines()[-1] or "Limit" in merged[0].splitlines()[-2], plan
    assert "$" in plan, "not the generic plan"
