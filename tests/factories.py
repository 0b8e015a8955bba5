"""Typed factories for test data. Positions are computed with geographiclib, never PostGIS."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from geographiclib.geodesic import Geodesic
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Transactions, create_engine, create_session_factory, unit_of_work
from app.core.models import (
    Aed,
    Alert,
    Certification,
    Incident,
    LiveLocation,
    Message,
    Place,
    Volunteer,
)
from app.core.outbox import OutboundSms, queue_sms
from app.core.schedule import week_ranges
from app.core.settings import Settings
from app.registry.keys import Role, issue_key
from dispatch.responses import InboundSms, handle_inbound_sms
from geo.points import LatLon, geography_point

STOCKHOLM = LatLon(59.3326, 18.0649)
_phones = itertools.count(1_000_000)


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: the spec's defaults, nothing from the environment.

    Except the per-IP rate limits: every test client is 127.0.0.1 and the counts
    are shared through the test database, so the suite's deliberate 401s and forged
    webhooks would trip them. Tests of rate limiting set their own limits.
    """
    per_ip_unlimited = {
        "rate_limit_anonymous_per_minute": 1_000_000,
        "rate_limit_unsigned_webhook_per_minute": 1_000_000,
    }
    return Settings(_env_file=None, **(per_ip_unlimited | overrides))  # type: ignore[call-arg]


def offset(origin: LatLon, *, bearing_deg: float, distance_m: float) -> LatLon:
    """The point ``distance_m`` metres from ``origin`` along a geodesic on WGS84."""
    line = Geodesic.WGS84.Direct(origin.lat, origin.lon, bearing_deg, distance_m)
    return LatLon(line["lat2"], line["lon2"])


def geodesic_distance_m(a: LatLon, b: LatLon) -> float:
    return float(Geodesic.WGS84.Inverse(a.lat, a.lon, b.lat, b.lon)["s12"])


def next_phone() -> str:
    return f"+4670{next(_phones):07d}"


