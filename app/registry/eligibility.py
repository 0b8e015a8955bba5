"""Who may be alerted at all: the eligibility rule, defined here and nowhere else.

A volunteer is eligible while active, has consented (an imported volunteer asked by
SMS has not until they reply YES), not opted out of SMS, not paused, and holding
at least one verified certification of a qualifying kind whose expiry date is today
or later (today in the service's time zone: a certification expiring on 1 March is
valid all of 1 March in Stockholm). The rule is a list of named SQL conditions; the
candidate query ANDs them, the selection record names the first one that fails.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, exists, select
from sqlalchemy.sql.elements import ColumnElement

from app.core.models import Certification, Volunteer

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


def ineligibility_reason(
    volunteer: Any = Volunteer, *, now: datetime, today: date
) -> ColumnElement[str | None]:
    """The name of the first failing condition, or NULL when eligible."""
    conditions = eligibility_conditions(volunteer, now=now, today=today)
    return case(*((~condition, name) for name, condition in conditions), else_=None)
