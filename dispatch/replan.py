"""A moved incident is planned again, under its row lock, in the PATCH's transaction.

When the dispatcher corrects an incident's location, every decision taken for the
old place is taken again for the new one:

- the nearest open AED and the AED slot (none when no AED is open near the new place);
- pending volunteers: their distance and AED detour, from where they are now (the
  selection's current-location rule); those now outside the radius are stood down
  and told that the location changed and they need not go (a volunteer whose
  current location is unknown keeps their alert: nobody can say they are too far);
  an alert SMS of theirs still queued is reworded with the new address and distance;
- CPR responders on their way get the new address and a map link;
- an AED runner keeps the AED they are fetching while the detour via it to the new
  place stays within ``AED_MAX_DETOUR_M``; otherwise they are sent to the new
  nearest AED if that detour is within it, or else straight to the patient (the
  role becomes CPR and the AED slot reopens). Without a known position, the AED is
  kept while it lies within ``AED_SEARCH_RADIUS_M`` of the new place.

The caller then alerts newly in-range volunteers (``dispatch.alerting.alert_more``,
under the incident's ``MAX_ALERTED``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Aed, Alert, Incident, Message, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from app.core.texts import alert_text, moved_stand_down_text, moved_text
from dispatch.events import record_event
from dispatch.roles import stand_down_pending
from dispatch.selection import Whereabouts, current_whereabouts, nearest_available_aed
from geo.points import LatLon, geography_point, latitude, longitude
from geo.search import distance_m


async def _reword_queued_alert(
    session: AsyncSession, *, incident: Incident, alert: Alert, language: str, settings: Settings
) -> None:
    """An alert SMS not yet claimed by a worker names the new address and distance.

    Only a ``queued`` row that nobody holds (SKIP LOCKED: the worker's claim and
    abandon pass lock queued rows, and the abandon pass may then wait for this
    incident): a claimed one is sent as claimed, and its volunteer gets the new
    address with their instructions when they answer.
    """
    unclaimed = (
        select(Message.id)
        .where(
            Message.alert_id == alert.id,
            Message.purpose == "alert",
            Message.status == "queued",
        )
        .with_for_update(skip_locked=True)
    )
    await session.execute(
        update(Message)
        .where(Message.id.in_(unclaimed.scalar_subquery()))
        .values(
            body=alert_text(
                language,
                kind=incident.kind,
                at=alert.created_at,
                zone=settings.zone,
                distance_m=alert.distance_m,
                address=incident.address,
                code=alert.code,
            )
        )
    )


@dataclass(frozen=True)
class AedPlace:
    id: uuid.UUID
    location: LatLon
    to_patient_m: float
    address: str
    description: str | None


async def _aeds_near(
    session: AsyncSession, *, aed_ids: set[uuid.UUID], point: LatLon
) -> dict[uuid.UUID, AedPlace]:
    if not aed_ids:
        return {}
    rows = await session.execute(
        select(
            Aed.id,
            latitude(Aed.location).label("lat"),
            longitude(Aed.location).label("lon"),
            distance_m(Aed.location, geography_point(point)).label("to_patient_m"),
            Aed.address,
            Aed.description,
        ).where(Aed.id.in_(aed_ids))
    )
    return {
        row.id: AedPlace(
            id=row.id,
            location=LatLon(row.lat, row.lon),
            to_patient_m=row.to_patient_m,
            address=row.address,
            description=row.description,
        )
        for row in rows
    }


def runner_route(
    *,
    fetching: AedPlace | None,
    nearest: AedPlace | None,
    whereabouts: Whereabouts | None,
    settings: Settings,
) -> tuple[str, AedPlace | None]:
    """What an AED runner does after a move: ``keep_aed``, ``other_aed`` or ``straight``."""
    if fetching is not None:
        if whereabouts is None:
            if fetching.to_patient_m <= settings.aed_search_radius_m:
                return "keep_aed", fetching
        else:
            detour = whereabouts.detour_m(fetching.id, fetching.to_patient_m)
            if detour is not None and detour <= settings.aed_max_detour_m:
                return "keep_aed", fetching
    if nearest is not None and whereabouts is not None and nearest != fetching:
        detour = whereabouts.detour_m(nearest.id, nearest.to_patient_m)
        if detour is not None and detour <= settings.aed_max_detour_m:
            return "other_aed", nearest
    return "straight", None


async def replan_after_move(
    session: AsyncSession,
    *,
    incident: Incident,
    point: LatLon,
    settings: Settings,
    now: datetime,
) -> None:
    """Re-plan the incident for its new location ``point`` (see the module docstring)."""
    previous_aed_id = incident.nearest_aed_id
    nearest = await nearest_available_aed(session, point=point, settings=settings, now=now)
    incident.nearest_aed_id = nearest.id if nearest else None
    incident.nearest_aed_distance_m = nearest.distance_m if nearest else None
    incident.aed_slots = settings.aed_responders if nearest else 0

    rows = (
        await session.execute(
            select(Alert, Volunteer.phone, Volunteer.language, Volunteer.opted_out)
            .join(Volunteer, Volunteer.id == Alert.volunteer_id)
            .where(
                Alert.incident_id == incident.id,
                Alert.stood_down_at.is_(None),
                Alert.response.in_(("pending", "accepted")),
            )
            .with_for_update(of=Alert, key_share=True)
            .execution_options(populate_existing=True)
        )
    ).all()
    pending = [row.Alert for row in rows if row.Alert.response == "pending"]
    responders = [row for row in rows if row.Alert.role is not None]
    fetching_ids = {
        aed_id
        for row in responders
        if row.Alert.role == "aed" and (aed_id := row.Alert.aed_id or previous_aed_id)
    }
    aeds = await _aeds_near(
        session, aed_ids=fetching_ids | ({nearest.id} if nearest else set()), point=point
    )
    nearest_place = aeds.get(nearest.id) if nearest else None
    whereabouts = await current_whereabouts(
        session,
        volunteer_ids=[row.Alert.volunteer_id for row in rows],
        point=point,
        aeds={aed.id: aed.location for aed in aeds.values()},
        settings=settings,
        now=now,
    )

    too_far: list[uuid.UUID] = []
    languages = {row.Alert.id: row.language for row in rows}
    for alert in pending:
        where = whereabouts.get(alert.volunteer_id)
        if where is not None and where.distance_m > incident.radius_m:
            too_far.append(alert.id)
            continue
        if where is not None:
            alert.distance_m = where.distance_m
            alert.aed_detour_m = (
                where.detour_m(nearest_place.id, nearest_place.to_patient_m)
                if nearest_place
                else None
            )
            alert.updated_at = now
        await _reword_queued_alert(
            session, incident=incident, alert=alert, language=languages[alert.id], settings=settings
        )

    redirected: list[str] = []
    texts: list[OutboundSms] = []
    for row in responders:
        alert = row.Alert
        route, aed = "cpr", None
        if alert.role == "aed":
            fetching_id = alert.aed_id or previous_aed_id
            route, aed = runner_route(
                fetching=aeds.get(fetching_id) if fetching_id else None,
                nearest=nearest_place,
                whereabouts=whereabouts.get(alert.volunteer_id),
                settings=settings,
            )
            if route != "keep_aed":
                redirected.append(str(alert.id))
            alert.aed_id = aed.id if aed else None
            alert.role = "aed" if aed else "cpr"
            alert.updated_at = now
        if row.phone is None or row.opted_out:
            continue
        texts.append(
            OutboundSms(
                phone=row.phone,
                body=moved_text(
                    row.language,
                    code=alert.code,
                    route=route,
                    address=incident.address,
                    access_notes=incident.access_notes,
                    lat=point.lat,
                    lon=point.lon,
                    aed_address=aed.address if aed else None,
                    aed_description=aed.description if aed else None,
                ),
                purpose="update",
                volunteer_id=alert.volunteer_id,
                incident_id=incident.id,
                alert_id=alert.id,
            )
        )
    await session.flush()
    await queue_sms(session, texts, now=now)
    await record_event(
        session,
        incident_id=incident.id,
        type="incident.replanned",
        data={
            "nearest_aed_id": str(nearest.id) if nearest else None,
            "stood_down": [str(alert_id) for alert_id in too_far],
            "redirected": redirected,
            "at": now.isoformat(),
        },
    )
    if too_far:
        await stand_down_pending(
            session, incident=incident, now=now, only=too_far, text=moved_stand_down_text
        )
