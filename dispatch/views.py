"""The incident read model: what a dispatch centre sees, as plain frozen dataclasses
that the HTTP layer renders (``app.api.schemas.incidents``).

Counts are current (see SPEC section 5): ``alerted`` = alerts created;
``delivered``/``failed`` = delivery status now (``failed`` includes undelivered);
``accepted`` = responders holding a role now (arrived ones included);
``declined``/``withdrawn``/``no_reply`` = responses now; ``arrived``/``stood_down``
= outcomes reached. ``radius_m`` is the current radius (widening grows it); a
responder's ``estimated_arrival_at`` is when they accepted plus the estimated walk
(``dispatch.ems``). Names and phone numbers appear only for volunteers whose
response is ``accepted``: a dispatcher needs to call a responder, not a bystander.

Nor may a dispatcher locate anyone else: exact distances from three incidents pin
down a home. For a volunteer who has not accepted, a dispatcher sees the alert's id
and a distance band (``distance_band``), never the volunteer's id (which would link
alerts across incidents), the exact distance, the AED detour or the location
source. Administrators see exact values; the event stream, shared by both, carries
bands only.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Row, Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.models import Aed, Alert, Incident, Message, Volunteer
from app.core.paging import Paged, fetch_page
from app.registry.keys import Principal
from dispatch.channels import ALERT_CALL
from geo.points import LatLon, latitude, longitude
from geo.search import NearestAed as FoundAed


@dataclass(frozen=True, slots=True)
class NearestAed:
    id: uuid.UUID
    distance_m: int
    address: str
    description: str | None


@dataclass(frozen=True, slots=True)
class AlertCounts:
    alerted: int = 0
    delivered: int = 0
    accepted: int = 0
    declined: int = 0
    withdrawn: int = 0
    no_reply: int = 0
    failed: int = 0
    arrived: int = 0
    stood_down: int = 0


@dataclass(frozen=True, slots=True)
class Responder:
    volunteer_id: uuid.UUID
    name: str | None
    phone: str | None
    role: str
    distance_m: int
    accepted_at: datetime | None
    arrived_at: datetime | None
    estimated_arrival_at: datetime | None


@dataclass(frozen=True, slots=True)
class IncidentSnapshot:
    id: uuid.UUID
    external_ref: str
    kind: str
    status: str
    not_alerted_reason: str | None
    duplicate_of: uuid.UUID | None
    radius_m: int
    ems_eta_at: datetime | None
    ems_arrived_at: datetime | None
    location: LatLon
    address: str
    access_notes: str | None
    flags: dict[str, bool]
    alert: bool
    exercise: bool
    nearest_aed: NearestAed | None
    counts: AlertCounts
    responders: list[Responder]
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    closed_at: datetime | None


DISTANCE_BANDS = ((100, "0-100"), (250, "100-250"), (500, "250-500"))
BEYOND_BANDS = "500+"


def distance_band(distance_m: float) -> str:
    """The band of metres a distance falls in (upper bounds inclusive)."""
    for upper, band in DISTANCE_BANDS:
        if distance_m <= upper:
            return band
    return BEYOND_BANDS


@dataclass(frozen=True, slots=True)
class AlertSnapshot:
    id: uuid.UUID
    volunteer_id: uuid.UUID | None
    name: str | None
    phone: str | None
    distance_band: str
    distance_m: int | None
    location_source: str | None
    alerted_as: str
    aed_detour_m: int | None
    delivery_status: str
    delivery_updated_at: datetime | None
    call_status: str | None
    response: str
    responded_at: datetime | None
    role: str | None
    accepted_at: datetime | None
    arrived_at: datetime | None
    stood_down_at: datetime | None
    cancelled_at: datetime | None
    replaced_at: datetime | None
    created_at: datetime


SelectT = TypeVar("SelectT", bound=Select[Any])


def _count(condition: Any) -> Any:
    return func.count().filter(condition)


_COUNTS = (
    func.count().label("alerted"),
    _count(Alert.delivery_status == "delivered").label("delivered"),
    _count(and_(Alert.response == "accepted", Alert.role.is_not(None))).label("accepted"),
    _count(Alert.response == "declined").label("declined"),
    _count(Alert.response == "withdrawn").label("withdrawn"),
    _count(Alert.response == "no_reply").label("no_reply"),
    _count(Alert.delivery_status.in_(("failed", "undelivered"))).label("failed"),
    _count(Alert.arrived_at.is_not(None)).label("arrived"),
    _count(Alert.stood_down_at.is_not(None)).label("stood_down"),
)


async def incident_views(
    session: AsyncSession, *, incident_ids: Sequence[uuid.UUID]
) -> list[IncidentSnapshot]:
    """Views of several incidents in three queries, in the order of ``incident_ids``."""
    if not incident_ids:
        return []
    incidents = (
        await session.execute(
            select(
                Incident,
                latitude(Incident.location).label("lat"),
                longitude(Incident.location).label("lon"),
                Aed.address.label("aed_address"),
                Aed.description.label("aed_description"),
            )
            .outerjoin(Aed, Aed.id == Incident.nearest_aed_id)
            .where(Incident.id.in_(incident_ids))
        )
    ).all()
    counts = {
        row.incident_id: AlertCounts(
            **{key: value for key, value in row._mapping.items() if key != "incident_id"}
        )
        for row in (
            await session.execute(
                select(Alert.incident_id, *_COUNTS)
                .where(Alert.incident_id.in_(incident_ids))
                .group_by(Alert.incident_id)
            )
        ).all()
    }
    responders: dict[uuid.UUID, list[Responder]] = {}
    for row in (
        await session.execute(
            select(Alert, Volunteer.name, Volunteer.phone)
            .join(Volunteer, Volunteer.id == Alert.volunteer_id)
            .where(
                Alert.incident_id.in_(incident_ids),
                Alert.response == "accepted",
                Alert.role.is_not(None),
            )
            .order_by(Alert.accepted_at, Alert.id)
        )
    ).all():
        alert: Alert = row.Alert
        responders.setdefault(alert.incident_id, []).append(
            Responder(
                volunteer_id=alert.volunteer_id,
                name=row.name,
                phone=row.phone,
                role=alert.role or "",
                distance_m=round(alert.distance_m),
                accepted_at=alert.accepted_at,
                arrived_at=alert.arrived_at,
                estimated_arrival_at=alert.estimated_arrival_at,
            )
        )
    by_id = {row.Incident.id: row for row in incidents}
    return [
        _incident_view(by_id[incident_id], counts.get(incident_id), responders.get(incident_id))
        for incident_id in incident_ids
        if incident_id in by_id
    ]


def _incident_view(
    row: Row[Any] | Any, counts: AlertCounts | None, responders: list[Responder] | None
) -> IncidentSnapshot:
    incident: Incident = row.Incident
    nearest_aed = None
    if incident.nearest_aed_id is not None and incident.nearest_aed_distance_m is not None:
        nearest_aed = NearestAed(
            id=incident.nearest_aed_id,
            distance_m=round(incident.nearest_aed_distance_m),
            address=row.aed_address,
            description=row.aed_description,
        )
    return IncidentSnapshot(
        id=incident.id,
        external_ref=incident.external_ref,
        kind=incident.kind,
        status=incident.status,
        not_alerted_reason=incident.not_alerted_reason,
        duplicate_of=incident.duplicate_of,
        radius_m=round(incident.radius_m),
        ems_eta_at=incident.ems_eta_at,
        ems_arrived_at=incident.ems_arrived_at,
        location=LatLon(row.lat, row.lon),
        address=incident.address,
        access_notes=incident.access_notes,
        flags=incident.flags,
        alert=incident.alert_requested,
        exercise=incident.exercise,
        nearest_aed=nearest_aed,
        counts=counts or AlertCounts(),
        responders=responders or [],
        created_at=incident.created_at,
        updated_at=incident.updated_at,
        cancelled_at=incident.cancelled_at,
        closed_at=incident.closed_at,
    )


def new_incident_view(
    incident: Incident, *, location: LatLon, aed: FoundAed | None, alerted: int
) -> IncidentSnapshot:
    """The view of an incident its transaction just created, from what the creator holds.

    What :func:`incident_view` would read back (``tests/test_incidents_api.py`` compares
    the two), without its three queries on the dispatcher's POST: nothing has been
    answered or delivered yet, so the counts are the alerts just queued.
    """
    row = _HeldRow(
        Incident=incident,
        lat=location.lat,
        lon=location.lon,
        aed_address=aed.address if aed else None,
        aed_description=aed.description if aed else None,
    )
    return _incident_view(row, AlertCounts(alerted=alerted) if alerted else None, None)


@dataclass(frozen=True, slots=True)
class _HeldRow:
    """The columns ``_incident_view`` reads from a row of ``incident_views``."""

    Incident: Incident  # noqa: N815 - the attribute name of the row it stands for
    lat: float
    lon: float
    aed_address: str | None
    aed_description: str | None


async def incident_view(session: AsyncSession, *, incident_id: uuid.UUID) -> IncidentSnapshot:
    """Raises ``NotFound`` when there is no such incident."""
    views = await incident_views(session, incident_ids=[incident_id])
    if not views:
        raise NotFound("no such incident")
    return views[0]


def _latest_call_status() -> Any:
    """What Twilio last said of the alert's call (``queued`` before it did); NULL: none."""
    return (
        select(func.coalesce(Message.call_status, "queued"))
        .where(Message.alert_id == Alert.id, *ALERT_CALL)
        .order_by(Message.created_at.desc())
        .limit(1)
        .scalar_subquery()
        .label("call_status")
    )


