"""What we send to Twilio validates against Twilio's own OpenAPI description."""

from __future__ import annotations

import uuid

import pytest

from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.outbox import OutboundSms, queue_sms
from dispatch.gateway import SendRequest, create_gateway
from dispatch.voice import CallWorker, create_voice_gateway
from dispatch.worker import DispatchWorker
from tests.factories import create_alert, create_incident, create_volunteer
from tests.twilio_fake import (
    CALLS_OPERATION,
    TWILIO_SPEC,
    FakeTwilio,
    RecordedRequest,
    contract_violations,
    create_message_schema,
    schema_from_twilio_spec,
    twilio_settings,
    vendored_schema,
)


@pytest.mark.parametrize("sender", ["messaging_service", "from_number"])
async def test_alert_send_validates_against_twilio_create_message(
    committed_db: str, fake_twilio: FakeTwilio, clock: FrozenClock, sender: str
) -> None:
    overrides = (
        {"twilio_messaging_service_sid": None, "twilio_from": "+46700000000"}
        if sender == "from_number"
        else {}
    )
    settings = twilio_settings(fake_twilio, **overrides)
    engine = create_engine(committed_db, pool_size=2)
    factory = create_session_factory(engine)
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now())
        for language in ("sv", "en"):
            volunteer = await create_volunteer(session, language=language)
            await create_alert(session, incident=incident, volunteer=volunteer, now=clock.now())
    worker = DispatchWorker(
        session_factory=factory, gateway=create_gateway(settings), settings=settings, clock=clock
    )
    try:
        assert await worker.send_due() == 2
    finally:
        await worker.gateway.close()
        await engine.dispose()

    for request in fake_twilio.messages():
        assert contract_violations(request) == []


@pytest.mark.parametrize("purpose", ["voice", "sms_then_voice"])
async def test_every_call_validates_against_twilio_create_call(
    committed_db: str, fake_twilio: FakeTwilio, clock: FrozenClock, purpose: str
) -> None:
    """An alert call (``voice``) and a follow-up call to the silent (``sms_then_voice``)."""
    settings = twilio_settings(
        fake_twilio, twilio_voice_from="+46100000001", call_after="PT1M", calls_per_second=100
    )
    engine = create_engine(committed_db, pool_size=2)
    factory = create_session_factory(engine)
    async with unit_of_work(factory) as session:
        incident = await create_incident(session, created_at=clock.now())
        for language in ("sv", "en"):
            volunteer = await create_volunteer(
                session, language=language, contact_preference=purpose
            )
            alert = await create_alert(
                session, incident=incident, volunteer=volunteer, now=clock.now()
            )
            await queue_sms(
                session,
                [
                    OutboundSms(
                        phone=volunteer.phone or "",
                        body="alert",
                        purpose="alert" if purpose == "voice" else "alert_call",
                        volunteer_id=volunteer.id,
                        incident_id=incident.id,
                        alert_id=alert.id,
                        deadline_at=clock.now() + settings.alert_send_deadline,
                        channel="voice",
                    )
                ],
                now=clock.now(),
            )
    gateway = create_voice_gateway(settings)
    assert gateway is not None
    worker = CallWorker(session_factory=factory, gateway=gateway, settings=settings, clock=clock)
    try:
        assert await worker.send_due() == 2
    finally:
        await gateway.close()
        await engine.dispose()

    assert len(fake_twilio.calls()) == 2
    for request in fake_twilio.calls():
        assert contract_violations(request) == []


async def test_a_body_with_every_kind_of_character_arrives_as_written(
    fake_twilio: FakeTwilio,
) -> None:
    """The form is encoded by us (``dispatch.gateway.form_body``), not by aiohttp: what
    a form decoder reads back is exactly what was sent, whatever the text holds."""
    gateway = create_gateway(twilio_settings(fake_twilio))
    body = "HLR-LARM 12:00: a+b & c=d; 100% ~ ?x:/y, åäö é 😀\nrad två"
    message_id, alert_id = uuid.uuid4(), uuid.uuid4()
    try:
        await gateway.send(
            SendRequest(
                message_id=message_id,
                alert_id=alert_id,
                to="+46701234567",
                body=body,
                validity_s=60,
            )
        )
    finally:
        await gateway.close()

    [request] = fake_twilio.messages()
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.form["Body"] == body
    assert request.form["To"] == "+46701234567"
    assert request.form["ValidityPeriod"] == "60"
    assert request.form["StatusCallback"].endswith(
        f"/webhooks/twilio/status?message_id={message_id}&alert_id={alert_id}"
    )
    assert contract_violations(request) == []


def test_the_contract_check_catches_a_malformed_call() -> None:
    bad = RecordedRequest(
        "POST",
        "/2010-04-01/Accounts/AC" + "a" * 32 + "/Calls.json",
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic x"},
        {"To": "0701234567", "From": "+46100000001", "Timeout": "soon", "Body": "hi"},
    )
    problems = contract_violations(bad)
    assert "unknown parameter Body" in problems
    assert any("Timeout" in problem for problem in problems)
    assert any("endpoint" in problem for problem in problems)
    assert "neither Url, Twiml nor ApplicationSid" in problems


def test_the_contract_check_catches_a_malformed_send() -> None:
    bad = RecordedRequest(
        "POST",
        "/2010-04-01/Accounts/AC" + "a" * 32 + "/Messages.json",
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic x"},
        {"To": "0701234567", "Body": "hi", "ValidityPeriod": "soon", "Colour": "red"},
    )
    problems = contract_violations(bad)
    assert "unknown parameter Colour" in problems
    assert any("ValidityPeriod" in problem for problem in problems)
    assert any("phone-number" in problem for problem in problems)
    assert "neither From nor MessagingServiceSid" in problems


@pytest.mark.skipif(
    not TWILIO_SPEC.is_file(), reason="Twilio's OpenAPI file is not beside the project"
)
def test_the_vendored_contract_matches_twilios_openapi_file() -> None:
    assert create_message_schema() == schema_from_twilio_spec(TWILIO_SPEC)
    assert vendored_schema(CALLS_OPERATION) == schema_from_twilio_spec(TWILIO_SPEC, CALLS_OPERATION)
