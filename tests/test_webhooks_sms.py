"""POST /webhooks/twilio/sms: signed replies change alert state once and are answered."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from app.api.routers.webhooks import signed_by_twilio, twiml
from app.core.clock import FrozenClock
from app.core.models import Alert, Incident, Message, Volunteer
from app.core.settings import Settings
from tests.factories import (
    STOCKHOLM,
    create_aed,
    create_alert,
    create_incident,
    create_volunteer,
    make_settings,
    offset,
)
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, MESSAGING_SERVICE_SID, FakeTwilio

SMS_URL = "https://responder.example.org/webhooks/twilio/sms"
TWILIO = FakeTwilio()


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_messaging_service_sid=MESSAGING_SERVICE_SID,
        public_base_url="https://responder.example.org",
    )


async def reply(
    client: httpx.AsyncClient, volunteer: Volunteer | str, body: str, *, sid: str | None = None
) -> str:
    phone = volunteer if isinstance(volunteer, str) else volunteer.phone or ""
    content, headers = TWILIO.inbound_sms(SMS_URL, from_phone=phone, body=body, message_sid=sid)
    response = await client.post("/webhooks/twilio/sms", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    match = re.search(r"<Message>(.*)</Message>", response.text, re.S)
    assert match is not None, response.text
    return html.unescape(match.group(1))


async def one_alert(
    session: AsyncSession, clock: FrozenClock, **incident: object
) -> tuple[Incident, Alert, Volunteer]:
    created = await create_incident(session, created_at=clock.now(), **incident)  # type: ignore[arg-type]
    volunteer = await create_volunteer(session, language="en")
    alert = await create_alert(
        session, incident=created, volunteer=volunteer, now=clock.now(), code="4821"
    )
    return created, alert, volunteer


async def inbound_count(session: AsyncSession) -> int:
    return (
        await session.execute(select(func.count()).where(Message.direction == "in"))
    ).scalar_one()


async def test_yes_assigns_cpr_and_answers_with_address_notes_and_map_link(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    _, alert, volunteer = await one_alert(session, clock)

    answer = await reply(client, volunteer, "Yes")

    await session.refresh(alert)
    assert (alert.response, alert.role, alert.accepted_at) == ("accepted", "cpr", clock.now())
    assert alert.delivery_status == "queued", "a YES counts whatever the receipts say"
    assert "Drottninggatan 1, Stockholm" in answer
    assert "Door code 1234, 3rd floor" in answer
    assert "https://maps.google.com/?q=59.33260,18.06490" in answer


async def test_replayed_message_sid_gets_the_stored_answer_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    _, alert, volunteer = await one_alert(session, clock)
    first = await reply(client, volunteer, "YES 4821", sid="SM" + "1" * 32)
    clock.advance(timedelta(seconds=30))

    again = await reply(client, volunteer, "NO", sid="SM" + "1" * 32)

    assert again == first
    await session.refresh(alert)
    assert (alert.response, alert.accepted_at) == ("accepted", clock.now() - timedelta(seconds=30))
    assert await inbound_count(session) == 1


@pytest.mark.parametrize("body", ["ja 4821", "4821 YES", "YES", "ok!"])
async def test_accept_with_code_before_or_after_or_none(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock, body: str
) -> None:
    _, alert, volunteer = await one_alert(session, clock)
    await reply(client, volunteer, body)
    await session.refresh(alert)
    assert alert.response == "accepted"


async def test_reply_without_code_with_several_open_alerts_asks_which(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    _, first, volunteer = await one_alert(session, clock)
    other = await create_incident(session, created_at=clock.now(), address="Elsewhere 2")
    second = await create_alert(
        session, incident=other, volunteer=volunteer, now=clock.now(), code="1234"
    )

    answer = await reply(client, volunteer, "YES")

    assert "4821" in answer
    assert "1234" in answer
    for alert in (first, second):
        await session.refresh(alert)
        assert alert.response == "pending"
    await reply(client, volunteer, "YES 1234")
    await session.refresh(second)
    assert second.response == "accepted"


async def test_reply_to_a_cancelled_incident_is_told_the_alert_has_ended(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    incident, alert, volunteer = await one_alert(session, clock)
    incident.status = "cancelled"
    await session.flush()

    answer = await reply(client, volunteer, "YES 4821")

    assert "This alert has ended. Do not go." in answer
    await session.refresh(alert)
    assert alert.response == "pending"


async def test_unknown_number_gets_a_short_help_and_nothing_changes(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    _, alert, _ = await one_alert(session, clock)
    answer = await reply(client, "+46709999999", "YES")
    assert "not registered" in answer
    await session.refresh(alert)
    assert alert.response == "pending"


@pytest.mark.parametrize("body", ["", "👍🏽🚑", "x" * 2048, "I can maybe come later"])
async def test_unparseable_replies_get_help_and_leave_state_as_it_was(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock, body: str
) -> None:
    _, alert, volunteer = await one_alert(session, clock)
    answer = await reply(client, volunteer, body)
    assert "YES <code>" in answer
    await session.refresh(alert)
    assert alert.response == "pending"


async def test_forged_or_missing_signature_is_403_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    _, alert, volunteer = await one_alert(session, clock)
    content, headers = TWILIO.inbound_sms(SMS_URL, from_phone=volunteer.phone or "", body="YES")
    forged = {**headers, "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
    unsigned = {"Content-Type": headers["Content-Type"]}
    tampered = content.replace(b"YES", b"NO")

    for body, sent_headers in ((content, forged), (content, unsigned), (tampered, headers)):
        response = await client.post("/webhooks/twilio/sms", content=body, headers=sent_headers)
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
    await session.refresh(alert)
    assert alert.response == "pending"
    assert await inbound_count(session) == 0


async def test_oversized_webhook_is_413(client: httpx.AsyncClient, session: AsyncSession) -> None:
    content, headers = TWILIO.inbound_sms(SMS_URL, from_phone="+46701234567", body="x" * 20_000)
    response = await client.post("/webhooks/twilio/sms", content=content, headers=headers)
    assert response.status_code == 413
    assert await inbound_count(session) == 0


async def test_without_twilio_credentials_every_webhook_is_refused(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    app.state.runtime.settings = make_settings()
    content, headers = TWILIO.inbound_sms(SMS_URL, from_phone="+46701234567", body="YES")
    response = await client.post("/webhooks/twilio/sms", content=content, headers=headers)
    assert response.status_code == 403


async def test_slots_fill_in_order_of_arrival_then_the_rest_are_stood_down(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    aed = await create_aed(session, at=offset(STOCKHOLM, bearing_deg=90, distance_m=150))
    incident = await create_incident(session, created_at=clock.now(), nearest_aed=aed)
    detours = [300.0, 50.0, 700.0, 200.0, 250.0]
    people = [await create_volunteer(session, language="en") for _ in detours]
    alerts = [
        await create_alert(
            session,
            incident=incident,
            volunteer=person,
            now=clock.now(),
            aed_detour_m=detour,
            sms_status="delivered",
        )
        for person, detour in zip(people, detours, strict=True)
    ]

    first = await reply(client, people[0], "YES")
    second = await reply(client, people[1], "YES")
    third = await reply(client, people[2], f"YES {alerts[2].code}")  # the last slot: coded

    roles = []
    for alert in alerts:
        await session.refresh(alert)
        roles.append((alert.response, alert.role, alert.stood_down_at is not None))
    assert roles == [
        ("accepted", "cpr", False),
        ("accepted", "aed", False),
        ("accepted", "cpr", False),
        ("pending", None, True),
        ("pending", None, True),
    ]
    assert "start CPR" in first
    assert "Fetch the AED: Centralstationen, Stockholm" in second
    assert "cabinet code 1234" in second
    assert "start CPR" in third
    stand_downs = (
        (await session.execute(select(Message.alert_id).where(Message.purpose == "stand_down")))
        .scalars()
        .all()
    )
    assert set(stand_downs) == {alerts[3].id, alerts[4].id}

    late = await reply(client, people[3], "YES")
    assert "Do not go" in late
    await session.refresh(alerts[3])
    assert alerts[3].response == "pending"


async def test_withdraw_reopens_the_slot_and_arrived_is_recorded(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    incident = await create_incident(session, created_at=clock.now(), cpr_slots=1)
    first = await create_volunteer(session, language="en")
    second = await create_volunteer(session, language="en")
    a1 = await create_alert(session, incident=incident, volunteer=first, now=clock.now())
    a2 = await create_alert(
        session, incident=incident, volunteer=second, now=clock.now(), sms_status="delivered"
    )

    await reply(client, first, f"YES {a1.code}")
    await session.refresh(a2)
    assert a2.stood_down_at is not None, "the only slot is full"

    withdrawn = await reply(client, first, "WITHDRAW")
    assert "no longer on your way" in withdrawn
    await session.refresh(a1)
    assert (a1.response, a1.role) == ("withdrawn", None)

    assert "Do not go" in await reply(client, first, "ARRIVED")
    await session.refresh(a1)
    assert a1.arrived_at is None


async def test_arrived_is_recorded_for_a_responder(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    _, alert, volunteer = await one_alert(session, clock)
    await reply(client, volunteer, "JA")
    clock.advance(timedelta(minutes=4))
    answer = await reply(client, volunteer, "framme")
    assert "arrived" in answer
    await session.refresh(alert)
    assert alert.arrived_at == clock.now()


async def test_stop_start_pause_resume_change_the_volunteer(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(session, language="sv")
    assert "START" in await reply(client, volunteer, "Stopp")
    await session.refresh(volunteer)
    assert volunteer.opted_out is True
    await reply(client, volunteer, "start")
    await session.refresh(volunteer)
    assert volunteer.opted_out is False
    await reply(client, volunteer, "PAUSE 3")
    await session.refresh(volunteer)
    assert volunteer.paused_until == clock.now() + timedelta(hours=3)
    await reply(client, volunteer, "resume")
    await session.refresh(volunteer)
    assert volunteer.paused_until is None


async def keyword(
    client: httpx.AsyncClient, volunteer: Volunteer, body: str, opt_out_type: str
) -> str:
    """The TwiML answer to a keyword that Twilio's Advanced Opt-Out handled itself."""
    content, headers = TWILIO.inbound_sms(
        SMS_URL, from_phone=volunteer.phone or "", body=body, opt_out_type=opt_out_type
    )
    response = await client.post("/webhooks/twilio/sms", content=content, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


async def test_keywords_twilio_answered_change_our_state_but_get_no_second_answer(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, language="en")

    stopped = await keyword(client, volunteer, "STOP", "STOP")
    await session.refresh(volunteer)
    assert volunteer.opted_out is True
    assert "<Message>" not in stopped
    started = await keyword(client, volunteer, "START", "START")
    await session.refresh(volunteer)
    assert volunteer.opted_out is False
    assert "<Message>" not in started
    assert "<Message>" not in await keyword(client, volunteer, "HELP", "HELP")


async def test_a_yes_twilio_counts_as_opt_in_still_gets_its_instructions(
    client: httpx.AsyncClient, session: AsyncSession, clock: FrozenClock
) -> None:
    _, alert, volunteer = await one_alert(session, clock, address="Sveavägen 1")

    answer = await keyword(client, volunteer, "YES", "START")

    assert "Sveavägen 1" in html.unescape(answer)
    await session.refresh(alert)
    assert alert.response == "accepted"


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "Thank you. You are no longer needed.",
        "CPR: Drottninggatan 1 <2 tr> & \"port\" 'B' åäö\nhttps://maps.example/?q=59.3,18.0&z=17",
        "",
    ],
)
def test_the_twiml_answer_is_the_twilio_packages_own(answer: str | None) -> None:
    # Built from a string for its CPU; what Twilio reads must stay what the package wrote.
    expected = MessagingResponse()
    if answer is not None:
        expected.message(answer)
    assert twiml(answer) == str(expected)


