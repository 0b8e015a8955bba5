"""The registry as a coordinator browses it: search with filters, names, latest alerts.

Read-only companions of ``app.registry.volunteers`` for the console's lists; the
eligibility filter is the same SQL rule as selection (``is_eligible``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, and_, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Alert, Certification, Incident, Volunteer
from app.core.paging import fetch_page
from app.registry.eligibility import is_eligible

VolunteerFilter = Literal["", "eligible", "pending", "expiring", "suspended", "opted_out", "paused"]
VOLUNTEER_FILTERS: tuple[VolunteerFilter, ...] = (
    "",
    "eligible",
    "pending",
    "expiring",
    "suspended",
    "opted_out",
    "paused",
)


@dataclass(frozen=True)
class AlertLine:
    incident_id: uuid.UUID
    external_ref: str
    address: str
    created_at: datetime
    distance_m: float
    delivery_status: str
    response: str
    role: str | None


async def volunteer_names(
    session: AsyncSession, volunteer_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str]:
    ids = set(volunteer_ids)
    if not ids:
        return {}
    rows = await session.execute(select(Volunteer.id, Volunteer.name).where(Volunteer.id.in_(ids)))
    return {row.id: row.name or "" for row in rows}


async def search_volunteers(
    session: AsyncSession,
    *,
    text: str | None,
    phone: str | None,
    only: VolunteerFilter,
    expiring_within_days: int,
    now: datetime,
    today: date,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Volunteer], str | None]:
    """Newest first; ``text`` matches the name, ``phone`` (E.164) the number exactly."""
    statement: Select[Any] = select(Volunteer).where(Volunteer.status != "erased")
    if text:
        statement = statement.where(Volunteer.name.icontains(text, autoescape=True))
    if phone:
        statement = statement.where(Volunteer.phone == phone)
    if only == "eligible":
        statement = statement.where(is_eligible(Volunteer, now=now, today=today))
    elif only == "pending":
        statement = statement.where(
            exists().where(
                Certification.volunteer_id == Volunteer.id, Certification.status == "pending"
            )
        )
    elif only == "expiring":
        statement = statement.where(
            exists().where(
                Certification.volunteer_id == Volunteer.id,
                Certification.status == "verified",
                Certification.expires_on >= today,
                Certification.expires_on <= today + timedelta(days=expiring_within_days),
            )
        )
    elif only == "suspended":
        statement = statement.where(Volunteer.status == "suspended")
    elif only == "opted_out":
        statement = statement.where(Volunteer.opted_out.is_(True))
    elif only == "paused":
        statement = statement.where(
            and_(Volunteer.paused_until.is_not(None), Volunteer.paused_until > now)
        )
    page = await fetch_page(session, statement, model=Volunteer, cursor=cursor, limit=limit)
    return page.rows, page.next_cursor


async def latest_alerts(
    session: AsyncSession, *, volunteer_id: uuid.UUID, limit: int
) -> list[AlertLine]:
    rows = await session.execute(
        select(
            Alert.incident_id,
            Incident.external_ref,
            Incident.address,
            Alert.created_at,
            Alert.distance_m,
            Alert.delivery_status,
            Alert.response,
            Alert.role,
        )
        .join(Incident, Incident.id == Alert.incident_id)
        .where(Alert.volunteer_id == volunteer_id)
        .order_by(Alert.created_at.desc(), Alert.id.desc())
        .limit(limit)
    )
    return [AlertLine(**row._mapping) for row in rows]