async def alert_views(
    session: AsyncSession, *, incident_id: uuid.UUID, caller: Principal
) -> list[AlertSnapshot]:
    """Every alert of the incident, nearest first, as much as ``caller`` may see."""
    rows = (
        await session.execute(
            select(Alert, Volunteer.name, Volunteer.phone, _latest_call_status())
            .join(Volunteer, Volunteer.id == Alert.volunteer_id)
            .where(Alert.incident_id == incident_id)
            .order_by(Alert.distance_m, Alert.id)
        )
    ).all()
    views = []
    for row in rows:
        alert: Alert = row.Alert
        accepted = alert.response == "accepted"
        exact = accepted or caller.role == "admin"
        views.append(
            AlertSnapshot(
                id=alert.id,
                volunteer_id=alert.volunteer_id if exact else None,
                name=row.name if accepted else None,
                phone=row.phone if accepted else None,
                distance_band=distance_band(alert.distance_m),
                distance_m=round(alert.distance_m) if exact else None,
                location_source=alert.location_source if exact else None,
                alerted_as=alert.alerted_as,
                aed_detour_m=(
                    None if alert.aed_detour_m is None or not exact else round(alert.aed_detour_m)
                ),
                delivery_status=alert.delivery_status,
                delivery_updated_at=alert.delivery_updated_at,
                call_status=row.call_status,
                response=alert.response,
                responded_at=alert.responded_at,
                role=alert.role,
                accepted_at=alert.accepted_at,
                arrived_at=alert.arrived_at,
                stood_down_at=alert.stood_down_at,
                cancelled_at=alert.cancelled_at,
                replaced_at=alert.replaced_at,
                created_at=alert.created_at,
            )
        )
    return views