SIGNED_URLS = [
    SMS_URL,
    "https://responder.example.org:443/webhooks/twilio/sms",
    "http://responder.example.org:8080/webhooks/twilio/status?message_id=1b2c&x=%20y",
    "https://responder.example.org/webhooks/twilio/status?message_id=3d4e",
]


@pytest.mark.parametrize("url", SIGNED_URLS)
def test_the_signature_check_decides_as_the_twilio_package(url: str) -> None:
    # Our check is the package's RequestValidator for a form, in a fifth of its CPU:
    # it must accept exactly what that accepts (either URL variant) and nothing else.
    validator = RequestValidator(AUTH_TOKEN)
    params = {"MessageSid": "SM1", "From": "+46701234567", "Body": "JA 4821 åäö &=", "To": ""}
    parsed = urlparse(url)
    netloc = parsed.netloc.split(":")[0]
    variants = {
        url,
        parsed._replace(netloc=netloc).geturl(),
        parsed._replace(netloc=f"{netloc}:{443 if parsed.scheme == 'https' else 80}").geturl(),
        url.replace("https://", "http://"),
        url + "x",
    }
    signatures = [validator.compute_signature(variant, params) for variant in variants]
    signatures += [
        validator.compute_signature(url, {**params, "Body": "NEJ 4821"}),
        validator.compute_signature(url, {}),
        "",
        "not base64 ✓",
        signatures[0][:-1],
    ]
    accepted = 0
    for signature in signatures:
        for form in (params, {}):
            expected = validator.validate(url, form, signature)
            assert signed_by_twilio(AUTH_TOKEN, url, form, signature) is expected
            accepted += expected
    assert accepted >= 3
