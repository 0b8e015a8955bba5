"""Candidate selection measured in SQL alone, beside its floor and a naive baseline.

- *floor*: the bare radius + nearest-first query (``ST_DWithin`` + ``<->`` on the
  places' GiST index, no rules) driven by ``pgbench``: what PostgreSQL can do at best
  on the same table, with no Python in the loop.
- *no index*: the same statement with index scans disabled (``PGOPTIONS``): what the
  query costs when the spatial index is missing or unusable.
- *naive ORM*: the textbook application implementation: load the places in the
  radius's bounding box with their volunteers and certifications through the ORM,
  apply the rules and a haversine distance in Python, sort, keep 30.
- *selection*: the service's own candidate query (``dispatch.selection``), all rules.

Every variant draws from the same incident points, stored in ``bench.incident_point``
so that pgbench can pick them by number.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from geoalchemy2 import Geography
from sqlalchemy import cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import sync_url
from app.core.models import Certification, Place, Volunteer
from app.core.schedule import minute_of_week
from app.embedded import find_bin_dir
from app.registry.eligibility import QUALIFYING_KINDS

FLOOR_SQL = """
SELECT volunteer_id FROM place
WHERE ST_DWithin(location, (SELECT geog FROM bench.incident_point WHERE id = :i), {radius})
ORDER BY location <-> (SELECT geog FROM bench.incident_point WHERE id = :i)
LIMIT {limit};
"""
NO_INDEX_OPTIONS = "-c enable_indexscan=off -c enable_bitmapscan=off -c enable_indexonlyscan=off"
EARTH_RADIUS_M = 6_371_008.8


async def store_incident_points(url: str, points: Sequence[tuple[float, float]]) -> None:
    """(Re)create ``bench.incident_point``: numbered from 1, outside the app's schema."""
    connection = await asyncpg.connect(sync_url(url))
    try:
        await connection.execute(
            "CREATE SCHEMA IF NOT EXISTS bench;"
            "DROP TABLE IF EXISTS bench.incident_point;"
            "CREATE TABLE bench.incident_point (id int PRIMARY KEY, lat float8, lon float8,"
            " geog geography(Point, 4326))"
        )
        await connection.executemany(
            "INSERT INTO bench.incident_point VALUES"
            " ($1, $2, $3, ST_SetSRID(ST_MakePoint($3, $2), 4326)::geography)",
            [(number, lat, lon) for number, (lat, lon) in enumerate(points, start=1)],
        )
        await connection.execute("ANALYZE bench.incident_point")
    finally:
        await connection.close()


def pgbench_latencies_ms(
    url: str,
    *,
    points: int,
    transactions: int,
    radius_m: float,
    limit: int,
    options: str = "",
) -> list[float]:
    """Per-statement latencies (ms) of the floor query from pgbench's transaction log."""
    pgbench = find_bin_dir() / "pgbench"
    script = f"\\set i random(1, {points})\n" + FLOOR_SQL.format(radius=radius_m, limit=limit)
    with tempfile.TemporaryDirectory(prefix="responder-pgbench-") as work:
        script_path = Path(work) / "floor.sql"
        script_path.write_text(script)
        env = {**os.environ, "PGOPTIONS": options} if options else dict(os.environ)
        subprocess.run(  # noqa: S603 - fixed binary, our own arguments
            [
                str(pgbench),
                "--no-vacuum",
                "--protocol=prepared",
                "--client=1",
                f"--transactions={transactions}",
                f"--file={script_path}",
                "--log",
                f"--log-prefix={Path(work) / 'log'}",
                sync_url(url),
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=work,
        )
        latencies: list[float] = []
        for log in Path(work).glob("log*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                latencies.append(int(fields[2]) / 1000.0)
    return latencies


def _haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


_POINT = re.compile(r"POINT\(([-0-9.e]+) ([-0-9.e]+)\)")


async def naive_orm_candidates(
    session: AsyncSession,
    *,
    lat: float,
    lon: float,
    radius_m: float,
    limit: int,
    now: datetime,
) -> list[tuple[float, Any]]:
    """The textbook implementation the real query is compared with (places only)."""
    dlat = radius_m / 111_320.0
    dlon = radius_m / (111_320.0 * math.cos(math.radians(lat)))
    box = cast(
        func.ST_MakeEnvelope(lon - dlon, lat - dlat, lon + dlon, lat + dlat, 4326), Geography
    )
    rows = (
        await session.execute(
            select(Place, Volunteer, func.ST_AsText(Place.location))
            .join(Volunteer, Volunteer.id == Place.volunteer_id)
            .where(Place.location.op("&&")(box))
        )
    ).all()
    volunteer_ids = {volunteer.id for _, volunteer, _ in rows}
    certifications = (
        (
            await session.execute(
                select(Certification).where(Certification.volunteer_id.in_(volunteer_ids))
            )
        )
        .scalars()
        .all()
        if volunteer_ids
        else []
    )
    today = now.date()
    certified = {
        c.volunteer_id
        for c in certifications
        if c.status == "verified" and c.kind in QUALIFYING_KINDS and c.expires_on >= today
    }
    best: dict[Any, float] = {}
    for place, volunteer, wkt in rows:
        if volunteer.status != "active" or volunteer.opted_out or volunteer.id not in certified:
            continue
        if volunteer.paused_until is not None and volunteer.paused_until > now:
            continue
        if place.active_minutes is not None:
            minute = minute_of_week(now, ZoneInfo(place.timezone))
            if not any(r.lower <= minute < r.upper for r in place.active_minutes):
                continue
        match = _POINT.match(wkt)
        assert match is not None
        distance = _haversine_m(lat, lon, float(match.group(2)), float(match.group(1)))
        if distance <= radius_m and distance < best.get(volunteer.id, math.inf):
            best[volunteer.id] = distance
    return sorted((d, v) for v, d in best.items())[:limit]


async def time_in_rolled_back_sessions(
    factory: async_sessionmaker[AsyncSession],
    points: Sequence[tuple[float, float]],
    query: Callable[[AsyncSession, float, float], Awaitable[object]],
    *,
    transaction_open: bool = True,
    set_up: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> list[float]:
    """Latency (ms) of ``query`` at each point, each in its own rolled-back transaction.

    With ``transaction_open`` the clock starts once the transaction has begun (pool
    checkout and ``BEGIN`` done), as in the service, where selection runs inside the
    incident's open transaction; without it they are part of the figure. ``set_up``
    runs in the transaction before the clock starts (and begins it).
    """
    latencies = []
    for lat, lon in points:
        async with factory() as session:
            if set_up is not None:
                await set_up(session)
            elif transaction_open:
                await session.execute(text("SELECT 1"))
            started = time.perf_counter()
            await query(session, lat, lon)
            latencies.append((time.perf_counter() - started) * 1000)
            await session.rollback()
    return latencies
