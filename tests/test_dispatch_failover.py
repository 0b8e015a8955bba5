"""The second SMS provider: alerts fail over to 46elks, whose webhooks drive the same state.

Real commits, the real Twilio client against the local Twilio fake, the secondary
gateway against the local 46elks fake (``tests/elks_fake.py``), the webhooks through
the app; time is the injected clock and the primary's outage the fake's control.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Alert, Message, Volunteer
from app.runtime import Runtime
from dispatch.gateway import create_gateway, create_secondary_gateway
from dispatch.worker import PRIMARY_REST, DispatchWorker
from tests.elks_fake import WEBHOOK_SECRET, ElksRequest, FakeElks, elks_settings_values
from tests.factories import STOCKHOLM, create_key, create_volunteer, make_settings, offset
from tests.twilio_fake import AUTH_FAILED, OPTED_OUT, Behaviour, FakeTwilio, twilio_settings
from tests.worker_harness import Harness

BASE = "https://responder.example.org"
SMS_URL = f"https://46elks:{WEBHOOK_SECRET}@responder.example.org/webhooks/46elks/sms"
REJECTED = Behaviour(status=400, code=21211)


@dataclass
class World:
    client: httpx.AsyncClient
    twilio: FakeTwilio
    elks: FakeElks
    worker: DispatchWorker
    factory: async_sessionmaker[AsyncSession]
    clock: FrozenClock
    dispatcher: dict[str, str]
    people: list[Volunteer]

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post(url.removeprefix(BASE), content=content, headers=headers)

    async def reply_by_elks(self, person: Volunteer, body: str) -> httpx.Response:
        url, content, headers = self.elks.inbound_sms(
            SMS_URL, from_phone=person.phone or "", body=body
        )
        return await self.post(url, content, headers)

    async def alert_messages(self) -> list[Message]:
        async with self.factory() as session:
            rows = await session.execute(
                select(Message).where(Message.purpose == "alert").order_by(Message.phone)
            )
            return list(rows.scalars())

    async def new_incident(self) -> str:
        response = await self.client.post(
            "/v1/incidents",
            headers=self.dispatcher,
            json={
                "external_ref": "CAD-FAILOVER-1",
                "kind": "cardiac_arrest",
                "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                "address": "Drottninggatan 1, Stockholm",
            },
        )
        assert response.status_code == 201, response.text
        incident_id: str = response.json()["id"]
        return incident_id


@pytest.fixture
async def world(
    committed_db: str, fake_twilio: FakeTwilio, fake_elks: FakeElks, clock: FrozenClock
) -> AsyncIterator[World]:
    settings = twilio_settings(fake_twilio, public_base_url=BASE, **elks_settings_values(fake_elks))
    engine = create_engine(committed_db, pool_size=5)
    factory = create_session_factory(engine)
    app = create_app(settings, database_url=committed_db, run_worker=False, clock=clock)
    app.state.runtime = Runtime(
        settings=settings,
        database_url=committed_db,
        engine=engine,
        session_factory=factory,
        clock=clock,
        secondary_gateway=create_secondary_gateway(settings),
    )
    async with unit_of_work(factory) as session:
        dispatcher = await create_key(session, role="dispatcher", name="sos", centre="sos")
        people = [
            await create_volunteer(
                session,
                near=offset(STOCKHOLM, bearing_deg=90, distance_m=100 + 30 * index),
                language="en",
                name=f"Volunteer {index}",
            )
            for index in range(8)
        ]
    worker = DispatchWorker(
        session_factory=factory,
        gateway=create_gateway(settings),
        secondary=app.state.runtime.secondary_gateway,
        settings=settings,
        clock=clock,
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield World(client, fake_twilio, fake_elks, worker, factory, clock, dispatcher, people)
    await worker.gateway.close()
    if worker.secondary is not None:
        await worker.secondary.close()
    await engine.dispose()


async def test_a_minute_of_primary_500s_every_alert_goes_out_once_through_the_secondary(
    world: World,
) -> None:
    started = world.clock.now()
    world.twilio.outage(world.clock, until=started + timedelta(minutes=1))
    incident_id = await world.new_incident()

    while len(world.elks.sent()) < len(world.people) and world.clock.now() < started + timedelta(
        minutes=1
    ):
        await world.worker.send_due()
        world.clock.advance(timedelta(milliseconds=500))
    for _ in range(5):  # nothing more is due for anyone, now or after the outage
        await world.worker.send_due()
        world.clock.advance(timedelta(seconds=30))

    assert world.clock.now() > started + timedelta(minutes=1)
    assert Counter(request.form["to"] for request in world.elks.sent()) == Counter(
        person.phone for person in world.people
    ), "exactly one alert SMS per volunteer, all through the secondary"
    assert world.twilio.messages() == [], "the primary accepted nothing"
    assert {request.answered for request in world.twilio.requests} == {500}
    assert len(world.twilio.requests) == 3 * len(world.people), "SMS_PRIMARY_ATTEMPTS each"
    messages = await world.alert_messages()
    assert {(m.status, m.provider) for m in messages} == {("sent", "46elks")}
    assert all(m.sent_at is not None and m.deadline_at is not None for m in messages)
    assert all(m.sent_at < m.deadline_at for m in messages if m.sent_at and m.deadline_at)
    by_sid = {m.provider_sid: m for m in messages}
    assert set(by_sid) == {request.sms_id for request in world.elks.sent()}

    # The secondary's receipts, on its own authenticated webhook, drive the same state.
    for request in world.elks.sent():
        url, content, headers = world.elks.delivery_report(request, "delivered")
        assert (await world.post(url, content, headers)).status_code == 204
    counts = (
        await world.client.get(f"/v1/incidents/{incident_id}", headers=world.dispatcher)
    ).json()["counts"]
    assert counts["delivered"] == len(world.people)

    # A reply through the secondary is answered through it (the webhook's body), once.
    first = world.people[0]
    url, content, headers = world.elks.inbound_sms(
        SMS_URL, from_phone=first.phone or "", body="YES"
    )
    answer = await world.post(url, content, headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "Drottninggatan 1" in answer.text
    again = await world.post(url, content, headers)
    assert again.text == answer.text, "46elks retrying the webhook changes nothing"
    async with world.factory() as session:
        inbound = (
            (await session.execute(select(Message).where(Message.direction == "in")))
            .scalars()
            .all()
        )
        accepted = (
            await session.execute(select(Alert).where(Alert.volunteer_id == first.id))
        ).scalar_one()
    assert [(m.provider, m.reply_body) for m in inbound] == [("46elks", answer.text)]
    assert accepted.response == "accepted"

    # What follows an alert goes the way the alert went, the primary healthy again or not.
    cancelled = await world.client.post(
        f"/v1/incidents/{incident_id}/cancel",
        json={"reason": "ambulance on scene"},
        headers=world.dispatcher,
    )
    assert cancelled.status_code == 200
    before_twilio, before_elks = len(world.twilio.requests), len(world.elks.sent())
    await world.worker.send_due()
    follow_ups = world.elks.sent()[before_elks:]
    assert first.phone in {request.form["to"] for request in follow_ups}
    assert len(world.twilio.requests) == before_twilio


async def test_a_refusing_primary_hands_the_alert_over_at_once(world: World) -> None:
    world.twilio.script(*[AUTH_FAILED] * len(world.people))
    await world.new_incident()

    await world.worker.send_due()
    assert world.elks.sent() == []
    await world.worker.send_due()

    assert len(world.elks.sent()) == len(world.people)
    assert len(world.twilio.requests) == len(world.people), "one refused try each"
    assert {m.attempts for m in await world.alert_messages()} == {2}

    probe = await world.client.get("/healthz/sms")
    assert probe.status_code == 503, "the primary refuses us: someone must look"
    sms = probe.json()["sms"]
    assert (sms["gateway"], sms["status"], sms["alerts_can_leave"]) == ("twilio", "refused", True)
    assert (sms["secondary"]["gateway"], sms["secondary"]["status"]) == ("46elks", "ok")
    ready = await world.client.get("/readyz")
    assert ready.json()["checks"]["sms"]["secondary"]["ok"] is True


async def test_a_late_failure_receipt_of_the_primary_does_not_undo_the_secondarys_send(
    world: World,
) -> None:
    world.twilio.script(*[AUTH_FAILED] * len(world.people))
    await world.new_incident()
    await world.worker.send_due()
    await world.worker.send_due()

    refused = world.twilio.requests[0]
    url, content, headers = world.twilio.status_callback(refused, "failed", error_code=30008)
    assert (await world.post(url, content, headers)).status_code == 204
    message_id = parse_qs(urlsplit(url).query)["message_id"][0]
    async with world.factory() as session:
        message = await session.get_one(Message, message_id)
    assert (message.status, message.provider) == ("sent", "46elks")

    [taken] = [r for r in world.elks.sent() if r.form["to"] == message.phone]
    url, content, headers = world.elks.delivery_report(taken, "failed")
    assert (await world.post(url, content, headers)).status_code == 204
    async with world.factory() as session:
        message = await session.get_one(Message, message_id)
    assert message.status == "failed", "the holder's own failure receipt counts"


@pytest.mark.parametrize("behaviour", [REJECTED, OPTED_OUT], ids=["rejected", "opted_out"])
async def test_what_the_recipient_or_request_decides_is_not_handed_over(
    world: World, behaviour: Behaviour
) -> None:
    world.twilio.script(*[behaviour] * len(world.people))
    await world.new_incident()
    for _ in range(3):
        await world.worker.send_due()
        world.clock.advance(timedelta(seconds=20))

    assert world.elks.sent() == []
    assert {m.status for m in await world.alert_messages()} == {"failed"}


async def test_an_alert_the_secondary_cannot_take_in_time_is_given_up_at_its_deadline(
    world: World,
) -> None:
    world.twilio.outage(world.clock, until=world.clock.now() + timedelta(hours=1))
    world.elks.script(*[503] * 1000)
    await world.new_incident()
    for _ in range(20):
        await world.worker.send_due()
        world.clock.advance(timedelta(seconds=10))
    await world.worker.run_timers()

    assert world.elks.sent() == []
    assert world.twilio.messages() == []
    messages = await world.alert_messages()
    assert {(m.status, m.provider) for m in messages} == {("failed", "46elks")}


def _auth(password: str) -> dict[str, str]:
    url = f"https://46elks:{password}@responder.example.org/webhooks/46elks/sms"
    return FakeElks.inbound_sms(url, from_phone="+46701234567", body="YES")[2]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/x-www-form-urlencoded"},
        _auth("not-the-secret"),
        {**_auth(WEBHOOK_SECRET), "Authorization": "Bearer " + WEBHOOK_SECRET},
        {**_auth(WEBHOOK_SECRET), "Authorization": "Basic %%%"},
    ],
    ids=["no-auth", "wrong-secret", "not-basic", "not-base64"],
)
async def test_46elks_webhooks_without_the_secret_are_refused_and_change_nothing(
    world: World, headers: dict[str, str]
) -> None:
    person = world.people[0]
    _, content, _ = world.elks.inbound_sms(SMS_URL, from_phone=person.phone or "", body="STOP")
    response = await world.client.post("/webhooks/46elks/sms", content=content, headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    async with world.factory() as session:
        assert (await session.execute(select(Message.id))).first() is None
        assert (await session.get_one(Volunteer, person.id)).opted_out is False


async def test_a_46elks_receipt_with_another_messages_token_is_refused(world: World) -> None:
    world.twilio.script(*[AUTH_FAILED] * len(world.people))
    await world.new_incident()
    await world.worker.send_due()
    await world.worker.send_due()
    first, second = world.elks.sent()[:2]

    url, content, headers = world.elks.delivery_report(first, "failed")
    forged = _with_token_of(url, second)
    assert (await world.post(forged, content, headers)).status_code == 403
    assert {m.status for m in await world.alert_messages()} == {"sent"}
    assert (await world.post(url, content, headers)).status_code == 204


def _with_token_of(url: str, other: ElksRequest) -> str:
    """``url`` naming its own message but carrying the token issued for ``other``'s."""
    token = parse_qs(urlsplit(other.form["whendelivered"]).query)["token"][0]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return f"{BASE}{parts.path}?message_id={query['message_id'][0]}&token={token}"


