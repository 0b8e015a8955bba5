"""Seed a metropolitan region of volunteers with set-based SQL (minutes for 1,000,000).

The region is Stockholm: every position is drawn around the centre point with a
radial density that falls off exponentially (a Gamma(2) radius, i.e. density per
square metre proportional to ``exp(-r / scale)``). Homes spread widest, workplaces
are denser in the centre, live positions in between, which gives about 1,500
registered places within 500 m of the centre and a tail through the suburbs to
~30 km. Calibrated so that the counts match the setting described in SPEC §7.

Everything is generated inside PostgreSQL (``generate_series`` + ``random()`` after
``setseed``), ids are ``md5`` of a stable name, so a seed is reproducible. Bulk
loading follows the usual recipe: secondary indexes are dropped, rows inserted
set-wise, indexes rebuilt once, then ``VACUUM (ANALYZE)``. All of it but the vacuum
runs in one transaction: an interrupted seed leaves the previous state intact.

Shares chosen so that each eligibility rule is exercised on the hot path (by
volunteer number ``i mod 100``): 2 % suspended, 2 % opted out, 1 % paused, 6 %
holding only an expired certification, 4 % pending, 1 % revoked, 2 % only a
non-qualifying first-aid course; the rest verified cpr / cpr_aed / healthcare
professional. Every volunteer has a home (no schedule: always); half have a
workplace with a weekday schedule (a fifth of those a night shift crossing
midnight); a fifth have a live location with varied accuracy (a tenth coarser than
the 250 m limit) and age (0–30 min, so about half are older than the 15 min limit).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from app.core.db import sync_url
from app.core.schedule import week_ranges
from app.migrate import migrations_dir, upgrade

CENTRE_LAT = 59.3326
CENTRE_LON = 18.0649
METRES_PER_DEGREE_LAT = 111_320.0
HOME_SCALE_M = 13_000.0
WORK_SCALE_M = 9_000.0
LIVE_SCALE_M = 8_000.0
AED_SCALE_M = 6_000.0
INCIDENT_SCALE_M = 2_500.0
AEDS_PER_MILLION = 800
ZONE = "Europe/Stockholm"

DAY_SHIFT = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00"}]
NIGHT_SHIFT = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "06:00"}]
AED_HOURS = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "start": "07:00", "end": "21:00"}]

SEEDED_TABLES = ("volunteer", "certification", "place", "live_location", "aed")


@dataclass(frozen=True)
class SeedReport:
    volunteers: int
    places: int
    places_within_500m_of_centre: int
    live_locations: int
    aeds: int
    seconds: float


def multirange_literal(windows: list[dict[str, Any]]) -> str:
    """A schedule as the ``int4multirange`` literal that ``app.core.schedule`` stores."""
    spans = ",".join(f"[{r.lower},{r.upper})" for r in week_ranges(windows))
    return "{" + spans + "}"


def _point_sql(scale_m: float) -> str:
    """A geography point at a Gamma(2) radius (``r``) and uniform bearing (``th``).

    Expects columns ``r1``, ``r2`` (uniform [0, 1)) and ``th`` in the FROM clause.
    """
    radius = f"(-{scale_m} * ln((1 - r1) * (1 - r2)))"
    lat = f"{CENTRE_LAT} + {radius} * cos(th) / {METRES_PER_DEGREE_LAT}"
    lon = (
        f"{CENTRE_LON} + {radius} * sin(th) / "
        f"({METRES_PER_DEGREE_LAT} * cos(radians({CENTRE_LAT})))"
    )
    return f"ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)::geography"


_RANDOMS = "random() AS r1, random() AS r2, 2 * pi() * random() AS th"


def _statements(volunteers: int) -> list[str]:
    n = volunteers
    aeds = max(20, AEDS_PER_MILLION * n // 1_000_000)
    day = json.dumps(DAY_SHIFT)
    night = json.dumps(NIGHT_SHIFT)
    hours = json.dumps(AED_HOURS)
    return [
        f"""
        INSERT INTO volunteer (id, name, phone, email, language, status, opted_out,
                               paused_until, consent_at, suspended_reason)
        SELECT md5('volunteer-' || i)::uuid,
               'Bench Volunteer ' || i,
               '+4670' || lpad(i::text, 7, '0'),
               NULL,
               CASE WHEN i % 5 = 0 THEN 'en' ELSE 'sv' END,
               CASE WHEN i % 100 < 2 THEN 'suspended' ELSE 'active' END,
               i % 100 IN (2, 3),
               CASE WHEN i % 100 = 4 THEN timestamptz '2100-01-01' END,
               timestamptz '2026-01-01',
               CASE WHEN i % 100 < 2 THEN 'bench' END
        FROM generate_series(1, {n}) AS i
        """,
        f"""
        INSERT INTO certification (id, volunteer_id, kind, issued_on, expires_on, issuer,
                                   reference, status, decided_by, decided_at)
        SELECT md5('certification-' || i)::uuid,
               md5('volunteer-' || i)::uuid,
               CASE WHEN i % 100 IN (16, 17) THEN 'first_aid'
                    WHEN i % 10 < 6 THEN 'cpr'
                    WHEN i % 10 < 9 THEN 'cpr_aed'
                    ELSE 'healthcare_professional' END,
               date '2024-01-01',
               CASE WHEN i % 100 BETWEEN 5 AND 10 THEN date '2025-06-01'
                    ELSE date '2027-01-01' + (i % 1000) END,
               'Swedish Resuscitation Council',
               'HLR-' || i,
               CASE WHEN i % 100 BETWEEN 11 AND 14 THEN 'pending'
                    WHEN i % 100 = 15 THEN 'revoked'
                    ELSE 'verified' END,
               'bench',
               timestamptz '2026-01-01'
        FROM generate_series(1, {n}) AS i
        """,
        f"""
        INSERT INTO certification (id, volunteer_id, kind, issued_on, expires_on, issuer,
                                   status, decided_by, decided_at)
        SELECT md5('old-certification-' || i)::uuid, md5('volunteer-' || i)::uuid, 'cpr',
               date '2020-01-01', date '2022-01-01', 'Swedish Resuscitation Council',
               'verified', 'bench', timestamptz '2020-01-01'
        FROM generate_series(1, {n}) AS i WHERE i % 10 = 9
        """,
        f"""
        INSERT INTO place (id, volunteer_id, label, location, timezone)
        SELECT md5('home-' || i)::uuid, md5('volunteer-' || i)::uuid, 'home',
               {_point_sql(HOME_SCALE_M)}, '{ZONE}'
        FROM (SELECT i, {_RANDOMS} FROM generate_series(1, {n}) AS i) AS s
        """,
        f"""
        INSERT INTO place (id, volunteer_id, label, location, timezone, schedule,
                           active_minutes)
        SELECT md5('work-' || i)::uuid, md5('volunteer-' || i)::uuid, 'work',
               {_point_sql(WORK_SCALE_M)}, '{ZONE}',
               CASE WHEN i % 10 = 0 THEN '{night}'::jsonb ELSE '{day}'::jsonb END,
               CASE WHEN i % 10 = 0 THEN '{multirange_literal(NIGHT_SHIFT)}'::int4multirange
                    ELSE '{multirange_literal(DAY_SHIFT)}'::int4multirange END
        FROM (SELECT i, {_RANDOMS} FROM generate_series(2, {n}, 2) AS i) AS s
        """,
        f"""
        INSERT INTO live_location (volunteer_id, location, accuracy_m, recorded_at, source)
        SELECT md5('volunteer-' || i)::uuid, {_point_sql(LIVE_SCALE_M)},
               CASE WHEN i % 50 = 0 THEN 300 + 1200 * random()
                    ELSE 5 + 60 * random() ^ 2 END,
               now() - random() * interval '30 minutes',
               CASE WHEN i % 25 = 0 THEN 'feed' ELSE 'app' END
        FROM (SELECT i, {_RANDOMS} FROM generate_series(5, {n}, 5) AS i) AS s
        """,
        f"""
        INSERT INTO aed (id, location, address, description, access, open_minutes, status)
        SELECT md5('aed-' || i)::uuid, {_point_sql(AED_SCALE_M)},
               'AED ' || i || ', Stockholm', 'Cabinet by the entrance, code ' || (1000 + i),
               CASE WHEN i % 10 = 0 THEN '{hours}'::jsonb ELSE '"always"'::jsonb END,
               CASE WHEN i % 10 = 0 THEN '{multirange_literal(AED_HOURS)}'::int4multirange END,
               CASE WHEN i % 20 = 7 THEN 'out_of_service' ELSE 'active' END
        FROM (SELECT i, {_RANDOMS} FROM generate_series(1, {aeds}) AS i) AS s
        """,
    ]


_SECONDARY_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) AS ddl, i.indexrelid::regclass::text AS name
FROM pg_index AS i
JOIN pg_class AS t ON t.oid = i.indrelid
WHERE t.relname = ANY($1::text[])
  AND t.relnamespace = 'public'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
"""


