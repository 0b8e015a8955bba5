"""Hostile input: forged, missing and replayed webhooks; oversized, odd and SQL-looking bodies."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Incident, Message, Volunteer
from app.core.settings import Settings
from tests.factories import STOCKHOLM, create_key, create_volunteer
from tests.twilio_fake import FakeTwilio, twilio_settings

SMS_PATH = "/webhooks/twilio/sms"
HOSTILE_TEXTS = [
    "Robert'); DROP TABLE volunteer;--",
    "' OR '1'='1",
    "1; SELECT pg_sleep(10)",
    "Åsa Öberg-Ängström 🚑 ناصر 李小龙 \u202e",
    "\ufeffzero\u200bwidth",
    "x" * 10_000,
]


@pytest.fixture
def settings(fake_twilio: FakeTwilio) -> Settings:
    return twilio_settings(fake_twilio, rate_limit_unsigned_webhook_per_minute=5)


async def client_at(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client at its own address, so its unsigned requests have their own budget."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def stranger(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_at(app, "203.0.113.77"):
        yield client


@pytest.fixture
async def forger(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_at(app, "203.0.113.78"):
        yield client


def signed_sms(
    fake: FakeTwilio, settings: Settings, *, sender: str, body: str, sid: str
) -> tuple[bytes, dict[str, str]]:
    return fake.inbound_sms(
        settings.public_base_url + SMS_PATH, from_phone=sender, body=body, message_sid=sid
    )


async def inbound_count(session: AsyncSession) -> int:
    return (
        await session.execute(select(func.count()).where(Message.direction == "in"))
    ).scalar_one()


async def test_forged_and_missing_signatures_are_refused_and_change_nothing(
    forger: httpx.AsyncClient, session: AsyncSession, fake_twilio: FakeTwilio, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    body, headers = signed_sms(
        fake_twilio, settings, sender=volunteer.phone or "", body="STOP", sid="SM" + "1" * 32
    )
    forged = {**headers, "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
    unsigned = {"Content-Type": headers["Content-Type"]}
    tampered = body.replace(b"STOP", b"START")
    other_url, other_headers = signed_sms(
        fake_twilio, settings, sender=volunteer.phone or "", body="STOP", sid="SM" + "2" * 32
    )

    answers = [
        await forger.post(SMS_PATH, content=body, headers=forged),
        await forger.post(SMS_PATH, content=body, headers=unsigned),
        await forger.post(SMS_PATH, content=tampered, headers=headers),
        await forger.post("/webhooks/twilio/status", content=other_url, headers=other_headers),
    ]

    assert [answer.status_code for answer in answers] == [403, 403, 403, 403]
    assert {answer.headers["content-type"] for answer in answers} == {"application/problem+json"}
    await session.refresh(volunteer)
    assert volunteer.opted_out is False
    assert await inbound_count(session) == 0


async def test_a_replayed_webhook_gets_the_stored_answer_and_changes_nothing_more(
    client: httpx.AsyncClient, session: AsyncSession, fake_twilio: FakeTwilio, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    body, headers = signed_sms(
        fake_twilio, settings, sender=volunteer.phone or "", body="PAUSE 2", sid="SM" + "3" * 32
    )

    first = await client.post(SMS_PATH, content=body, headers=headers)
    replayed = [await client.post(SMS_PATH, content=body, headers=headers) for _ in range(3)]

    assert first.status_code == 200
    assert {answer.text for answer in replayed} == {first.text}
    assert await inbound_count(session) == 1


async def test_unsigned_webhook_floods_are_rate_limited_but_signed_ones_never(
    stranger: httpx.AsyncClient, session: AsyncSession, fake_twilio: FakeTwilio, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    flood = [
        (await stranger.post(SMS_PATH, content=b"Body=hi", headers={"X-Twilio-Signature": "x"}))
        for _ in range(7)
    ]
    signed = []
    for number in range(3):
        body, headers = signed_sms(
            fake_twilio, settings, sender=volunteer.phone or "", body="HELP", sid=f"SM{number:032d}"
        )
        signed.append(await stranger.post(SMS_PATH, content=body, headers=headers))

    assert [answer.status_code for answer in flood] == [403] * 5 + [429] * 2
    assert int(flood[-1].headers["retry-after"]) >= 1
    assert [answer.status_code for answer in signed] == [200] * 3


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
async def test_hostile_sms_text_is_answered_and_stored_as_sent(
    client: httpx.AsyncClient,
    session: AsyncSession,
    fake_twilio: FakeTwilio,
    settings: Settings,
    text: str,
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    body, headers = signed_sms(
        fake_twilio, settings, sender=volunteer.phone or "", body=text, sid="SM" + "9" * 32
    )

    answer = await client.post(SMS_PATH, content=body, headers=headers)

    assert answer.status_code in (200, 413)
    if answer.status_code == 200:
        assert answer.headers["content-type"].startswith("application/xml")
        stored = (
            await session.execute(select(Message.body).where(Message.direction == "in"))
        ).scalar_one()
        assert stored
        assert text.startswith(stored)
    assert (await session.execute(select(func.count()).select_from(Volunteer))).scalar_one() >= 1


async def test_invalid_utf8_and_oversized_webhooks_get_a_clear_4xx(
    client: httpx.AsyncClient, fake_twilio: FakeTwilio, settings: Settings
) -> None:
    _, headers = signed_sms(fake_twilio, settings, sender="+46701111111", body="YES", sid="SM1")
    huge = urlencode({"Body": "x" * 200_000}).encode()

    invalid = await client.post(SMS_PATH, content=b"Body=\xff\xfe", headers=headers)
    oversized = await client.post(SMS_PATH, content=huge, headers=headers)

    assert invalid.status_code in (400, 403)
    assert oversized.status_code in (403, 413)


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
async def test_hostile_api_strings_are_stored_verbatim_or_refused_with_422(
    client: httpx.AsyncClient, session: AsyncSession, text: str
) -> None:
    dispatcher = await create_key(session, role="dispatcher")
    payload = {
        "external_ref": text[:100],
        "kind": "cardiac_arrest",
        "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
        "address": text,
        "access_notes": text,
    }

    answer = await client.post("/v1/incidents", json=payload, headers=dispatcher)

    assert answer.status_code in (201, 422), answer.text
    if answer.status_code == 201:
        stored = await session.get(Incident, answer.json()["id"])
        assert stored is not None
        assert stored.address == text


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        (b'{"external_ref": ', "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b"external_ref=x", "application/x-www-form-urlencoded", 415),
        (b"{}", "text/plain", 415),
        (b'{"lat": NaN}', "application/json", 400),
    ],
)
async def test_malformed_bodies_get_a_clear_4xx(
    client: httpx.AsyncClient,
    session: AsyncSession,
    content: bytes,
    content_type: str,
    expected: int,
) -> None:
    dispatcher = await create_key(session, role="dispatcher")

    answer = await client.post(
        "/v1/incidents", content=content, headers={**dispatcher, "Content-Type": content_type}
    )

    assert answer.status_code in (expected, 422)
    assert answer.headers["content-type"] == "application/problem+json"


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin = await create_key(session, role="admin")
    huge = b'{"locations": [' + b" " * (settings.max_body_bytes + 1) + b"]}"

    async def stream() -> AsyncIterator[bytes]:
        yield huge

    declared = await client.post(
        "/v1/aeds", content=huge, headers={**admin, "Content-Type": "application/json"}
    )
    undeclared = await client.post(
        "/v1/aeds", content=stream(), headers={**admin, "Content-Type": "application/json"}
    )

    assert declared.status_code == 413
    assert undeclared.status_code == 413


@pytest.fixture
async def strict_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Fails the test if any exception escapes the app (uvicorn would reset the connection)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.mark.parametrize(
    ("sender", "text", "sid"),
    [
        ("+4670\x001234567", "HELP", "SM" + "4" * 32),
        (None, "HELP", "SM\x00" + "4" * 30),
    ],
    ids=["nul-in-from", "nul-in-message-sid"],
)
async def test_a_signed_sms_with_a_nul_in_its_number_or_id_gets_help_and_stores_nothing(
    strict_client: httpx.AsyncClient,
    session: AsyncSession,
    fake_twilio: FakeTwilio,
    settings: Settings,
    sender: str | None,
    text: str,
    sid: str,
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    body, headers = signed_sms(
        fake_twilio, settings, sender=sender or volunteer.phone or "", body=text, sid=sid
    )

    answer = await strict_client.post(SMS_PATH, content=body, headers=headers)
    after = await strict_client.get("/healthz")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    assert "<Message>" in answer.text
    assert after.status_code == 200
    assert await inbound_count(session) == 0


async def test_a_nul_in_a_signed_sms_text_reads_as_a_space(
    strict_client: httpx.AsyncClient,
    session: AsyncSession,
    fake_twilio: FakeTwilio,
    settings: Settings,
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    body, headers = signed_sms(
        fake_twilio, settings, sender=volunteer.phone or "", body="PAUSE\x002", sid="SM" + "5" * 32
    )

    answer = await strict_client.post(SMS_PATH, content=body, headers=headers)

    assert answer.status_code == 200
    stored = (
        await session.execute(select(Message.body).where(Message.direction == "in"))
    ).scalar_one()
    assert stored == "PAUSE 2"
    await session.refresh(volunteer)
    assert volunteer.paused_until is not None


async def test_a_signed_status_callback_with_a_nul_in_its_message_sid_is_400(
    strict_client: httpx.AsyncClient, fake_twilio: FakeTwilio, settings: Settings
) -> None:
    url = f"{settings.public_base_url}/webhooks/twilio/status?message_id={uuid.uuid4()}"
    params = {"MessageSid": "SM\x00" + "6" * 30, "MessageStatus": "delivered"}

    answer = await strict_client.post(
        url.removeprefix(settings.public_base_url),
        content=urlencode(params).encode(),
        headers=fake_twilio.sign(url, params),
    )
    after = await strict_client.get("/healthz")

    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert after.status_code == 200


@pytest.mark.parametrize(
    ("ip", "content", "extra_headers"),
    [
        ("203.0.113.101", b"Body=" + b"x" * 20_000, {}),
        ("203.0.113.102", b"Body=x", {"Content-Length": str(10 * 1024 * 1024)}),
        ("203.0.113.103", b"Body=\xff\xfe", {}),
    ],
    ids=["streamed-oversized", "declared-oversized", "not-utf8"],
)
async def test_unsigned_webhooks_refused_as_oversized_or_malformed_count_against_the_limit(
    app: FastAPI, ip: str, content: bytes, extra_headers: dict[str, str]
) -> None:
    headers = {"X-Twilio-Signature": "forged", **extra_headers}
    answers = []
    async for client in client_at(app, ip):
        for _ in range(7):
            request = client.build_request("POST", SMS_PATH, content=content, headers=headers)
            answers.append(await client.send(request))

    statuses = [answer.status_code for answer in answers]
    assert statuses[:5] in ([413] * 5, [400] * 5)
    assert statuses[5:] == [429, 429]