def test_a_secondary_needs_its_password_number_and_a_long_webhook_secret() -> None:
    with pytest.raises(ValidationError, match="RESPONDER_ELKS_WEBHOOK_SECRET"):
        make_settings(elks_api_username="u1", elks_api_password="p", elks_from="+46766860000")
    with pytest.raises(ValidationError, match="at least 32"):
        make_settings(
            elks_api_username="u1",
            elks_api_password="p",
            elks_from="+46766860000",
            elks_webhook_secret="short",
        )
    assert create_secondary_gateway(make_settings()) is None


async def test_after_timeouts_the_hand_over_waits_for_a_receipt_of_the_primary_first(
    world: World,
) -> None:
    """The duplicate window with two providers (docs/reliability.md): a timed-out try
    may have been accepted, so the secondary takes over only after the grace, and a
    primary receipt within it settles the message."""
    worker = DispatchWorker(
        session_factory=world.factory,
        gateway=create_gateway(world.worker.settings.model_copy(update={"send_timeout_s": 0.2})),
        secondary=world.worker.secondary,
        settings=world.worker.settings,
        clock=world.clock,
    )
    release = threading.Event()
    world.twilio.script(*[Behaviour(hold=release)] * 3 * len(world.people))
    await world.new_incident()
    try:
        for attempt in range(3):
            if attempt:
                world.clock.advance(timedelta(seconds=6))  # past the grace and backoff
            await worker.send_due()
    finally:
        release.set()
        await worker.gateway.close()
    world.twilio.wait_for(1)
    messages = await world.alert_messages()
    assert {(m.status, m.provider) for m in messages} == {("sending", "46elks")}
    assert world.elks.sent() == [], "not before the grace"

    settled = world.twilio.requests[0]
    url, content, headers = world.twilio.status_callback(settled, "delivered")
    assert (await world.post(url, content, headers)).status_code == 204
    world.clock.advance(timedelta(seconds=6))
    await world.worker.send_due()

    to_settled = settled.form["To"]
    assert to_settled not in {request.form["to"] for request in world.elks.sent()}
    assert len(world.elks.sent()) == len(world.people) - 1, "the rest after the grace"


