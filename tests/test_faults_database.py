"""Fault test: PostgreSQL restarts while incidents and replies flow.

The service runs as in production (``create_app`` under uvicorn, API and dispatch
worker in one process) against a private cluster of its own, so stopping that
cluster disturbs no other test. A CAD-like client keeps creating incidents,
retrying each until it gets its 201, and volunteers keep answering YES. While the
database is down, /readyz answers 503 and every request gets a clean 503 with
Retry-After (never a 500, never a hang); when it is back, the same process
recovers on its own: every incident that got a 201 has all of its alerts handed
to the provider, and every answered reply is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from app.api.main import create_app
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Alert, Incident, Message
from app.embedded import EmbeddedPostgres
from app.migrate import upgrade
from geo.points import LatLon
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset
from tests.twilio_fake import FakeTwilio, twilio_settings

SITES = 8
WAIT_S = 60.0


@dataclass
class Service:
    base_url: str
    database_url: str
    cluster: EmbeddedPostgres
    fake: FakeTwilio
    dispatcher: dict[str, str]
    public_base_url: str
    answers: list[tuple[str, int]] = field(default_factory=list)


def site(index: int) -> LatLon:
    return offset(STOCKHOLM, bearing_deg=90, distance_m=2_000 * index)


@pytest.fixture
def cluster() -> Iterator[EmbeddedPostgres]:
    home = Path(tempfile.mkdtemp(prefix="responder-restart-"))
    home.chmod(0o755)
    private = EmbeddedPostgres(home / "cluster")
    private.start()
    private.ensure_database("responder")
    try:
        yield private
    finally:
        private.stop()
        shutil.rmtree(home, ignore_errors=True)


async def seed(database_url: str) -> dict[str, str]:
    """Two eligible volunteers at each site; the dispatcher key."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            for index in range(SITES):
                for bearing in (0, 180):
                    home = offset(site(index), bearing_deg=bearing, distance_m=100)
                    await create_volunteer(session, near=home, language="en")
            return await create_key(session, role="dispatcher", centre="north")
    finally:
        await engine.dispose()


@pytest.fixture
async def service(cluster: EmbeddedPostgres) -> AsyncIterator[Service]:
    url = cluster.url()
    await asyncio.to_thread(upgrade, url)
    dispatcher = await seed(url)
    fake = FakeTwilio().start()
    settings = twilio_settings(fake, send_timeout_s=2.0)
    app = create_app(settings, database_url=url, run_worker=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        # Keep-alive outlives httpx's 5 s pool expiry, so the server never closes an idle
        # connection just as the client reuses it (a race of the harness, not the service).
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            timeout_keep_alive=30,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_for_readiness(base_url, 200)
        yield Service(
            base_url=base_url,
            database_url=url,
            cluster=cluster,
            fake=fake,
            dispatcher=dispatcher,
            public_base_url=settings.public_base_url,
        )
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        fake.stop()


async def wait_for_readiness(base_url: str, status: int) -> None:
    deadline = time.monotonic() + WAIT_S
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while True:
            with_status = None
            with contextlib.suppress(httpx.TransportError):
                with_status = (await client.get("/readyz")).status_code
            if with_status == status:
                return
            assert time.monotonic() < deadline, f"/readyz never answered {status}"
            await asyncio.sleep(0.1)


def incident_body(index: int) -> dict[str, object]:
    where = site(index)
    return {
        "external_ref": f"CAD-RESTART-{index}",
        "kind": "cardiac_arrest",
        "location": {"lat": where.lat, "lon": where.lon},
        "address": f"Site {index}, Stockholm",
    }


async def create_until_accepted(
    client: httpx.AsyncClient, service: Service, index: int, saw_outage: asyncio.Event
) -> str:
    """As a CAD would: resend the same incident until it is stored (201 or 200)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = await client.post(
            "/v1/incidents", json=incident_body(index), headers=service.dispatcher
        )
        service.answers.append(("incident", answer.status_code))
        if answer.status_code in (200, 201):
            incident_id: str = answer.json()["id"]
            return incident_id
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        saw_outage.set()
        assert time.monotonic() < deadline, "the service never recovered"
        await asyncio.sleep(0.2)


async def answer_every_alert(client: httpx.AsyncClient, service: Service, done: set[str]) -> None:
    """Reply YES to every alert the provider has accepted and nobody answered yet."""
    url = service.public_base_url + "/webhooks/twilio/sms"
    for sent in service.fake.messages():
        phone = sent.form["To"]
        body = sent.form["Body"]
        if phone in done or "YES " not in body:
            continue
        code = body.split("YES ")[1].split()[0]
        content, headers = service.fake.inbound_sms(url, from_phone=phone, body=f"YES {code}")
        answer = await client.post("/webhooks/twilio/sms", content=content, headers=headers)
        service.answers.append(("reply", answer.status_code))
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 200:
            done.add(phone)


async def test_service_recovers_from_a_database_restart_without_losing_an_alert(
    service: Service,
) -> None:
    saw_outage = asyncio.Event()
    replied: set[str] = set()
    created: list[str] = []
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        for index in range(3):
            created.append(await create_until_accepted(client, service, index, saw_outage))

        async def flow() -> None:
            for index in range(3, SITES):
                created.append(await create_until_accepted(client, service, index, saw_outage))
                await answer_every_alert(client, service, replied)

        flowing = asyncio.create_task(flow())
        await asyncio.to_thread(service.cluster.stop)
        await wait_for_readiness(service.base_url, 503)
        await asyncio.wait_for(saw_outage.wait(), WAIT_S)
        await asyncio.to_thread(service.cluster.start)
        await wait_for_readiness(service.base_url, 200)
        await asyncio.wait_for(flowing, WAIT_S)

        deadline = time.monotonic() + WAIT_S
        while len(replied) < 2 * SITES:
            await answer_every_alert(client, service, replied)
            assert time.monotonic() < deadline, f"{len(replied)} of {2 * SITES} alerts answered"
            await asyncio.sleep(0.2)

    assert len(created) == SITES
    assert {status for _, status in service.answers} <= {200, 201, 503}
    assert ("incident", 503) in service.answers
    # A send whose outcome could not be recorded during the outage is settled later (its
    # lease runs out and it is retried, or a status callback reconciles it): wait for that.
    engine = create_engine(service.database_url, pool_size=1)
    deadline = time.monotonic() + WAIT_S
    try:
        while True:
            async with engine.connect() as connection:
                incidents = (await connection.execute(select(Incident.id, Incident.status))).all()
                alerts = (await connection.execute(select(Alert.response))).scalars().all()
                sends = (
                    (
                        await connection.execute(
                            select(Message.status).where(Message.purpose == "alert")
                        )
                    )
                    .scalars()
                    .all()
                )
            if set(sends) <= {"sent", "delivered"} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    assert len(incidents) == SITES
    assert len(alerts) == 2 * SITES
    assert set(sends) <= {"sent", "delivered"}
    assert len(sends) == 2 * SITES
    assert set(alerts) == {"accepted"}
