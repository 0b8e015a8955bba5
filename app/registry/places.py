"""Places: where a volunteer usually is (home, work), and when.

The schedule is stored as the JSON the administrator sent and as the
``int4multirange`` the candidate query tests (``app.core.schedule``); no schedule
means the place counts at all times.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.models import Place
from app.core.schedule import schedule_json, week_ranges
from app.registry.audit import Actor, record_audit
from app.registry.volunteers import lock_volunteer
from geo.points import LatLon, geography_point, latitude, longitude

_COLUMNS = (
    Place.id,
    Place.volunteer_id,
    Place.label,
    latitude(Place.location).label("lat"),
    longitude(Place.location).label("lon"),
    Place.timezone,
    Place.schedule,
    Place.created_at,
)


@dataclass(frozen=True, slots=True)
class NewPlace:
    """``schedule``: weekly windows ``{"days", "start", "end"}``; ``None`` means always."""

    label: str
    location: LatLon
    timezone: str | None
    schedule: list[dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class StoredPlace:
    id: uuid.UUID
    volunteer_id: uuid.UUID
    label: str
    location: LatLon
    timezone: str
    schedule: list[dict[str, Any]] | None
    created_at: datetime


def _stored(row: Any) -> StoredPlace:
    return StoredPlace(
        id=row.id,
        volunteer_id=row.volunteer_id,
        label=row.label,
        location=LatLon(row.lat, row.lon),
        timezone=row.timezone,
        schedule=row.schedule,
        created_at=row.created_at,
    )


async def add_place(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    data: NewPlace,
    actor: Actor,
    default_timezone: str,
) -> StoredPlace:
    await lock_volunteer(session, volunteer_id)
    schedule = schedule_json(data.schedule) if data.schedule else None
    row = (
        await session.execute(
            insert(Place)
            .values(
                id=uuid.uuid4(),
                volunteer_id=volunteer_id,
                label=data.label,
                location=geography_point(data.location),
                timezone=data.timezone or default_timezone,
                schedule=schedule,
                active_minutes=week_ranges(schedule) if schedule else None,
            )
            .returning(*_COLUMNS)
        )
    ).one()
    await record_audit(
        session,
        actor=actor,
        action="place.add",
        target_type="place",
        target_id=row.id,
        details={"volunteer_id": str(volunteer_id)},
    )
    return _stored(row)


async def places_of(session: AsyncSession, volunteer_id: uuid.UUID) -> list[StoredPlace]:
    rows = await session.execute(
        select(*_COLUMNS)
        .where(Place.volunteer_id == volunteer_id)
        .order_by(Place.created_at, Place.id)
    )
    return [_stored(row) for row in rows]


async def delete_place(
    session: AsyncSession, *, volunteer_id: uuid.UUID, place_id: uuid.UUID, actor: Actor
) -> None:
    await lock_volunteer(session, volunteer_id)
    deleted = await session.scalar(
        delete(Place)
        .where(Place.id == place_id, Place.volunteer_id == volunteer_id)
        .returning(Place.id)
    )
    if deleted is None:
        raise NotFound(f"volunteer {volunteer_id} has no place {place_id}")
    await record_audit(
        session,
        actor=actor,
        action="place.delete",
        target_type="place",
        target_id=place_id,
        details={"volunteer_id": str(volunteer_id)},
    )
