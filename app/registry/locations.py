"""Live locations: the newest fix per volunteer, written without per-row round trips.

Two writers race (the companion app and the positioning feed), so a fix only
replaces a stored one with an older ``recorded_at``; the decision is made by the
``ON CONFLICT … WHERE`` of the upsert itself, atomically. A bulk request resolves
volunteer ids and phone numbers and writes every accepted fix in one statement
over arrays. Fixes from the future (beyond ``MAX_CLOCK_SKEW``) are refused; fixes
older than the retention would be purged at once and are answered ``stale``; the
purge itself (:func:`purge_live_locations`) runs with the dispatch worker's timers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import DriverConnection, DriverStatement
from app.core.errors import InvalidInput
from app.core.models import LiveLocation
from app.registry.phones import lookup_phone
from geo.points import latitude, longitude

MAX_CLOCK_SKEW = timedelta(minutes=2)

_POINT = "ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)::geography"
_ON_CONFLICT = """
ON CONFLICT (volunteer_id) DO UPDATE SET
    location = EXCLUDED.location, accuracy_m = EXCLUDED.accuracy_m,
    recorded_at = EXCLUDED.recorded_at, source = EXCLUDED.source,
    updated_at = EXCLUDED.updated_at
WHERE current.recorded_at < EXCLUDED.recorded_at
RETURNING volunteer_id
"""
_UPSERT_ONE = DriverStatement(
    text(
        "INSERT INTO live_location AS current"
        " (volunteer_id, location, accuracy_m, recorded_at, source, updated_at)"
        f" VALUES (:volunteer_id, {_POINT.format(lon=':lon', lat=':lat')},"
        " :accuracy_m, :recorded_at, :source, :now)" + _ON_CONFLICT
    )
)
# Items naming a volunteer by id and by phone are resolved by two index joins (an
# OR in one join would defeat both indexes); duplicates of one volunteer keep the
# newest fix; rows are written in volunteer order so concurrent batches lock rows
# in the same order and cannot deadlock. Only items not accepted come back.
_UPSERT_MANY = text(
    f"""
