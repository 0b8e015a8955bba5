"""Why a volunteer cannot be alerted now, every reason at once, in plain words."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import texts
from app.core.clock import FrozenClock
from app.core.settings import Settings
from app.registry.eligibility import Hindrance, hindrances
from tests.factories import STOCKHOLM, create_key, create_volunteer, make_settings


async def test_an_eligible_volunteer_with_a_place_has_no_hindrance(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    assert await hindrances(session, volunteer.id, now=clock.now(), settings=settings) == []


async def test_a_new_signup_is_told_everything_that_is_missing(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, certification="cpr", certification_status="pending")
    assert await hindrances(session, volunteer.id, now=clock.now(), settings=settings) == [
        Hindrance("certification_pending"),
        Hindrance("no_location"),
    ]


async def test_pause_opt_out_and_suspension_are_all_named(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    until = clock.now() + timedelta(hours=8)
    volunteer = await create_volunteer(
        session, near=STOCKHOLM, status="suspended", opted_out=True, paused_until=until
    )
    assert await hindrances(session, volunteer.id, now=clock.now(), settings=settings) == [
        Hindrance("suspended"),
        Hindrance("opted_out"),
        Hindrance("paused", until=until),
    ]


async def test_an_expired_certificate_is_named_with_its_date(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM, expires_on=date(2026, 11, 1))
    assert await hindrances(session, volunteer.id, now=clock.now(), settings=settings) == [
        Hindrance("certification_expired", on=date(2026, 11, 1))
    ]


async def test_first_aid_alone_is_no_certificate(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM, certification="first_aid")
    assert await hindrances(session, volunteer.id, now=clock.now(), settings=settings) == [
        Hindrance("no_certification")
    ]


async def test_a_usable_live_location_stands_in_for_a_place_but_a_stale_one_does_not(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    fresh = await create_volunteer(
        session, live_at=STOCKHOLM, live_recorded_at=clock.now() - timedelta(minutes=5)
    )
    stale = await create_volunteer(
        session, live_at=STOCKHOLM, live_recorded_at=clock.now() - timedelta(minutes=16)
    )
    assert await hindrances(session, fresh.id, now=clock.now(), settings=settings) == []
    assert await hindrances(session, stale.id, now=clock.now(), settings=settings) == [
        Hindrance("no_location")
    ]


def test_the_opt_out_words_say_how_to_undo_it_and_where_to_text() -> None:
    settings = make_settings(sms_number="+46766861234")
    words = texts.hindrance_text(
        "en", "opted_out", zone=settings.zone, reply_number=settings.reply_number
    )
    assert "START to +46766861234" in words
    swedish = texts.hindrance_text("sv", "paused", zone=settings.zone, until=None)
    assert swedish.startswith("Du har pausat")


async def test_my_api_answer_lists_the_reasons_in_my_language(
    session: AsyncSession, client: httpx.AsyncClient
) -> None:
    volunteer = await create_volunteer(session, language="sv", certification_status="pending")
    token = await create_key(session, role="volunteer", volunteer=volunteer)

    answer = (await client.get("/v1/me", headers=token)).json()

    assert answer["eligible"] is False
    assert [reason["code"] for reason in answer["not_alertable_because"]] == [
        "certification_pending",
        "no_location",
    ]
    assert answer["not_alertable_because"][0]["text"].startswith("Ditt certifikat väntar")