async def seed(url: str, *, volunteers: int, random_seed: float = 0.42) -> SeedReport:
    """Replace the region's volunteers, places, live locations and AEDs with a fresh one.

    Incidents, alerts and messages that reference volunteers are removed with them.
    """
    started = time.perf_counter()
    connection = await asyncpg.connect(sync_url(url))
    try:
        await connection.execute("SET maintenance_work_mem = '1GB'")
        await connection.execute("SET synchronous_commit = off")
        async with connection.transaction():
            await connection.execute(
                "TRUNCATE "
                + ", ".join(SEEDED_TABLES)
                + ", incident, alert, message, selection_record, incident_event CASCADE"
            )
            indexes = await connection.fetch(_SECONDARY_INDEXES, list(SEEDED_TABLES))
            for index in indexes:
                await connection.execute(f"DROP INDEX {index['name']}")
            await connection.execute("SELECT setseed($1)", random_seed)
            for statement in _statements(volunteers):
                await connection.execute(statement)
            for index in indexes:
                await connection.execute(index["ddl"])
        for table in SEEDED_TABLES:
            await connection.execute(f"VACUUM (ANALYZE) {table}")
        counts = await connection.fetchrow(
            """
            SELECT (SELECT count(*) FROM volunteer) AS volunteers,
                   (SELECT count(*) FROM place) AS places,
                   (SELECT count(*) FROM place
                     WHERE ST_DWithin(location,
                                      ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography,
                                      500)) AS central,
                   (SELECT count(*) FROM live_location) AS live,
                   (SELECT count(*) FROM aed) AS aeds
            """,
            CENTRE_LON,
            CENTRE_LAT,
        )
    finally:
        await connection.close()
    assert counts is not None
    return SeedReport(
        volunteers=counts["volunteers"],
        places=counts["places"],
        places_within_500m_of_centre=counts["central"],
        live_locations=counts["live"],
        aeds=counts["aeds"],
        seconds=round(time.perf_counter() - started, 1),
    )