WITH input AS (
    SELECT * FROM unnest(
        CAST(:idx AS int[]), CAST(:ids AS uuid[]), CAST(:phones AS text[]),
        CAST(:lats AS float8[]), CAST(:lons AS float8[]), CAST(:accuracies AS float8[]),
        CAST(:recorded AS timestamptz[])
    ) AS t(idx, volunteer_id, phone, lat, lon, accuracy_m, recorded_at)
), resolved AS (
    SELECT i.idx, v.id AS volunteer_id, i.lat, i.lon, i.accuracy_m, i.recorded_at
    FROM input i JOIN volunteer v ON v.id = i.volunteer_id
    WHERE v.status <> 'erased'
    UNION ALL
    SELECT i.idx, v.id, i.lat, i.lon, i.accuracy_m, i.recorded_at
    FROM input i JOIN volunteer v ON v.phone = i.phone
    WHERE i.volunteer_id IS NULL AND v.status <> 'erased'
), newest AS (
    SELECT DISTINCT ON (volunteer_id) *
    FROM resolved ORDER BY volunteer_id, recorded_at DESC, idx DESC
), written AS (
    INSERT INTO live_location AS current
        (volunteer_id, location, accuracy_m, recorded_at, source, updated_at)
    SELECT volunteer_id, {_POINT.format(lon="lon", lat="lat")}, accuracy_m, recorded_at,
           :source, :now
    FROM newest ORDER BY volunteer_id
    {_ON_CONFLICT}
)
SELECT i.idx, r.idx IS NULL AS unknown
FROM input i
LEFT JOIN resolved r ON r.idx = i.idx
LEFT JOIN newest n ON n.idx = i.idx
LEFT JOIN written w ON w.volunteer_id = n.volunteer_id
WHERE w.volunteer_id IS NULL
"""
)


@dataclass(frozen=True, slots=True)
class LocationFix:
    """Where a device measured itself, how precisely (68 % radius, metres), and when."""

    lat: float
    lon: float
    accuracy_m: float
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class FeedFix:
    """One item of the positioning feed: a fix naming its volunteer by id or by phone."""

    index: int
    fix: LocationFix
    volunteer_id: uuid.UUID | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class ItemError:
    index: int
    field: str | None
    message: str


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    """How many fixes were stored; by index, the stale ones and the refused ones."""

    accepted: int
    stale: list[int] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CurrentLocation:
    lat: float
    lon: float
    accuracy_m: float
    recorded_at: datetime
    source: str


def _check_age(recorded_at: datetime, *, now: datetime) -> None:
    if recorded_at > now + MAX_CLOCK_SKEW:
        raise InvalidInput("recorded_at", "is in the future")


async def record_location(
    executor: AsyncConnection | AsyncSession | DriverConnection,
    *,
    volunteer_id: uuid.UUID,
    fix: LocationFix,
    now: datetime,
    retention: timedelta,
    source: str = "app",
) -> bool:
    """Store the fix unless a newer one is stored; ``False`` when it was stale.

    On a driver connection (the app's ``PUT /v1/me/location``) the upsert is one
    statement that commits on its own (``DriverStatement``); in a session, in its
    transaction.
    """
    _check_age(fix.recorded_at, now=now)
    if fix.recorded_at < now - retention:
        return False
    connection = await executor.connection() if isinstance(executor, AsyncSession) else executor
    written = await _UPSERT_ONE.fetchrow(
        connection,
        {
            "volunteer_id": volunteer_id,
            "lat": fix.lat,
            "lon": fix.lon,
            "accuracy_m": fix.accuracy_m,
            "recorded_at": fix.recorded_at,
            "source": source,
            "now": now,
        },
    )
    return written is not None


async def record_locations(
    session: AsyncSession,
    *,
    items: Sequence[FeedFix],
    now: datetime,
    retention: timedelta,
    region: str,
    source: str = "feed",
) -> FeedOutcome:
    """Judge each (well-formed) item on its own, then write all valid ones in one statement."""
    errors: list[ItemError] = []
    stale: list[int] = []
    columns: dict[str, list[Any]] = {
        name: [] for name in ("idx", "ids", "phones", "lats", "lons", "accuracies", "recorded")
    }
    by_index = {item.index: item for item in items}
    oldest = now - retention
    for item in items:
        fix = item.fix
        try:
            _check_age(fix.recorded_at, now=now)
        except InvalidInput as exc:
            errors.append(ItemError(index=item.index, field=exc.field, message="is in the future"))
            continue
        phone = None
        if item.phone is not None:
            phone = lookup_phone(item.phone, region=region)
            if phone is None:
                errors.append(ItemError(index=item.index, field="phone", message="not a number"))
                continue
        if fix.recorded_at < oldest:
            stale.append(item.index)
            continue
        columns["idx"].append(item.index)
        columns["ids"].append(item.volunteer_id)
        columns["phones"].append(phone)
        columns["lats"].append(fix.lat)
        columns["lons"].append(fix.lon)
        columns["accuracies"].append(fix.accuracy_m)
        columns["recorded"].append(fix.recorded_at)
    accepted = len(columns["idx"])
    if accepted:
        rows = (
            await session.execute(_UPSERT_MANY, {**columns, "source": source, "now": now})
        ).all()
        for index, unknown in rows:
            accepted -= 1
            if unknown:
                errors.append(
                    ItemError(
                        index=index,
                        field="phone" if by_index[index].phone else "volunteer_id",
                        message="no such volunteer",
                    )
                )
            else:
                stale.append(index)
    errors.sort(key=lambda error: error.index)
    return FeedOutcome(accepted=accepted, stale=sorted(stale), errors=errors)


async def forget_location(session: AsyncSession, *, volunteer_id: uuid.UUID) -> None:
    await session.execute(delete(LiveLocation).where(LiveLocation.volunteer_id == volunteer_id))


async def current_location(
    session: AsyncSession, volunteer_id: uuid.UUID
) -> CurrentLocation | None:
    row = (
        await session.execute(
            select(
                latitude(LiveLocation.location).label("lat"),
                longitude(LiveLocation.location).label("lon"),
                LiveLocation.accuracy_m,
                LiveLocation.recorded_at,
                LiveLocation.source,
            ).where(LiveLocation.volunteer_id == volunteer_id)
        )
    ).one_or_none()
    return None if row is None else CurrentLocation(**row._asdict())


async def purge_live_locations(
    session: AsyncSession, *, now: datetime, retention: timedelta
) -> int:
    """Delete every live location recorded more than ``retention`` ago; how many went."""
    result = await session.execute(
        delete(LiveLocation)
        .where(LiveLocation.recorded_at < now - retention)
        .returning(LiveLocation.volunteer_id)
    )
    return len(result.all())
