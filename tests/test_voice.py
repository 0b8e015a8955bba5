"""Voice calls end to end: the real Twilio client places calls at the local fake, which
signs the call's webhooks (answered, a key, its status) as Twilio would.

A ``voice`` volunteer beside the AED is called instead of texted, presses 1 and
becomes the AED runner; an ``sms_then_voice`` volunteer silent for ``CALL_AFTER`` is
called and presses 2; a machine is hung up on and the SMS stays valid; the alert is
read again when the call is answered and when a key arrives.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Alert, CallStep, IncidentEvent, Message, Volunteer
from app.core.settings import Settings
from app.runtime import Runtime
from dispatch.channels import queue_follow_up_calls
from dispatch.gateway import create_gateway
from dispatch.voice import CallWorker, create_voice_gateway
from dispatch.worker import DispatchWorker
from tests.factories import (
    STOCKHOLM,
    create_aed,
    create_key,
    create_volunteer,
    make_settings,
    offset,
)
from tests.twilio_fake import FakeTwilio, RecordedRequest, contract_violations, twilio_settings

BASE = "https://responder.example.org"
VOICE_FROM = "+46100000001"
AED_AT = offset(STOCKHOLM, bearing_deg=270, distance_m=250)


@dataclass
class VoiceWorld:
    client: httpx.AsyncClient
    fake: FakeTwilio
    texts: DispatchWorker
    calls: CallWorker
    factory: async_sessionmaker[AsyncSession]
    settings: Settings
    clock: FrozenClock
    dispatcher: dict[str, str]

    async def volunteer(
        self, *, distance_m: float, bearing_deg: float = 90, **kw: Any
    ) -> Volunteer:
        async with unit_of_work(self.factory) as session:
            return await create_volunteer(
                session,
                near=offset(STOCKHOLM, bearing_deg=bearing_deg, distance_m=distance_m),
                **kw,
            )

    async def create_incident(self, ref: str = "CAD-VOICE-1") -> str:
        response = await self.client.post(
            "/v1/incidents",
            headers=self.dispatcher,
            json={
                "external_ref": ref,
                "kind": "cardiac_arrest",
                "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                "address": "Drottninggatan 1, Stockholm",
                "access_notes": "Door code 1234",
            },
        )
        assert response.status_code == 201, response.text
        incident_id: str = response.json()["id"]
        return incident_id

    async def send_texts(self) -> list[RecordedRequest]:
        before = len(self.fake.messages())
        await self.texts.send_due()
        return self.fake.messages()[before:]

    async def place_calls(self) -> list[RecordedRequest]:
        before = len(self.fake.calls())
        await self.calls.send_due()
        return self.fake.calls()[before:]

    async def post(self, signed: tuple[str, bytes, dict[str, str]]) -> httpx.Response:
        url, content, headers = signed
        return await self.client.post(url.removeprefix(BASE), content=content, headers=headers)

    async def answer(self, call: RecordedRequest, answered_by: str = "human") -> str:
        response = await self.post(self.fake.call_answered(call, answered_by=answered_by))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/xml")
        return response.text

    async def press(self, call: RecordedRequest, twiml: str, digits: str) -> str:
        response = await self.post(self.fake.key_pressed(call, twiml, digits))
        assert response.status_code == 200, response.text
        return response.text

    async def status(self, call: RecordedRequest, status: str) -> None:
        response = await self.post(self.fake.call_status_callback(call, status))
        assert response.status_code == 204, response.text

    async def alert_of(self, volunteer: Volunteer) -> Alert:
        async with self.factory() as session:
            return (
                await session.execute(select(Alert).where(Alert.volunteer_id == volunteer.id))
            ).scalar_one()


def said(twiml: str) -> str:
    return " ".join(html.unescape(text) for text in re.findall(r"<Say[^>]*>(.*?)</Say>", twiml))


async def open_world(
    url: str, fake: FakeTwilio, clock: FrozenClock, **overrides: Any
) -> AsyncIterator[VoiceWorld]:
    settings = twilio_settings(
        fake,
        **{
            "public_base_url": BASE,
            "twilio_voice_from": VOICE_FROM,
            "calls_per_second": 100.0,
            **overrides,
        },
    )
    engine: AsyncEngine = create_engine(url, pool_size=5)
    factory = create_session_factory(engine)
    app = create_app(settings, database_url=url, run_worker=False, clock=clock)
    app.state.runtime = Runtime(
        settings=settings, database_url=url, engine=engine, session_factory=factory, clock=clock
    )
    async with unit_of_work(factory) as session:
        dispatcher = await create_key(session, role="dispatcher", name="sos", centre="sos")
        await create_aed(session, at=AED_AT)
    texts = DispatchWorker(
        session_factory=factory, gateway=create_gateway(settings), settings=settings, clock=clock
    )
    voice_gateway = create_voice_gateway(settings)
    assert voice_gateway is not None
    calls = CallWorker(
        session_factory=factory, gateway=voice_gateway, settings=settings, clock=clock
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield VoiceWorld(client, fake, texts, calls, factory, settings, clock, dispatcher)
    await texts.gateway.close()
    await calls.gateway.close()
    await engine.dispose()


@pytest.fixture
async def world(
    committed_db: str, fake_twilio: FakeTwilio, clock: FrozenClock
) -> AsyncIterator[VoiceWorld]:
    async for opened in open_world(committed_db, fake_twilio, clock, call_after="PT1M"):
        yield opened


async def test_a_voice_volunteer_is_called_presses_1_and_becomes_the_aed_runner(
    world: VoiceWorld,
) -> None:
    runner = await world.volunteer(
        distance_m=250, bearing_deg=270, contact_preference="voice", language="en"
    )
    texter = await world.volunteer(distance_m=100)
    incident_id = await world.create_incident()

    texts = await world.send_texts()
    assert [request.form["To"] for request in texts] == [texter.phone]
    (call,) = await world.place_calls()
    assert contract_violations(call) == []
    assert call.form["To"] == runner.phone
    assert call.form["From"] == VOICE_FROM
    assert call.form["MachineDetection"] == "Enable"
    assert int(call.form["Timeout"]) == world.settings.call_ring_timeout_s
    assert call.lists["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]

    await world.status(call, "initiated")
    await world.status(call, "ringing")
    alerts = await world.client.get(f"/v1/incidents/{incident_id}/alerts", headers=world.dispatcher)
    shown = {alert["id"]: alert for alert in alerts.json()}
    runner_alert = await world.alert_of(runner)
    assert shown[str(runner_alert.id)]["call_status"] == "ringing"

    prompt = await world.answer(call)
    assert '<Gather action="' in prompt
    assert 'input="dtmf"' in prompt
    assert 'numDigits="1"' in prompt
    assert prompt.count("<Gather") == 2  # said again once on silence
    assert 'language="en-GB"' in prompt
    assert "250 metres from you" in said(prompt)
    assert "Press 1" in said(prompt)
    assert "Drottninggatan" not in said(prompt)  # nothing for a voicemail to keep

    accepted = await world.press(call, prompt, "1")
    assert "Fetch the defibrillator at Centralstationen, Stockholm" in said(accepted)
    assert "Drottninggatan 1, Stockholm" in said(accepted)
    assert "<Hangup" in accepted
    alert = await world.alert_of(runner)
    assert (alert.response, alert.role) == ("accepted", "aed")
    view = (await world.client.get(f"/v1/incidents/{incident_id}", headers=world.dispatcher)).json()
    assert [(r["volunteer_id"], r["role"]) for r in view["responders"]] == [(str(runner.id), "aed")]

    # Twilio retries the key's webhook: the same answer, nothing applied twice.
    assert await world.press(call, prompt, "1") == accepted
    instructions = await world.send_texts()
    assert [request.form["To"] for request in instructions] == [runner.phone]
    assert "Fetch the AED" in instructions[0].form["Body"]

    await world.status(call, "in-progress")
    await world.status(call, "completed")
    async with world.factory() as session:
        message = (
            await session.execute(select(Message).where(Message.provider_sid == call.sid))
        ).scalar_one()
        types = list(
            (
                await session.execute(
                    select(IncidentEvent.type).where(IncidentEvent.incident_id == incident_id)
                )
            ).scalars()
        )
    assert (message.status, message.call_status, message.answered_by) == (
        "delivered",
        "completed",
        "human",
    )
    assert types.count("alert.call") == 4  # initiated, ringing, in-progress, completed
    assert "alert.accepted" in types


async def test_an_sms_then_voice_volunteer_silent_for_call_after_is_called_and_presses_2(
    world: VoiceWorld,
) -> None:
    silent = await world.volunteer(distance_m=100, contact_preference="sms_then_voice")
    other = await world.volunteer(distance_m=200)
    await world.create_incident()
    texts = await world.send_texts()
    assert {request.form["To"] for request in texts} == {silent.phone, other.phone}
    assert await world.place_calls() == []

    assert (
        await queue_follow_up_calls(world.factory, now=world.clock.now(), settings=world.settings)
        == 0
    )
    world.clock.advance(timedelta(seconds=61))
    now = world.clock.now()
    assert await queue_follow_up_calls(world.factory, now=now, settings=world.settings) == 1
    assert await queue_follow_up_calls(world.factory, now=now, settings=world.settings) == 0
    (call,) = await world.place_calls()
    assert call.form["To"] == silent.phone
    assert contract_violations(call) == []

    prompt = await world.answer(call)
    assert 'language="sv-SE"' in prompt
    assert "Tryck 1" in said(prompt)
    declined = await world.press(call, prompt, "2")
    assert "Tack för svaret" in said(declined)
    assert (await world.alert_of(silent)).response == "declined"
    assert (await world.alert_of(other)).response == "pending"
    assert await world.place_calls() == []


async def test_a_machine_is_hung_up_on_and_the_sms_stays_valid(world: VoiceWorld) -> None:
    person = await world.volunteer(distance_m=100, contact_preference="sms_then_voice")
    await world.create_incident()
    (text,) = await world.send_texts()
    world.clock.advance(timedelta(seconds=61))
    await queue_follow_up_calls(world.factory, now=world.clock.now(), settings=world.settings)
    (call,) = await world.place_calls()

    twiml = await world.answer(call, answered_by="machine_start")
    assert "<Say" not in twiml
    assert "<Hangup" in twiml
    alert = await world.alert_of(person)
    assert alert.response == "pending"

    content, headers = world.fake.inbound_sms(
        f"{BASE}/webhooks/twilio/sms", from_phone=person.phone or "", body="JA"
    )
    reply = await world.client.post("/webhooks/twilio/sms", content=content, headers=headers)
    assert reply.status_code == 200
    assert (await world.alert_of(person)).response == "accepted"
    async with world.factory() as session:
        message = (
            await session.execute(select(Message).where(Message.provider_sid == call.sid))
        ).scalar_one()
    assert (message.status, message.answered_by) == ("undelivered", "machine_start")
    assert text.form["To"] == person.phone


async def test_the_alert_is_read_again_when_the_call_is_answered_and_when_a_key_arrives(
    world: VoiceWorld,
) -> None:
    first = await world.volunteer(distance_m=100, contact_preference="voice")
    second = await world.volunteer(distance_m=150, contact_preference="voice")
    incident_id = await world.create_incident()
    calls = {call.form["To"]: call for call in await world.place_calls()}
    prompt = await world.answer(calls[first.phone or ""])
    assert "<Gather" in prompt

    cancelled = await world.client.post(
        f"/v1/incidents/{incident_id}/cancel", headers=world.dispatcher
    )
    assert cancelled.status_code == 200
    late_key = await world.press(calls[first.phone or ""], prompt, "1")
    assert "This alert has ended" in said(late_key) or "Larmet är avslutat" in said(late_key)
    assert (await world.alert_of(first)).response == "pending"
    late_answer = await world.answer(calls[second.phone or ""])
    assert "<Gather" not in late_answer
    assert "avslutat" in said(late_answer)


async def test_a_voice_volunteer_hears_the_cancellation_in_a_call_and_gets_the_sms(
    world: VoiceWorld,
) -> None:
    landline = await world.volunteer(distance_m=100, contact_preference="voice", language="en")
    texter = await world.volunteer(distance_m=200, contact_preference="sms_then_voice")
    incident_id = await world.create_incident()
    (alert_call,) = await world.place_calls()
    await world.send_texts()

    cancelled = await world.client.post(
        f"/v1/incidents/{incident_id}/cancel", headers=world.dispatcher
    )
    assert cancelled.status_code == 200
    (cancel_call,) = await world.place_calls()
    assert cancel_call.form["To"] == landline.phone
    assert contract_violations(cancel_call) == []
    spoken = said(await world.answer(cancel_call, answered_by="machine_start"))
    assert spoken.count("cancelled") == 2
    assert "<Gather" not in spoken
    texts = await world.send_texts()
    assert {text.form["To"] for text in texts} == {landline.phone, texter.phone}
    assert alert_call.sid != cancel_call.sid


async def test_no_call_is_placed_once_its_alert_has_ended(world: VoiceWorld) -> None:
    await world.volunteer(distance_m=100, contact_preference="voice")
    incident_id = await world.create_incident()
    cancelled = await world.client.post(
        f"/v1/incidents/{incident_id}/cancel", headers=world.dispatcher
    )
    assert cancelled.status_code == 200
    assert await world.place_calls() == []


async def test_a_yes_by_sms_while_the_phone_rings_is_answered_with_where_to_go(
    world: VoiceWorld,
) -> None:
    person = await world.volunteer(distance_m=100, contact_preference="sms_then_voice")
    await world.create_incident()
    await world.send_texts()
    world.clock.advance(timedelta(seconds=61))
    await queue_follow_up_calls(world.factory, now=world.clock.now(), settings=world.settings)
    (call,) = await world.place_calls()
    prompt = await world.answer(call)
    content, headers = world.fake.inbound_sms(
        f"{BASE}/webhooks/twilio/sms", from_phone=person.phone or "", body="JA"
    )
    assert (
        await world.client.post("/webhooks/twilio/sms", content=content, headers=headers)
    ).status_code == 200
    pressed = await world.press(call, prompt, "1")
    assert "Drottninggatan 1, Stockholm" in said(pressed)
    assert "avslutat" not in said(pressed)
    assert await world.send_texts() == []  # the instructions came with the SMS answer

    again = await world.post(world.fake.call_answered(call))  # a second answer step
    assert again.text == prompt  # stored: the first answer's TwiML


async def test_a_wrong_key_asks_again_and_a_1_then_accepts(world: VoiceWorld) -> None:
    person = await world.volunteer(distance_m=100, contact_preference="voice", language="en")
    await world.create_incident()
    (call,) = await world.place_calls()
    prompt = await world.answer(call)
    again = await world.press(call, prompt, "7")
    assert "attempt=2" in again
    assert "Press 1" in said(again)
    assert (await world.alert_of(person)).response == "pending"
    accepted = await world.press(call, again, "1")
    assert "start CPR" in said(accepted)
    assert (await world.alert_of(person)).response == "accepted"


async def test_calls_go_at_their_own_rate_and_never_hold_up_the_alert_sms(
    committed_db: str, fake_twilio: FakeTwilio, clock: FrozenClock
) -> None:
    async for world in open_world(committed_db, fake_twilio, clock, calls_per_second=1.0):
        for distance in (100, 150, 200):
            await world.volunteer(distance_m=distance, contact_preference="voice")
        texter = await world.volunteer(distance_m=250)
        await world.create_incident()
        assert len(await world.place_calls()) == 1  # a burst of one call per second
        assert [text.form["To"] for text in await world.send_texts()] == [texter.phone]


async def test_calls_per_incident_are_capped_and_the_rest_get_the_sms(
    committed_db: str, fake_twilio: FakeTwilio, clock: FrozenClock
) -> None:
    async for world in open_world(committed_db, fake_twilio, clock, call_max_per_incident=1):
        near = await world.volunteer(distance_m=100, contact_preference="voice")
        far = await world.volunteer(distance_m=200, contact_preference="voice")
        await world.create_incident()
        assert [call.form["To"] for call in await world.place_calls()] == [near.phone]
        assert [text.form["To"] for text in await world.send_texts()] == [far.phone]


async def test_an_unsigned_or_forged_voice_webhook_is_refused(world: VoiceWorld) -> None:
    url = f"{BASE}/webhooks/twilio/voice/answer?message_id=00000000-0000-0000-0000-000000000000"
    params = {"CallSid": "CA" + "0" * 32, "AnsweredBy": "human"}
    headers = world.fake.sign(url, params)
    headers["X-Twilio-Signature"] = "forged"
    response = await world.client.post(
        url.removeprefix(BASE), content=b"CallSid=CA00&AnsweredBy=human", headers=headers
    )
    assert response.status_code == 403
    async with world.factory() as session:
        assert (await session.execute(select(func.count()).select_from(CallStep))).scalar_one() == 0


def test_call_after_must_come_before_replace_after() -> None:
    with pytest.raises(ValidationError, match="CALL_AFTER must be shorter"):
        make_settings(call_after="PT2M", replace_after="PT1M")
    assert make_settings(call_after="PT30S", replace_after="PT1M").call_after == timedelta(
        seconds=30
    )