def schema_fingerprint() -> str:
    """A hash of every migration file: the pre-release schema is edited in place."""
    digest = hashlib.sha256()
    for path in sorted(migrations_dir().glob("versions/*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def prepare_schema(url: str) -> bool:
    """Migrate to head; rebuild from scratch if the migrations changed since the last run.

    While ``0002_schema.py`` is edited in place, ``alembic upgrade`` alone would keep a
    stale schema, so the bench database remembers the fingerprint it was built from
    (in its own ``bench`` schema). True when the schema was rebuilt (seed again).
    """
    wanted = schema_fingerprint()

    async def stored() -> str | None:
        connection = await asyncpg.connect(sync_url(url))
        try:
            await connection.execute(
                "CREATE SCHEMA IF NOT EXISTS bench;"
                "CREATE TABLE IF NOT EXISTS bench.meta (key text PRIMARY KEY, value text)"
            )
            value = await connection.fetchval("SELECT value FROM bench.meta WHERE key = 'schema'")
            if value != wanted:
                await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            return str(value) if value else None
        finally:
            await connection.close()

    async def remember() -> None:
        connection = await asyncpg.connect(sync_url(url))
        try:
            await connection.execute(
                "INSERT INTO bench.meta VALUES ('schema', $1)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                wanted,
            )
        finally:
            await connection.close()

    rebuilt = asyncio.run(stored()) != wanted
    upgrade(url)
    asyncio.run(remember())
    return rebuilt


async def seeded_volunteers(url: str) -> int:
    """How many bench volunteers the database holds (0 when it was never seeded)."""
    connection = await asyncpg.connect(sync_url(url))
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM volunteer WHERE name LIKE 'Bench Volunteer %'"
        )
    finally:
        await connection.close()
    return int(count)


async def refresh_live_locations(url: str) -> None:
    """Shift every live position's age so the newest is as fresh as at seeding time.

    The service runs on the system clock, so without this a database seeded an hour
    ago would have no usable live location and the live-location half of the
    candidate query would go unmeasured. The update leaves a dead version of every
    row, which the selection's scan would step over until autovacuum came by (a state
    the service never sees all at once: its updates come one at a time, vacuumed as
    they go), so the table is vacuumed before anything is measured.
    """
    connection = await asyncpg.connect(sync_url(url))
    try:
        await connection.execute(
            """
            UPDATE live_location
            SET recorded_at = recorded_at + (now() - (SELECT max(recorded_at) FROM live_location))
            """
        )
        await connection.execute("VACUUM (ANALYZE) live_location")
    finally:
        await connection.close()


def incident_points(count: int, *, rng: random.Random) -> list[tuple[float, float]]:
    """Incident positions (lat, lon), weighted toward the centre where people are.

    Denser than the homes (scale 2.5 km) so that almost every incident has its 30
    candidates: the alert path is measured at its worst case, a full 30 alerts.
    """
    points = []
    for _ in range(count):
        radius = -INCIDENT_SCALE_M * math.log((1 - rng.random()) * (1 - rng.random()))
        bearing = 2 * math.pi * rng.random()
        lat = CENTRE_LAT + radius * math.cos(bearing) / METRES_PER_DEGREE_LAT
        lon = CENTRE_LON + radius * math.sin(bearing) / (
            METRES_PER_DEGREE_LAT * math.cos(math.radians(CENTRE_LAT))
        )
        points.append((lat, lon))
    return points


def seed_database(url: str, *, volunteers: int) -> SeedReport:
    """Migrate to head, then seed; must run outside an event loop (Alembic's own)."""
    prepare_schema(url)
    return asyncio.run(seed(url, volunteers=volunteers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("--volunteers", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(asdict(seed_database(args.database_url, volunteers=args.volunteers))))


if __name__ == "__main__":
    main()