async def create_volunteer(
    session: AsyncSession,
    *,
    near: LatLon | None = None,
    live_at: LatLon | None = None,
    live_recorded_at: datetime | None = None,
    live_accuracy_m: float = 10.0,
    name: str = "Test Volunteer",
    phone: str | None = None,
    language: str = "sv",
    status: str = "active",
    opted_out: bool = False,
    paused_until: datetime | None = None,
    certification: str | None = "cpr",
    certification_status: str = "verified",
    expires_on: date | None = None,
    schedule: list[dict[str, Any]] | None = None,
    timezone: str = "Europe/Stockholm",
    contact_preference: str = "sms",
) -> Volunteer:
    """A volunteer; by default eligible (verified CPR) with a home place at ``near``."""
    volunteer = Volunteer(
        name=name,
        contact_preference=contact_preference,
        phone=phone or next_phone(),
        language=language,
        status=status,
        opted_out=opted_out,
        paused_until=paused_until,
        consent_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    session.add(volunteer)
    await session.flush()
    if certification is not None:
        session.add(
            Certification(
                volunteer_id=volunteer.id,
                kind=certification,
                issued_on=date(2025, 1, 1),
                expires_on=expires_on or date(2030, 1, 1),
                issuer="Swedish Resuscitation Council",
                status=certification_status,
            )
        )
    if near is not None:
        await add_place(session, volunteer=volunteer, at=near, schedule=schedule, timezone=timezone)
    if live_at is not None:
        if live_recorded_at is None:
            raise ValueError("live_at needs live_recorded_at (use the test clock)")
        session.add(
            LiveLocation(
                volunteer_id=volunteer.id,
                location=geography_point(live_at),
                accuracy_m=live_accuracy_m,
                recorded_at=live_recorded_at,
                source="app",
            )
        )
    await session.flush()
    return volunteer


async def add_place(
    session: AsyncSession,
    *,
    volunteer: Volunteer,
    at: LatLon,
    label: str = "home",
    schedule: list[dict[str, Any]] | None = None,
    timezone: str = "Europe/Stockholm",
) -> Place:
    place = Place(
        volunteer_id=volunteer.id,
        label=label,
        location=geography_point(at),
        timezone=timezone,
        schedule=schedule,
        active_minutes=week_ranges(schedule) if schedule else None,
    )
    session.add(place)
    await session.flush()
    return place


async def create_aed(
    session: AsyncSession,
    *,
    at: LatLon,
    address: str = "Centralstationen, Stockholm",
    description: str = "Main hall by the ticket office, cabinet code 1234",
    access: str | list[dict[str, Any]] = "always",
    status: str = "active",
) -> Aed:
    aed = Aed(
        location=geography_point(at),
        address=address,
        description=description,
        access=access,
        open_minutes=None if access == "always" else week_ranges(access),  # type: ignore[arg-type]
        status=status,
    )
    session.add(aed)
    await session.flush()
    return aed


async def create_key(
    session: AsyncSession,
    *,
    role: Role,
    name: str = "test",
    centre: str | None = None,
    volunteer: Volunteer | None = None,
) -> dict[str, str]:
    """Authorization headers for a new key of the role (a dispatcher's centre: its name)."""
    plaintext, _ = await issue_key(
        session,
        role=role,
        name=name,
        centre=centre or (name if role == "dispatcher" else None),
        volunteer_id=volunteer.id if volunteer else None,
    )
    return {"Authorization": f"Bearer {plaintext}"}


def days_from(moment: datetime, days: int) -> date:
    return (moment + timedelta(days=days)).date()


async def create_incident(
    session: AsyncSession,
    *,
    at: LatLon = STOCKHOLM,
    created_at: datetime,
    status: str = "alerting",
    centre: str = "test",
    external_ref: str | None = None,
    kind: str = "cardiac_arrest",
    address: str = "Drottninggatan 1, Stockholm",
    access_notes: str | None = "Door code 1234, 3rd floor",
    cpr_slots: int = 2,
    aed_slots: int = 1,
    nearest_aed: Aed | None = None,
) -> Incident:
    """An incident row as selection would leave it (no alerts: see ``create_alert``)."""
    incident = Incident(
        centre=centre,
        external_ref=external_ref or f"CAD-{next(_phones)}",
        request_hash="0" * 64,
        kind=kind,
        location=geography_point(at),
        address=address,
        access_notes=access_notes,
        flags={},
        status=status,
        radius_m=500.0,
        cpr_slots=cpr_slots,
        aed_slots=aed_slots if nearest_aed is not None else 0,
        nearest_aed_id=nearest_aed.id if nearest_aed is not None else None,
        created_at=created_at,
        updated_at=created_at,
    )
    session.add(incident)
    await session.flush()
    return incident


async def create_alert(
    session: AsyncSession,
    *,
    incident: Incident,
    volunteer: Volunteer,
    now: datetime,
    code: str | None = None,
    distance_m: float = 200.0,
    aed_detour_m: float | None = None,
    deadline: timedelta = timedelta(minutes=2),
    queue: bool = True,
    sms_status: str = "queued",
) -> Alert:
    """An alert and (by default) its queued SMS, as the incident's transaction leaves them.

    ``sms_status`` other than queued: as if the worker had since sent it that far
    (the SMS row and the alert's mirrored delivery status both).
    """
    alert = Alert(
        incident_id=incident.id,
        volunteer_id=volunteer.id,
        code=code or f"{next(_phones) % 9000 + 1000}",
        distance_m=distance_m,
        location_source="place",
        aed_detour_m=aed_detour_m,
        created_at=now,
        updated_at=now,
    )
    session.add(alert)
    await session.flush()
    if queue:
        await queue_sms(
            session,
            [
                OutboundSms(
                    phone=volunteer.phone or "",
                    body=f"CPR ALERT: reply YES {alert.code}",
                    purpose="alert",
                    volunteer_id=volunteer.id,
                    incident_id=incident.id,
                    alert_id=alert.id,
                    deadline_at=now + deadline,
                )
            ],
            now=now,
        )
        if sms_status != "queued":
            await session.execute(
                update(Message)
                .where(Message.alert_id == alert.id)
                .values(status=sms_status, attempts=1)
            )
            alert.delivery_status = sms_status
            await session.flush()
    return alert


async def alert_of(session: AsyncSession, incident: Incident, volunteer: Volunteer) -> Alert | None:
    """The volunteer's alert on the incident as stored now, or None when not alerted."""
    return (
        await session.execute(
            select(Alert)
            .where(Alert.incident_id == incident.id, Alert.volunteer_id == volunteer.id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def with_code(session: AsyncSession, volunteer_id: uuid.UUID, body: str) -> str:
    """``YES`` as the alert SMS asks for it: with the code of the volunteer's latest alert.

    (A code-less YES that would stand others down is asked for the code: the
    sender trust model in docs/reliability.md.)
    """
    if body != "YES":
        return body
    code = (
        await session.execute(
            select(Alert.code)
            .where(Alert.volunteer_id == volunteer_id)
            .order_by(Alert.created_at.desc())
            .limit(1)
        )
    ).scalar_one()
    return f"YES {code}"


def savepoints(session: AsyncSession) -> Transactions:
    """Transactions for code that opens its own (a reply), each a savepoint of
    ``session``'s: rolled back with the test, or committed with the caller's block."""

    @asynccontextmanager
    async def savepoint() -> AsyncIterator[AsyncSession]:
        async with session.begin_nested():
            yield session

    return savepoint


async def reply_from(
    session: AsyncSession, settings: Settings, now: datetime, volunteer: Volunteer, body: str
) -> str:
    """The volunteer texts ``body`` (a YES with their latest alert's code); the answer."""
    return await handle_inbound_sms(
        savepoints(session),
        sms=InboundSms(
            f"SM{uuid.uuid4().hex}",
            volunteer.phone or "",
            await with_code(session, volunteer.id, body),
        ),
        now=now,
        settings=settings,
    )


async def committed_key(url: str, role: Role) -> dict[str, str]:
    """A key committed on its own connection, where any other connection (the limiter's,
    the location route's autocommit one) can see it."""
    engine = create_engine(url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            volunteer = await create_volunteer(session) if role == "volunteer" else None
            return await create_key(session, role=role, volunteer=volunteer)
    finally:
        await engine.dispose()
