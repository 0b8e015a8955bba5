"""Sign-up and login codes at the service level: one answer for every number, hashed
codes, five tries, ten minutes, and limits that keep the pages from pumping SMS."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.buckets import purge_windows
from app.core.clock import FrozenClock
from app.core.errors import InvalidInput, RateLimited
from app.core.models import Message, OneTimeCode, Volunteer
from app.core.settings import Settings
from app.registry.eligibility import is_eligible
from app.registry.signup import CodeCheck, SignupDetails, check_code, request_code
from tests.factories import create_volunteer, make_settings, next_phone

ANNA = SignupDetails(name="Anna Svensson", language="en", email=None, consent_version="v7")
IP = "203.0.113.9"


@asynccontextmanager
async def request(session: AsyncSession) -> AsyncIterator[None]:
    """One request's transaction: whatever raises is rolled back, as the route's is."""
    async with session.begin_nested():
        yield


async def ask(
    session: AsyncSession,
    clock: FrozenClock,
    settings: Settings,
    phone: str,
    *,
    signup: SignupDetails | None = ANNA,
    ip: str = IP,
) -> str:
    async with request(session):
        return await request_code(
            session, phone=phone, signup=signup, client_ip=ip, now=clock.now(), settings=settings
        )


async def enter(
    session: AsyncSession, clock: FrozenClock, settings: Settings, phone: str, code: str
) -> CodeCheck:
    async with request(session):
        return await check_code(session, phone=phone, code=code, now=clock.now(), settings=settings)


async def texts_to(session: AsyncSession, phone: str) -> list[Message]:
    rows = await session.scalars(
        select(Message).where(Message.phone == phone).order_by(Message.created_at, Message.id)
    )
    return list(rows)


def code_in(message: Message) -> str:
    found = re.search(r"\b(\d{6})\b", message.body or "")
    assert found is not None, message.body
    return found.group(1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_a_new_number_gets_a_signup_code_and_exists_once_it_is_entered(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    assert await ask(session, clock, settings, phone) == phone
    [text] = await texts_to(session, phone)
    assert text.purpose == "signup_code"
    assert text.deadline_at == clock.now() + timedelta(minutes=10)
    assert "your code is" in (text.body or "")
    assert await session.scalar(select(Volunteer.id).where(Volunteer.phone == phone)) is None

    clock.advance(timedelta(minutes=3))
    check = await enter(session, clock, settings, phone, code_in(text))

    assert check.outcome == "accepted"
    assert check.signed_up
    volunteer = await session.get(Volunteer, check.volunteer_id)
    assert volunteer is not None
    assert (volunteer.name, volunteer.language, volunteer.consent_version) == (
        "Anna Svensson",
        "en",
        "v7",
    )
    assert volunteer.consent_at == clock.now()
    today = clock.now().date()
    eligible = await session.scalar(
        select(is_eligible(Volunteer, now=clock.now(), today=today)).where(
            Volunteer.id == volunteer.id
        )
    )
    assert eligible is False


async def test_a_registered_number_gets_the_same_answer_and_a_login_code(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    known = await create_volunteer(session, name="Bo Ek", language="sv")
    assert known.phone is not None

    assert await ask(session, clock, settings, known.phone) == known.phone

    [text] = await texts_to(session, known.phone)
    assert text.purpose == "login_code"
    assert "inloggningskod" in (text.body or "")
    row = await session.scalar(select(OneTimeCode).where(OneTimeCode.phone == known.phone))
    assert row is not None
    assert row.signup is None  # what the stranger typed is not kept
    check = await enter(session, clock, settings, known.phone, code_in(text))
    assert (check.outcome, check.volunteer_id, check.signed_up) == ("accepted", known.id, False)
    await session.refresh(known)
    assert known.name == "Bo Ek"


async def test_codes_are_stored_only_as_salted_hashes(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    await ask(session, clock, settings, phone)
    code = code_in((await texts_to(session, phone))[0])
    row = await session.scalar(select(OneTimeCode).where(OneTimeCode.phone == phone))
    assert row is not None
    assert code not in row.code_hash
    assert len(row.code_hash) == 64


async def test_five_wrong_codes_lock_the_code_even_against_the_right_one(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    await ask(session, clock, settings, phone)
    code = code_in((await texts_to(session, phone))[0])

    outcomes = [(await enter(session, clock, settings, phone, wrong(code))) for _ in range(5)]

    assert [(check.outcome, check.tries_left) for check in outcomes] == [
        ("wrong", 4),
        ("wrong", 3),
        ("wrong", 2),
        ("wrong", 1),
        ("locked", 0),
    ]
    assert (await enter(session, clock, settings, phone, code)).outcome == "locked"
    assert (
        await session.scalar(
            select(func.count()).select_from(Volunteer).where(Volunteer.phone == phone)
        )
        == 0
    )


async def test_a_new_code_replaces_a_locked_one(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    await ask(session, clock, settings, phone)
    first = code_in((await texts_to(session, phone))[0])
    for _ in range(5):
        await enter(session, clock, settings, phone, wrong(first))
    clock.advance(timedelta(minutes=1))
    await ask(session, clock, settings, phone)
    second = code_in((await texts_to(session, phone))[1])

    assert (await enter(session, clock, settings, phone, second)).outcome == "accepted"


async def test_an_expired_code_is_refused(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    await ask(session, clock, settings, phone)
    code = code_in((await texts_to(session, phone))[0])

    clock.advance(timedelta(minutes=10))

    assert (await enter(session, clock, settings, phone, code)).outcome == "expired"


async def test_a_code_works_once(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    await ask(session, clock, settings, phone)
    code = code_in((await texts_to(session, phone))[0])
    assert (await enter(session, clock, settings, phone, code)).outcome == "accepted"

    assert (await enter(session, clock, settings, phone, code)).outcome == "used"


async def test_a_login_for_an_unknown_number_sends_nothing_and_behaves_like_a_real_code(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    stranger = next_phone()
    known = await create_volunteer(session)
    assert known.phone is not None
    await ask(session, clock, settings, stranger, signup=None)
    await ask(session, clock, settings, known.phone, signup=None)
    assert await texts_to(session, stranger) == []
    assert [text.purpose for text in await texts_to(session, known.phone)] == ["login_code"]

    def tries(checks: list[CodeCheck]) -> list[tuple[str, int]]:
        return [(check.outcome, check.tries_left) for check in checks]

    guess = "000000"
    for_stranger = [await enter(session, clock, settings, stranger, guess) for _ in range(5)]
    real = code_in((await texts_to(session, known.phone))[0])
    guess = wrong(real)
    for_known = [await enter(session, clock, settings, known.phone, guess) for _ in range(5)]
    assert tries(for_stranger) == tries(for_known)


@pytest.mark.parametrize(
    ("phone", "field"),
    [("+4791234567", "phone"), ("not a number", "phone"), ("+46 70 123", "phone")],
)
async def test_numbers_outside_the_signup_countries_or_invalid_are_refused_and_nothing_stored(
    session: AsyncSession, clock: FrozenClock, settings: Settings, phone: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await ask(session, clock, settings, phone)
    assert refused.value.field == field
    assert await session.scalar(select(func.count()).select_from(OneTimeCode)) == 0
    assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_other_countries_can_be_allowed(session: AsyncSession, clock: FrozenClock) -> None:
    settings = make_settings(signup_countries="SE,NO")
    assert await ask(session, clock, settings, "+4791234567") == "+4791234567"


async def test_a_malformed_code_is_a_field_error_and_not_a_try(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    await ask(session, clock, settings, phone)
    with pytest.raises(InvalidInput):
        await enter(session, clock, settings, phone, "12a456")
    row = await session.scalar(select(OneTimeCode).where(OneTimeCode.phone == phone))
    assert row is not None
    assert row.attempts == 0


async def test_codes_per_number_are_limited_per_hour_for_known_and_unknown_alike(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    known = await create_volunteer(session)
    assert known.phone is not None
    for phone in (next_phone(), known.phone):
        for _ in range(3):
            await ask(session, clock, settings, phone, ip=f"198.51.100.{len(phone)}")
        with pytest.raises(RateLimited) as refused:
            await ask(session, clock, settings, phone, ip="198.51.100.77")
        assert refused.value.retry_after > 0
    clock.advance(timedelta(hours=2))
    await ask(session, clock, settings, known.phone)


async def test_a_refused_request_leaves_no_code_and_no_text(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    for _ in range(3):
        await ask(session, clock, settings, phone)
    with pytest.raises(RateLimited):
        await ask(session, clock, settings, phone)
    assert len(await texts_to(session, phone)) == 3
    codes = select(func.count()).select_from(OneTimeCode).where(OneTimeCode.phone == phone)
    assert await session.scalar(codes) == 3


async def test_codes_per_ip_are_limited(session: AsyncSession, clock: FrozenClock) -> None:
    settings = make_settings(signup_codes_per_ip_per_hour=2)
    await ask(session, clock, settings, next_phone())
    await ask(session, clock, settings, next_phone())
    with pytest.raises(RateLimited):
        await ask(session, clock, settings, next_phone())
    await ask(session, clock, settings, next_phone(), ip="192.0.2.1")


async def test_the_hourly_budget_caps_all_code_texts(
    session: AsyncSession, clock: FrozenClock
) -> None:
    settings = make_settings(signup_sms_per_hour=3)
    for index in range(3):
        await ask(session, clock, settings, next_phone(), ip=f"192.0.2.{index}")
    with pytest.raises(RateLimited):
        await ask(session, clock, settings, next_phone(), ip="192.0.2.99")
    clock.advance(timedelta(hours=2))
    await ask(session, clock, settings, next_phone(), ip="192.0.2.99")


async def test_the_api_limiters_purge_keeps_the_hourly_windows(
    session: AsyncSession, clock: FrozenClock
) -> None:
    settings = make_settings(signup_codes_per_phone_per_hour=1)
    phone = next_phone()
    await ask(session, clock, settings, phone)
    clock.advance(timedelta(minutes=5))
    await purge_windows(session, moment=clock.now())
    with pytest.raises(RateLimited):
        await ask(session, clock, settings, phone)
