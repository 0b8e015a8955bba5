"""Fault test: a burst of concurrent replies to one incident while the worker sends.

Every reply takes the volunteer, the incident and the alert; the one that fills
the last slot stands the others down, queueing texts that reference their
volunteers, while those volunteers' own replies are in flight and the worker is
recording sends. None of that may deadlock or fail: every webhook gets its TwiML
answer and every YES is applied exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.api.main import create_app
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Alert
from dispatch.gateway import create_gateway
from dispatch.worker import DispatchWorker
from tests.factories import STOCKHOLM, create_alert, create_incident, create_volunteer
from tests.twilio_fake import FakeTwilio, twilio_settings

VOLUNTEERS = 24
ROUNDS = 3


@pytest.fixture
async def service(committed_db: str, fake_twilio: FakeTwilio) -> AsyncIterator[FastAPI]:
    settings = twilio_settings(fake_twilio, db_pool_size=20)
    app = create_app(settings, database_url=committed_db, run_worker=False)
    async with app.router.lifespan_context(app):
        yield app


async def alerted_volunteers(database_url: str) -> list[tuple[str, str]]:
    """One incident with ``VOLUNTEERS`` open alerts: (phone, code) of each."""
    engine = create_engine(database_url, pool_size=1)
    now = datetime.now(UTC)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            incident = await create_incident(session, created_at=now)
            answers = []
            for _ in range(VOLUNTEERS):
                volunteer = await create_volunteer(session, near=STOCKHOLM, language="en")
                alert = await create_alert(session, incident=incident, volunteer=volunteer, now=now)
                answers.append((volunteer.phone or "", alert.code))
            return answers
    finally:
        await engine.dispose()


async def test_concurrent_replies_and_sends_never_deadlock_or_drop_a_reply(
    committed_db: str, service: FastAPI, fake_twilio: FakeTwilio
) -> None:
    settings = service.state.runtime.settings
    url = settings.public_base_url + "/webhooks/twilio/sms"
    gateway = create_gateway(settings)
    worker = DispatchWorker(
        session_factory=create_session_factory(service.state.runtime.engine),
        gateway=gateway,
        settings=settings,
        clock=service.state.runtime.clock,
    )
    statuses: list[int] = []
    try:
        for _ in range(ROUNDS):
            alerted = await alerted_volunteers(committed_db)
            transport = httpx.ASGITransport(app=service)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:

                async def reply(phone: str, code: str, number: int) -> int:
                    text = f"YES {code}" if number % 3 else f"NO {code}"
                    body, headers = fake_twilio.inbound_sms(url, from_phone=phone, body=text)
                    answer = await client.post(
                        "/webhooks/twilio/sms", content=body, headers=headers
                    )
                    return answer.status_code

                sending = asyncio.create_task(worker.send_due())
                statuses += await asyncio.gather(
                    *(reply(phone, code, n) for n, (phone, code) in enumerate(alerted))
                )
                await sending
                await worker.send_due()
    finally:
        await gateway.close()

    assert statuses == [200] * (VOLUNTEERS * ROUNDS)
    engine = create_engine(committed_db, pool_size=1)
    try:
        async with engine.connect() as connection:
            holding = (
                await connection.execute(
                    select(Alert.incident_id, func.count())
                    .where(Alert.response == "accepted", Alert.role.is_not(None))
                    .group_by(Alert.incident_id)
                )
            ).all()
            left_open = (
                await connection.execute(
                    select(func.count()).where(
                        Alert.response == "pending", Alert.stood_down_at.is_(None)
                    )
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert left_open == 0
    assert all(count == settings.cpr_responders for _, count in holding)
    assert len(holding) == ROUNDS
