"""``responder canary``: one test phone alerted through the whole path, and nobody else.

The command runs as a scheduler runs it (a process, over HTTP, with an admin key)
against the service under uvicorn with its worker and the Twilio fake, which
decides whether and when the alert is accepted and its delivery callback posted.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Alert, AuditLog, Certification, Incident, Message, Volunteer
from app.core.settings import Settings
from dispatch.alerting import NewIncident, alert_more, create_incident
from tests.console_harness import WebServer
from tests.factories import STOCKHOLM, create_key, create_volunteer, next_phone, offset
from tests.twilio_fake import Behaviour, RecordedRequest

BESIDE = offset(STOCKHOLM, bearing_deg=90, distance_m=20)
REFUSED = Behaviour(status=400, code=21211)  # "invalid 'To' phone number": a permanent refusal


def canary_body(phone: str) -> dict[str, object]:
    return {"phone": phone, "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon}}


def real_incident() -> NewIncident:
    return NewIncident(
        external_ref=f"CAD-{next_phone()}",
        kind="cardiac_arrest",
        location=STOCKHOLM,
        address="Drottninggatan 1, Stockholm",
    )


async def alerted_volunteers(session: AsyncSession, incident_id: uuid.UUID) -> set[uuid.UUID]:
    return set(
        await session.scalars(select(Alert.volunteer_id).where(Alert.incident_id == incident_id))
    )


async def test_a_canary_alerts_only_its_test_phone_and_a_real_incident_never_alerts_it(
    session: AsyncSession, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock
) -> None:
    beside = [await create_volunteer(session, near=BESIDE) for _ in range(2)]
    admin = await create_key(session, role="admin")

    posted = await client.post("/v1/canary", json=canary_body(next_phone()), headers=admin)

    assert posted.status_code == 201, posted.text
    canary_incident = await session.get(Incident, posted.json()["id"])
    assert canary_incident is not None
    assert canary_incident.exercise
    canary = await session.get(Volunteer, canary_incident.canary_volunteer_id)
    assert canary is not None
    assert canary.canary
    assert await alerted_volunteers(session, canary_incident.id) == {canary.id}
    # Even certified (an administrator may add one), a canary is no responder.
    session.add(
        Certification(
            volunteer_id=canary.id,
            kind="cpr",
            issued_on=date(2025, 1, 1),
            expires_on=date(2030, 1, 1),
            issuer="Swedish Resuscitation Council",
            status="verified",
        )
    )
    # Every re-run (withdrawal, move, widening, replacement) passes alert_more.
    assert (
        await alert_more(session, incident=canary_incident, settings=settings, now=clock.now())
        == []
    )
    closed = await client.post(f"/v1/canary/{canary_incident.id}/close", headers=admin)
    assert closed.json()["status"] == "closed"
    clock.advance(settings.alert_cooldown + timedelta(minutes=1))  # the canary is available

    real = await create_incident(
        session, centre="sos", request=real_incident(), settings=settings, now=clock.now()
    )
    assert real.incident.status == "alerting"
    assert await alerted_volunteers(session, real.incident.id) == {v.id for v in beside}
    await create_volunteer(session, near=BESIDE)
    rerun = await alert_more(session, incident=real.incident, settings=settings, now=clock.now())
    assert canary.id not in {alert.volunteer_id for alert in rerun}
    assert len(rerun) == 1


async def test_a_volunteers_phone_is_never_turned_into_a_canary(
    session: AsyncSession, client: httpx.AsyncClient
) -> None:
    volunteer = await create_volunteer(session, near=BESIDE)
    admin = await create_key(session, role="admin")
    assert volunteer.phone is not None

    refused = await client.post("/v1/canary", json=canary_body(volunteer.phone), headers=admin)

    assert refused.status_code == 409, refused.text
    await session.refresh(volunteer)
    assert not volunteer.canary
    assert await session.scalar(select(Incident.id).where(Incident.centre == "canary")) is None


async def test_the_same_test_phone_is_the_same_canary_enrolled_once_and_audited(
    session: AsyncSession, client: httpx.AsyncClient
) -> None:
    admin = await create_key(session, role="admin")
    phone = next_phone()

    first = await client.post("/v1/canary", json=canary_body(phone), headers=admin)
    await client.post(f"/v1/canary/{first.json()['id']}/close", headers=admin)
    second = await client.post("/v1/canary", json=canary_body(phone), headers=admin)
    moved = {"phone": phone, "location": {"lat": BESIDE.lat, "lon": BESIDE.lon}}
    await client.post(f"/v1/canary/{second.json()['id']}/close", headers=admin)
    third = await client.post("/v1/canary", json=moved, headers=admin)

    assert [r.status_code for r in (first, second, third)] == [201, 201, 201]
    assert all(r.json()["status"] == "alerting" for r in (first, second, third))
    canaries = list(await session.scalars(select(Volunteer).where(Volunteer.phone == phone)))
    assert len(canaries) == 1
    actions = list(
        await session.scalars(
            select(AuditLog.action)
            .where(AuditLog.target_id == str(canaries[0].id))
            .order_by(AuditLog.id)
        )
    )
    assert actions == ["canary.enrol", "canary.place", "canary.place"]


async def test_closing_through_the_canary_endpoint_refuses_a_real_incident(
    session: AsyncSession, client: httpx.AsyncClient, settings: Settings, clock: FrozenClock
) -> None:
    await create_volunteer(session, near=BESIDE)
    admin = await create_key(session, role="admin")
    real = await create_incident(
        session, centre="sos", request=real_incident(), settings=settings, now=clock.now()
    )

    answer = await client.post(f"/v1/canary/{real.incident.id}/close", headers=admin)

    assert answer.status_code == 404
    await session.refresh(real.incident)
    assert real.incident.status == "alerting"


@dataclass
class CanaryRun:
    code: int
    stdout: str
    stderr: str


async def run_canary(web: WebServer, key: str, phone: str, *, within: float) -> CanaryRun:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    environment["RESPONDER_CANARY_API_KEY"] = key
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "canary",
        "--to",
        phone,
        "--at",
        f"{STOCKHOLM.lat},{STOCKHOLM.lon}",
        "--api",
        web.base_url,
        "--within",
        str(within),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return CanaryRun(process.returncode, stdout.decode(), stderr.decode())


async def admin_key(web: WebServer) -> str:
    headers = await web.run(lambda session: create_key(session, role="admin"))
    return headers["Authorization"].removeprefix("Bearer ")


async def sent_to(web: WebServer, phone: str) -> RecordedRequest:
    """The fake's first request to ``phone`` (answered), once it has arrived."""

    def wait() -> RecordedRequest:
        with web.fake._lock:
            web.fake._lock.wait_for(
                lambda: any(r.form.get("To") == phone for r in web.fake.requests), 60
            )
            return next(r for r in web.fake.requests if r.form.get("To") == phone)

    return await asyncio.to_thread(wait)


