"""Who may be alerted at all: the eligibility rule, defined here and nowhere else.

A volunteer is eligible while active, has consented (an imported volunteer asked by
SMS has not until they reply YES), not opted out of SMS, not paused, and holding
at least one verified certification of a qualifying kind whose expiry date is today
or later (today in the service's time zone: a certification expiring on 1 March is
valid all of 1 March in Stockholm). The rule is a list of named SQL conditions; the
candidate query ANDs them, the selection record names the first one that fails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.core.errors import NotFound
from app.core.models import Certification, LiveLocation, Place, Volunteer
from app.core.settings import Settings
from app.core.texts import hindrance_text

QUALIFYING_KINDS = ("cpr", "cpr_aed", "healthcare_professional")


def eligibility_conditions(
    volunteer: Any = Volunteer, *, now: datetime, today: date
) -> list[tuple[str, ColumnElement[bool]]]:
    """(name, condition) in the order the explain record reports them."""
    valid_certification = exists(
        select(Certification.id).where(
            Certification.volunteer_id == volunteer.id,
            Certification.status == "verified",
            Certification.kind.in_(QUALIFYING_KINDS),
            Certification.expires_on >= today,
        )
    )
    return [
        ("not_active", volunteer.status == "active"),
        ("no_consent", volunteer.consent_at.is_not(None)),
        ("opted_out", volunteer.opted_out.is_(False)),
        ("paused", volunteer.paused_until.is_(None) | (volunteer.paused_until <= now)),
        ("no_valid_certification", valid_certification),
    ]


def is_eligible(volunteer: Any = Volunteer, *, now: datetime, today: date) -> ColumnElement[bool]:
    return and_(
        *(condition for _, condition in eligibility_conditions(volunteer, now=now, today=today))
    )


def reachable_canary(
    volunteer: Any = Volunteer, *, now: datetime, today: date
) -> ColumnElement[bool]:
    """A canary volunteer (``responder canary``'s test phone) may be alerted: the
    volunteer's conditions but the certification, which a test phone has none of (so it
    never enters the certificate workflows or their reminders). A STOP from the test
    phone, a pause or a suspension still keep it from being alerted."""
    return and_(
        volunteer.canary.is_(True),
        *(
            condition
            for name, condition in eligibility_conditions(volunteer, now=now, today=today)
            if name != "no_valid_certification"
        ),
    )


def ineligibility_reason(
    volunteer: Any = Volunteer, *, now: datetime, today: date
) -> ColumnElement[str | None]:
    """The name of the first failing condition, or NULL when eligible."""
    conditions = eligibility_conditions(volunteer, now=now, today=today)
    return case(*((~condition, name) for name, condition in conditions), else_=None)


def usable_live_location(*, now: Any, max_age: Any, max_accuracy_m: Any) -> ColumnElement[bool]:
    """A live position is the current location only while young and precise enough.

    Written as "recorded after now − max age", a condition on the column itself, so
    that the candidate search's GiST index (point and ``recorded_at``) drops stale
    positions inside the index instead of fetching each from the table (migration
    0015). The selection runs with bitmap scans off (``KNN_PLANNER``), so the planner
    cannot AND in the btree on ``recorded_at`` (kept for the purge) and sort.
    """
    return and_(
        LiveLocation.recorded_at > now - max_age,
        LiveLocation.accuracy_m <= max_accuracy_m,
    )


HindranceCode = Literal[
    "suspended",
    "opted_out",
    "paused",
    "certification_pending",
    "certification_expired",
    "no_certification",
    "no_location",
]


@dataclass(frozen=True)
class Hindrance:
    """One reason a volunteer cannot be alerted now, for their own page in plain words.

    ``until`` is the end of a pause; ``on`` the date the latest certificate expired.
    """

    code: HindranceCode
    until: datetime | None = None
    on: date | None = None


def describe(hindrance: Hindrance, *, language: str, settings: Settings) -> str:
    """The hindrance in plain words, in the volunteer's language (``app/core/texts.py``)."""
    return hindrance_text(
        language,
        hindrance.code,
        zone=settings.zone,
        until=hindrance.until,
        on=hindrance.on,
        reply_number=settings.reply_number,
    )


async def hindrances(
    session: AsyncSession, volunteer_id: uuid.UUID, *, now: datetime, settings: Settings
) -> list[Hindrance]:
    """Every reason the volunteer cannot be alerted now; empty means they can be.

    The same rules as :func:`eligibility_conditions` (and all of them, not only the
    first), plus the one selection adds: somewhere to be, a registered place or a
    usable live location. A certificate counts as pending only while no valid one
    exists; an expired one is named with its date.
    """
    today = now.astimezone(settings.zone).date()
    qualifying = and_(
        Certification.volunteer_id == volunteer_id, Certification.kind.in_(QUALIFYING_KINDS)
    )
    row = (
        await session.execute(
            select(
                Volunteer.status,
                Volunteer.opted_out,
                Volunteer.paused_until,
                exists()
                .where(qualifying, Certification.status == "verified")
                .where(Certification.expires_on >= today)
                .label("valid"),
                exists().where(qualifying, Certification.status == "pending").label("pending"),
                select(func.max(Certification.expires_on))
                .where(qualifying, Certification.status == "verified")
                .scalar_subquery()
                .label("expired_on"),
                exists().where(Place.volunteer_id == volunteer_id).label("has_place"),
                exists()
                .where(
                    LiveLocation.volunteer_id == volunteer_id,
                    usable_live_location(
                        now=now,
                        max_age=settings.live_location_max_age,
                        max_accuracy_m=settings.max_location_accuracy_m,
                    ),
                )
                .label("has_live"),
            ).where(Volunteer.id == volunteer_id, Volunteer.status != "erased")
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no volunteer {volunteer_id}")
    found: list[Hindrance] = []
    if row.status != "active":
        found.append(Hindrance("suspended"))
    if row.opted_out:
        found.append(Hindrance("opted_out"))
    if row.paused_until is not None and row.paused_until > now:
        found.append(Hindrance("paused", until=row.paused_until))
    if not row.valid:
        if row.pending:
            found.append(Hindrance("certification_pending"))
        elif row.expired_on is not None:
            found.append(Hindrance("certification_expired", on=row.expired_on))
        else:
            found.append(Hindrance("no_certification"))
    if not (row.has_place or row.has_live):
        found.append(Hindrance("no_location"))
    return found
