"""The selection record runs detached from the POST's connection, and shutdown waits for it."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select

from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Incident, SelectionRecord
from app.runtime import DetachedTasks
from tests.factories import STOCKHOLM, create_key, create_volunteer, make_settings, offset

INCIDENT = {
    "external_ref": "CAD-detached",
    "kind": "cardiac_arrest",
    "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
    "address": "Drottninggatan 1, Stockholm",
}


async def test_selection_record_is_written_by_a_detached_task_drained_at_shutdown(
    committed_db: str, clock: FrozenClock
) -> None:
    engine = create_engine(committed_db, pool_size=2)
    sessions = create_session_factory(engine)
    try:
        async with unit_of_work(sessions) as session:
            for index in range(3):
                await create_volunteer(
                    session, near=offset(STOCKHOLM, bearing_deg=index * 90.0, distance_m=60)
                )
            headers = await create_key(session, role="dispatcher", name="sos")
        app = create_app(make_settings(), database_url=committed_db, run_worker=False, clock=clock)
        async with app.router.lifespan_context(app):
            assert isinstance(app.state.runtime.detached, DetachedTasks)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                created = await client.post("/v1/incidents", json=INCIDENT, headers=headers)
                assert created.status_code == 201
                # The connection is free at once: the next request is not held behind it.
                assert (await client.get("/healthz")).status_code == 200
        incident_id = uuid.UUID(created.json()["id"])

        async with unit_of_work(sessions) as session:
            recorded_at = await session.scalar(
                select(Incident.selection_recorded_at).where(Incident.id == incident_id)
            )
            alerted = (
                await session.scalars(
                    select(SelectionRecord.volunteer_id).where(
                        SelectionRecord.incident_id == incident_id,
                        SelectionRecord.outcome == "alerted",
                    )
                )
            ).all()
        assert recorded_at is not None
        assert len(alerted) == 3
    finally:
        await engine.dispose()


async def test_drain_cancels_work_still_running_after_its_timeout() -> None:
    detached = DetachedTasks()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    detached.spawn(stuck())
    await asyncio.wait_for(started.wait(), timeout=5)
    await detached.drain(timeout_s=0.01)

    assert cancelled.is_set()


async def test_drain_starts_work_still_waiting_for_its_time() -> None:
    detached = DetachedTasks()
    ran = asyncio.Event()

    async def later() -> None:
        ran.set()

    detached.spawn(later(), after_s=3600)
    await detached.drain(timeout_s=5)

    assert ran.is_set()
