"""The eligibility rule, one condition at a time, evaluated in SQL as selection uses it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Certification, Volunteer
from app.registry.eligibility import ineligibility_reason, is_eligible
from tests.factories import create_volunteer, make_settings

# 23:30 UTC on 28 Feb is 00:30 on 1 March in Stockholm: "today" there is 1 March.
NOW = datetime(2027, 2, 28, 23, 30, tzinfo=UTC)
TODAY = NOW.astimezone(make_settings().zone).date()


async def judge(session: AsyncSession, volunteer: Volunteer) -> tuple[bool, str | None]:
    row = (
        await session.execute(
            select(
                is_eligible(Volunteer, now=NOW, today=TODAY),
                ineligibility_reason(Volunteer, now=NOW, today=TODAY),
            ).where(Volunteer.id == volunteer.id)
        )
    ).one()
    return bool(row[0]), row[1]


def test_today_is_the_date_in_the_service_time_zone() -> None:
    assert date(2027, 3, 1) == TODAY


async def test_an_active_volunteer_with_a_verified_cpr_certificate_is_eligible(
    session: AsyncSession,
) -> None:
    assert await judge(session, await create_volunteer(session)) == (True, None)


async def test_a_suspended_volunteer_is_not_eligible(session: AsyncSession) -> None:
    volunteer = await create_volunteer(session, status="suspended")
    assert await judge(session, volunteer) == (False, "not_active")


async def test_an_erased_volunteer_is_not_eligible(session: AsyncSession) -> None:
    volunteer = await create_volunteer(session, status="erased")
    assert await judge(session, volunteer) == (False, "not_active")


async def test_an_opted_out_volunteer_is_not_eligible(session: AsyncSession) -> None:
    volunteer = await create_volunteer(session, opted_out=True)
    assert await judge(session, volunteer) == (False, "opted_out")


async def test_a_paused_volunteer_is_not_eligible_until_the_pause_ends(
    session: AsyncSession,
) -> None:
    paused = await create_volunteer(session, paused_until=NOW + timedelta(minutes=1))
    assert await judge(session, paused) == (False, "paused")
    ended = await create_volunteer(session, paused_until=NOW)
    assert await judge(session, ended) == (True, None)


@pytest.mark.parametrize("status", ["pending", "rejected", "revoked"])
async def test_an_unverified_certificate_does_not_qualify(
    session: AsyncSession, status: str
) -> None:
    volunteer = await create_volunteer(session, certification_status=status)
    assert await judge(session, volunteer) == (False, "no_valid_certification")


@pytest.mark.parametrize(
    ("kind", "qualifies"),
    [("cpr", True), ("cpr_aed", True), ("healthcare_professional", True), ("first_aid", False)],
)
async def test_only_resuscitation_kinds_qualify(
    session: AsyncSession, kind: str, qualifies: bool
) -> None:
    volunteer = await create_volunteer(session, certification=kind)
    assert (await judge(session, volunteer))[0] is qualifies


async def test_a_volunteer_without_any_certificate_is_not_eligible(
    session: AsyncSession,
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    assert await judge(session, volunteer) == (False, "no_valid_certification")


async def test_a_certificate_is_valid_through_its_expiry_day_in_the_service_zone(
    session: AsyncSession,
) -> None:
    expiring_today = await create_volunteer(session, expires_on=date(2027, 3, 1))
    assert await judge(session, expiring_today) == (True, None)


async def test_a_certificate_that_expired_yesterday_does_not_qualify(
    session: AsyncSession,
) -> None:
    # In UTC it is still 28 February, but in Stockholm that day is over.
    expired = await create_volunteer(session, expires_on=date(2027, 2, 28))
    assert await judge(session, expired) == (False, "no_valid_certification")


async def test_one_valid_certificate_among_lapsed_ones_is_enough(session: AsyncSession) -> None:
    volunteer = await create_volunteer(session, expires_on=date(2026, 1, 1))
    session.add(
        Certification(
            volunteer_id=volunteer.id,
            kind="cpr_aed",
            issued_on=date(2026, 6, 1),
            expires_on=date(2028, 6, 1),
            issuer="Swedish Resuscitation Council",
            status="verified",
        )
    )
    await session.flush()
    assert await judge(session, volunteer) == (True, None)


async def test_the_first_failing_condition_is_named(session: AsyncSession) -> None:
    volunteer = await create_volunteer(
        session, status="suspended", opted_out=True, certification=None
    )
    assert await judge(session, volunteer) == (False, "not_active")