async def canary_incident(web: WebServer, phone: str) -> tuple[Incident, list[Message]]:
    async def load(session: AsyncSession) -> tuple[Incident, list[Message]]:
        incident = (
            await session.execute(
                select(Incident)
                .join(Volunteer, Volunteer.id == Incident.canary_volunteer_id)
                .where(Volunteer.phone == phone)
            )
        ).scalar_one()
        messages = list(
            await session.scalars(select(Message).where(Message.incident_id == incident.id))
        )
        return incident, messages

    return await web.run(load)


async def test_a_delivered_canary_exits_0_and_leaves_no_open_incident_nor_a_stand_down(
    web: WebServer,
) -> None:
    key, phone = await admin_key(web), next_phone()

    run = asyncio.create_task(run_canary(web, key, phone, within=60))
    request = await sent_to(web, phone)
    url, body, headers = web.fake.status_callback(request, "delivered")
    async with httpx.AsyncClient() as callback:
        assert (await callback.post(url, content=body, headers=headers)).status_code == 204
    result = await run

    assert result.code == 0, result
    assert result.stdout.startswith("canary ok: alert delivered after ")
    assert result.stdout.count("\n") == 1
    assert request.form["Body"].startswith("EXERCISE: ")
    incident, messages = await canary_incident(web, phone)
    assert incident.status == "closed"
    assert [message.purpose for message in messages] == ["alert"]


async def test_a_refused_canary_exits_4(web: WebServer) -> None:
    key, phone = await admin_key(web), next_phone()
    web.fake.script(REFUSED)

    result = await run_canary(web, key, phone, within=60)

    assert result.code == 4, result
    assert "not accepted by the provider (failed)" in result.stdout
    incident, _ = await canary_incident(web, phone)
    assert incident.status == "closed"


async def test_a_canary_the_provider_holds_past_the_bound_exits_4(web: WebServer) -> None:
    key, phone = await admin_key(web), next_phone()
    held = threading.Event()
    web.fake.script(Behaviour(hold=held))
    try:
        result = await run_canary(web, key, phone, within=1)
    finally:
        held.set()

    assert result.code == 4, result
    assert "not accepted by the provider within 1 s" in result.stdout


async def test_a_canary_without_its_delivery_callback_in_the_bound_exits_5(
    web: WebServer,
) -> None:
    key, phone = await admin_key(web), next_phone()

    # The bound is wall time in the canary's own process: generous enough that its
    # start, the POST and the worker's send fit well inside it on a loaded machine,
    # so only the missing callback decides the outcome.
    result = await run_canary(web, key, phone, within=15)

    assert result.code == 5, result
    assert "accepted but not delivered within 15 s" in result.stdout
    incident, messages = await canary_incident(web, phone)
    assert incident.status == "closed"
    assert [message.purpose for message in messages] == ["alert"]


async def test_a_canary_that_cannot_post_exits_3(web: WebServer) -> None:
    result = await run_canary(web, "not-a-key", next_phone(), within=5)

    assert result.code == 3, result
    assert "could not post: HTTP 401" in result.stdout