async def list_incidents(
    session: AsyncSession,
    *,
    caller: Principal,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> Paged[IncidentSnapshot]:
    """Newest first; a dispatcher sees only its own centre's incidents."""
    statement = _visible_to(cast(Select[Any], select(Incident.created_at, Incident.id)), caller)
    if status is not None:
        statement = statement.where(Incident.status == status)
    page = await fetch_page(session, statement, model=Incident, cursor=cursor, limit=limit)
    views = await incident_views(session, incident_ids=[row.id for row in page.rows])
    return Paged(rows=views, next_cursor=page.next_cursor)


def _visible_to(statement: SelectT, caller: Principal) -> SelectT:
    """A dispatcher sees only its own centre's incidents; an administrator sees all."""
    if caller.role != "admin":
        statement = statement.where(Incident.centre == caller.centre)
    return statement


async def visible_incident(
    session: AsyncSession, *, incident_id: uuid.UUID, caller: Principal
) -> Incident:
    """The incident, or ``NotFound`` when it does not exist or belongs to another
    centre (so its existence is not revealed)."""
    statement = _visible_to(select(Incident).where(Incident.id == incident_id), caller)
    incident = (await session.execute(statement)).scalar_one_or_none()
    if incident is None:
        raise NotFound("no such incident")
    return incident
