"""The in-process dispatch worker has its own pool: its bursts never reach the API's.

Each of an incident's sends is recorded in its own transaction behind the incident's
row lock, so a burst of 30 sends wants 30 connections at once. On the API's pool that
overflowed after every incident, and the overflow connections closed and reopened
left the next POST on a cold connection (its statements prepared and planned again;
docs/benchmarks.md, "The passes so far", first pass). The test failed while the worker shared
``runtime.engine``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select

from app.api.main import create_app
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Message
from app.runtime import Runtime
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset
from tests.test_dispatch_races import until
from tests.twilio_fake import FakeTwilio, twilio_settings

VOLUNTEERS = 12
POOL_SIZE = 3


@dataclass
class PoolUse:
    """Checkouts of one pool, and the most connections it had out at once."""

    checkouts: int = 0
    out: int = 0
    most_out: int = 0

    def watch(self, engine: Any) -> None:
        @event.listens_for(engine.sync_engine.pool, "checkout")
        def _out(*_: Any) -> None:
            self.checkouts += 1
            self.out += 1
            self.most_out = max(self.most_out, self.out)

        @event.listens_for(engine.sync_engine.pool, "checkin")
        def _in(*_: Any) -> None:
            self.out -= 1


@pytest.fixture
async def served(
    committed_db: str, fake_twilio: FakeTwilio
) -> AsyncIterator[tuple[FastAPI, dict[str, str]]]:
    engine = create_engine(committed_db, pool_size=1)
    async with unit_of_work(create_session_factory(engine)) as session:
        dispatcher = await create_key(session, role="dispatcher", centre="sos")
        for index in range(VOLUNTEERS):
            await create_volunteer(
                session, near=offset(STOCKHOLM, bearing_deg=30 * index, distance_m=150)
            )
    await engine.dispose()
    settings = twilio_settings(fake_twilio, db_pool_size=POOL_SIZE)
    app = create_app(settings, database_url=committed_db, run_worker=True)
    async with app.router.lifespan_context(app):
        yield app, dispatcher


async def test_a_burst_of_alerts_is_sent_and_recorded_without_touching_the_apis_pool(
    served: tuple[FastAPI, dict[str, str]],
) -> None:
    app, dispatcher = served
    runtime: Runtime = app.state.runtime
    assert runtime.dispatch_engine is not None, "the worker shares the API's pool"
    api, dispatch = PoolUse(), PoolUse()
    api.watch(runtime.engine)
    dispatch.watch(runtime.dispatch_engine)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.post(
            "/v1/incidents",
            headers=dispatcher,
            json={
                "external_ref": "pool-1",
                "kind": "cardiac_arrest",
                "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                "address": "Drottninggatan 1",
            },
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["counts"]["alerted"] == VOLUNTEERS
    by_request = api.checkouts

    async def all_sent() -> bool:
        async with unit_of_work(create_session_factory(observer)) as session:
            sent = (await session.execute(select(Message.id).where(Message.status == "sent"))).all()
        return len(sent) == VOLUNTEERS

    observer = create_engine(runtime.database_url, pool_size=1)
    try:
        await until(all_sent, "every alert recorded as sent")
    finally:
        await observer.dispose()

    # The POST's own transaction, and at most its detached selection record after it;
    # never the worker's claim or its twelve records.
    assert api.checkouts - by_request <= 1
    assert dispatch.checkouts > VOLUNTEERS
    assert dispatch.most_out <= POOL_SIZE