async def test_while_the_primary_rests_new_alerts_go_straight_to_the_secondary(
    harness: Harness, fake_twilio: FakeTwilio, fake_elks: FakeElks
) -> None:
    secondary = create_secondary_gateway(
        twilio_settings(fake_twilio, **elks_settings_values(fake_elks))
    )
    worker = harness.worker(secondary=secondary)
    fake_twilio.outage(harness.clock, until=harness.clock.now() + timedelta(minutes=2))
    await harness.alerts()
    for _ in range(4):
        await worker.send_due()
        harness.clock.advance(timedelta(seconds=2))
    assert (len(fake_twilio.requests), len(fake_elks.sent())) == (3, 1)

    [during] = await harness.alerts()
    await worker.send_due()
    assert (len(fake_twilio.requests), len(fake_elks.sent())) == (3, 2), "no wait at the primary"
    assert (await harness.message_for(during)).provider == "46elks"

    harness.clock.advance(PRIMARY_REST)
    await harness.alerts()
    await worker.send_due()
    assert len(fake_twilio.requests) == 4, "after its rest the primary is tried again"
    await worker.gateway.close()
    if secondary is not None:
        await secondary.close()


@pytest.mark.parametrize("path", ["/webhooks/46elks/sms", "/webhooks/46elks/status"])
async def test_without_a_secondary_every_46elks_webhook_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    _, content, headers = FakeElks.inbound_sms(SMS_URL, from_phone="+46701234567", body="YES")
    response = await client.post(
        f"{path}?message_id=00000000-0000-0000-0000-000000000000&token=x",
        content=content,
        headers=headers,
    )
    assert response.status_code == 403
