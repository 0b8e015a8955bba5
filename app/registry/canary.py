"""Canary volunteers: the test phones that ``responder canary`` alerts.

A canary volunteer is a registry row with ``canary`` set, so the one candidate
statement (``dispatch.selection``) can keep it out of every real incident and keep
a canary incident to it alone. It is created by the canary run itself (idempotent:
the same phone finds the same volunteer), never by turning a registered volunteer
into one: a phone that already belongs to a volunteer is refused, so a real person
can never silently stop being alerted. Enrolment and every move of its one place
are audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, InvalidInput
from app.core.models import Place, Volunteer
from app.registry.audit import Actor, record_audit
from app.registry.phones import normalise_phone
from geo.points import LatLon, geography_point, latitude, longitude

CANARY_NAME = "Canary (test phone)"
CANARY_PLACE_LABEL = "canary"
CANARY_CONSENT = "canary"
SAME_POINT_DEGREES = 1e-7  # about a centimetre: a float read back from PostGIS


async def enrol_canary(
    session: AsyncSession,
    *,
    phone: str,
    location: LatLon,
    actor: Actor,
    region: str,
    timezone: str,
    now: datetime,
) -> Volunteer:
    """The canary volunteer of ``phone``, created if new, its place moved to ``location``.

    Locks the volunteer row, so concurrent runs for one phone serialise. Raises
    ``Conflict`` when the phone belongs to a volunteer who is not a canary. The
    administrator who enrols the test phone gives its consent (``CANARY_CONSENT``).
    """
    try:
        normalised = normalise_phone(phone, region=region)
    except ValueError as exc:
        raise InvalidInput("phone", str(exc)) from None
    created = (
        await session.execute(
            insert(Volunteer)
            .values(
                id=uuid.uuid4(),
                name=CANARY_NAME,
                phone=normalised,
                language="en",
                status="active",
                opted_out=False,
                consent_at=now,
                consent_version=CANARY_CONSENT,
                canary=True,
            )
            .on_conflict_do_nothing(index_elements=[Volunteer.phone])
            .returning(Volunteer.id)
        )
    ).scalar_one_or_none()
    volunteer = (
        await session.execute(
            select(Volunteer)
            .where(Volunteer.phone == normalised)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if not volunteer.canary:
        raise Conflict(
            f"{normalised} belongs to a registered volunteer; a canary needs a test phone "
            "of its own (a volunteer is never turned into a canary)"
        )
    if created is not None:
        await record_audit(
            session,
            actor=actor,
            action="canary.enrol",
            target_type="volunteer",
            target_id=volunteer.id,
        )
    await _place_canary(session, volunteer=volunteer, location=location, actor=actor, tz=timezone)
    return volunteer


async def _place_canary(
    session: AsyncSession, *, volunteer: Volunteer, location: LatLon, actor: Actor, tz: str
) -> None:
    """One always-active place at ``location``: where the canary incident is posted."""
    places = (
        await session.execute(
            select(latitude(Place.location), longitude(Place.location)).where(
                Place.volunteer_id == volunteer.id
            )
        )
    ).all()
    if len(places) == 1 and all(
        abs(known - wanted) < SAME_POINT_DEGREES
        for known, wanted in zip(places[0], (location.lat, location.lon), strict=True)
    ):
        return
    await session.execute(delete(Place).where(Place.volunteer_id == volunteer.id))
    session.add(
        Place(
            volunteer_id=volunteer.id,
            label=CANARY_PLACE_LABEL,
            location=geography_point(location),
            timezone=tz,
            schedule=None,
            active_minutes=None,
        )
    )
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="canary.place",
        target_type="volunteer",
        target_id=volunteer.id,
        details={"lat": location.lat, "lon": location.lon},
    )
