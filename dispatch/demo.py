"""A demonstration region around Stockholm's city centre, for the README walk-through.

A few hundred volunteers (verified certifications, a home place each, some with a
weekday work place) and a dozen AEDs at real landmarks, generated from a fixed seed
so every run of ``responder demo`` builds the same region. Loading twice changes
nothing: volunteers are keyed by their (fictional, +46 709…) phone numbers.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Aed, Certification, Place, Volunteer
from app.core.schedule import week_ranges
from app.core.settings import Settings
from geo.points import LatLon, geography_point

CENTRE = LatLon(59.3326, 18.0649)
"""Sergels torg, Stockholm."""
PHONE_PREFIX = "+467090"
SEED = 112

AEDS = [
    (59.3303, 18.0586, "Stockholms centralstation", "Main hall by the ticket office", "always"),
    (59.3322, 18.0649, "Kulturhuset, Sergels torg", "Entrance hall, left of the info desk", None),
    (59.3327, 18.0710, "NK, Hamngatan 18", "Ground floor by the main entrance", None),
    (59.3275, 18.0543, "Stockholms stadshus", "Reception, ask the guard", None),
    (59.3231, 18.0675, "Gamla stan tunnelbana", "Ticket hall, on the wall by the gates", "always"),
    (59.3353, 18.0631, "Hötorgshallen", "By the lift on level -1", None),
    (59.3309, 18.0730, "Kungsträdgården tunnelbana", "Ticket hall, cabinet code 1234", "always"),
    (59.3350, 18.0770, "Östermalms saluhall", "Main entrance, right-hand wall", None),
    (59.3302, 18.0420, "Rådhuset tunnelbana", "Ticket hall, by the gates", "always"),
    (59.3196, 18.0722, "Slussen, bussterminalen", "Waiting room, next to the kiosk", "always"),
    (59.3380, 18.0590, "Tegnérlunden, Stadsbiblioteket", "Reception desk", None),
    (59.3290, 18.0680, "Riksdagshuset", "Visitor entrance, guard booth", None),
]
SHOP_HOURS: list[dict[str, Any]] = [
    {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "07:00", "end": "22:00"}
]
WORK_HOURS: list[dict[str, Any]] = [
    {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00"}
]
FIRST_NAMES = [
    "Anna",
    "Erik",
    "Maria",
    "Lars",
    "Sara",
    "Johan",
    "Emma",
    "Karl",
    "Lina",
    "Omar",
    "Fatima",
    "Nils",
    "Elin",
    "Ali",
    "Ida",
    "Mikael",
    "Sofia",
    "Jonas",
    "Aisha",
    "Per",
]
LAST_NAMES = [
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Olsson",
    "Persson",
    "Svensson",
    "Gustafsson",
    "Pettersson",
    "Jonsson",
    "Hassan",
    "Berg",
]


@dataclass(frozen=True)
class DemoSummary:
    volunteers_added: int
    volunteers_total: int
    aeds_added: int
    centre: LatLon


def _scatter(rng: random.Random, *, within_m: float) -> LatLon:
    """A point around the centre, denser near it (a city centre is)."""
    distance = within_m * math.sqrt(rng.random()) * rng.choice((0.4, 1.0, 1.0))
    bearing = rng.uniform(0, 2 * math.pi)
    north = distance * math.cos(bearing) / 111_320
    east = distance * math.sin(bearing) / (111_320 * math.cos(math.radians(CENTRE.lat)))
    return LatLon(CENTRE.lat + north, CENTRE.lon + east)


async def load_demo(
    session: AsyncSession, *, now: datetime, settings: Settings, volunteers: int = 300
) -> DemoSummary:
    """Insert the demonstration region; anything already there is left as it is."""
    rng = random.Random(SEED)
    today = now.astimezone(settings.zone).date()
    added = 0
    for index in range(volunteers):
        home = _scatter(rng, within_m=1500)
        work = _scatter(rng, within_m=800) if rng.random() < 0.3 else None
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        language = "en" if rng.random() < 0.25 else "sv"
        kind = rng.choice(("cpr", "cpr", "cpr_aed", "healthcare_professional"))
        volunteer_id = (
            await session.execute(
                pg_insert(Volunteer)
                .values(
                    id=uuid.uuid4(),
                    name=name,
                    phone=f"{PHONE_PREFIX}{index:05d}",
                    language=language,
                    status="active",
                    consent_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[Volunteer.phone])
                .returning(Volunteer.id)
            )
        ).scalar_one_or_none()
        if volunteer_id is None:
            continue
        added += 1
        session.add(
            Certification(
                volunteer_id=volunteer_id,
                kind=kind,
                issued_on=today - timedelta(days=rng.randint(30, 700)),
                expires_on=_expiry(rng, today),
                issuer="Svenska HLR-rådet",
                reference=f"HLR-{rng.randint(10000, 99999)}",
                status="verified",
                decided_by="demo",
                decided_at=now,
            )
        )
        session.add(_place(volunteer_id, "home", home, settings.timezone, None))
        if work is not None:
            session.add(_place(volunteer_id, "work", work, settings.timezone, WORK_HOURS))
    aeds_added = 0
    existing = set(
        (await session.execute(select(Aed.address).where(Aed.address.in_([a[2] for a in AEDS]))))
        .scalars()
        .all()
    )
    for lat, lon, address, description, access in AEDS:
        if address in existing:
            continue
        hours = access if access == "always" else SHOP_HOURS
        session.add(
            Aed(
                location=geography_point(LatLon(lat, lon)),
                address=address,
                description=description,
                access=hours,
                open_minutes=None if hours == "always" else week_ranges(SHOP_HOURS),
                status="active",
            )
        )
        aeds_added += 1
    await session.flush()
    total = (
        await session.execute(select(func.count()).where(Volunteer.phone.like(f"{PHONE_PREFIX}%")))
    ).scalar_one()
    return DemoSummary(
        volunteers_added=added, volunteers_total=total, aeds_added=aeds_added, centre=CENTRE
    )


def _expiry(rng: random.Random, today: date) -> date:
    return today + timedelta(days=rng.randint(45, 900))


def _place(
    volunteer_id: uuid.UUID,
    label: str,
    point: LatLon,
    timezone: str,
    schedule: list[dict[str, Any]] | None,
) -> Place:
    return Place(
        volunteer_id=volunteer_id,
        label=label,
        location=geography_point(point),
        timezone=timezone,
        schedule=schedule,
        active_minutes=week_ranges(schedule) if schedule else None,
    )
