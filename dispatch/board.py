"""What a dispatcher's screen shows beyond the incident view: the board, bands, the timeline.

Alerted volunteers who do not hold a role are shown only as counts by distance band
(``dispatch.views.distance_band``: 0–100, 100–250, 250–500 m, beyond), never as
positions or identities, as in the API. Responders holding a role are in
``IncidentSnapshot.responders`` (a dispatcher may need to call them).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Aed, Alert, Incident, IncidentEvent
from dispatch.views import BEYOND_BANDS, DISTANCE_BANDS
from geo.points import LatLon, latitude, longitude

BANDS = (*(band for _upper, band in DISTANCE_BANDS), BEYOND_BANDS)
OPEN_STATUS = "alerting"


@dataclass(frozen=True)
class BandCount:
    band: str
    alerted: int
    pending: int
    declined: int


async def board_incident_ids(
    session: AsyncSession, *, centre: str, recent_limit: int
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """The centre's open incidents (oldest first: longest waiting on top), and the latest others."""
    open_ids = (
        await session.scalars(
            select(Incident.id)
            .where(Incident.centre == centre, Incident.status == OPEN_STATUS)
            .order_by(Incident.created_at, Incident.id)
        )
    ).all()
    recent_ids = (
        await session.scalars(
            select(Incident.id)
            .where(Incident.centre == centre, Incident.status != OPEN_STATUS)
            .order_by(Incident.created_at.desc(), Incident.id.desc())
            .limit(recent_limit)
        )
    ).all()
    return list(open_ids), list(recent_ids)


def _band_of() -> Any:
    """``dispatch.views.distance_band`` in SQL: the same bands, upper bounds inclusive."""
    return case(
        *((Alert.distance_m <= upper, band) for upper, band in DISTANCE_BANDS),
        else_=BEYOND_BANDS,
    )


async def distance_bands(session: AsyncSession, *, incident_id: uuid.UUID) -> list[BandCount]:
    """Alerted volunteers without a role, counted by band: every band, in order."""
    band = _band_of().label("band")
    without_role = or_(Alert.response != "accepted", Alert.role.is_(None))
    rows = (
        await session.execute(
            select(
                band,
                func.count().label("alerted"),
                func.count().filter(Alert.response == "pending").label("pending"),
                func.count().filter(Alert.response == "declined").label("declined"),
            )
            .where(Alert.incident_id == incident_id, without_role)
            .group_by(band)
        )
    ).all()
    found = {row.band: row for row in rows}
    return [
        BandCount(
            band=label,
            alerted=found[label].alerted if label in found else 0,
            pending=found[label].pending if label in found else 0,
            declined=found[label].declined if label in found else 0,
        )
        for label in BANDS
    ]


async def aed_position(session: AsyncSession, *, aed_id: uuid.UUID | None) -> LatLon | None:
    if aed_id is None:
        return None
    row = (
        await session.execute(
            select(latitude(Aed.location).label("lat"), longitude(Aed.location).label("lon")).where(
                Aed.id == aed_id
            )
        )
    ).one_or_none()
    return None if row is None else LatLon(row.lat, row.lon)


async def events_after(
    session: AsyncSession, *, incident_id: uuid.UUID, after_id: int, limit: int
) -> Sequence[IncidentEvent]:
    statement = (
        select(IncidentEvent)
        .where(and_(IncidentEvent.incident_id == incident_id, IncidentEvent.id > after_id))
        .order_by(IncidentEvent.id)
        .limit(limit)
    )
    return (await session.scalars(statement)).all()
