"""Concurrent requests against a real, committing database: no double incident, no double alert."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Alert, Incident, Message, SelectionRecord
from app.runtime import Runtime
from dispatch.selection import SELECTION_LOCK_KEY
from tests.factories import (
    STOCKHOLM,
    create_incident,
    create_key,
    create_volunteer,
    make_settings,
    offset,
)


@dataclass
class Service:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def service(committed_db: str, clock: FrozenClock) -> AsyncIterator[Service]:
    settings = make_settings()
    engine = create_engine(committed_db, pool_size=10)
    app = create_app(settings, database_url=committed_db, run_worker=False, clock=clock)
    sessions = create_session_factory(engine)
    app.state.runtime = Runtime(
        settings=settings,
        database_url=committed_db,
        engine=engine,
        session_factory=sessions,
        clock=clock,
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Service(client=client, sessions=sessions)
    finally:
        await engine.dispose()


def body(ref: str) -> dict[str, Any]:
    return {
        "external_ref": ref,
        "kind": "cardiac_arrest",
        "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
        "address": "Drottninggatan 1, Stockholm",
    }


async def seed(service: Service, *, centres: list[str], volunteers: int) -> list[dict[str, str]]:
    async with unit_of_work(service.sessions) as session:
        for index in range(volunteers):
            await create_volunteer(
                session,
                near=offset(STOCKHOLM, bearing_deg=index * 37.0, distance_m=40 + index * 30),
            )
        return [await create_key(session, role="dispatcher", name=centre) for centre in centres]


async def scalar(service: Service, statement: Any) -> Any:
    async with unit_of_work(service.sessions) as session:
        return (await session.execute(statement)).scalar_one()


async def test_concurrent_identical_posts_create_one_incident(service: Service) -> None:
    [headers] = await seed(service, centres=["sos"], volunteers=4)

    responses = await asyncio.gather(
        *(
            service.client.post("/v1/incidents", json=body("CAD-7"), headers=headers)
            for _ in range(8)
        )
    )

    assert sorted(response.status_code for response in responses) == [200] * 7 + [201]
    assert len({response.json()["id"] for response in responses}) == 1
    assert await scalar(service, select(func.count()).select_from(Incident)) == 1
    assert await scalar(service, select(func.count()).select_from(Alert)) == 4
    assert await scalar(service, select(func.count()).select_from(Message)) == 4


async def test_simultaneous_incidents_never_alert_one_volunteer_twice(service: Service) -> None:
    centres = [f"centre-{index}" for index in range(6)]
    keys = await seed(service, centres=centres, volunteers=5)

    responses = await asyncio.gather(
        *(
            service.client.post(
                "/v1/incidents", json=body(f"CAD-{uuid.uuid4().hex}"), headers=headers
            )
            for headers in keys
        )
    )

    assert all(response.status_code == 201 for response in responses)
    reasons = sorted(str(response.json()["not_alerted_reason"]) for response in responses)
    assert reasons == ["None"] + ["no_eligible_volunteers"] * 5
    assert await scalar(service, select(func.count()).select_from(Alert)) == 5
    assert (
        await scalar(
            service,
            select(func.count()).select_from(
                select(Alert.volunteer_id)
                .group_by(Alert.volunteer_id)
                .having(func.count() > 1)
                .subquery()
            ),
        )
        == 0
    )


async def test_simultaneous_calls_from_one_centre_make_one_alerting_incident(
    service: Service,
) -> None:
    [headers] = await seed(service, centres=["sos"], volunteers=3)

    responses = await asyncio.gather(
        *(
            service.client.post("/v1/incidents", json=body(f"CAD-{index}"), headers=headers)
            for index in range(4)
        )
    )

    alerting = [r.json() for r in responses if r.json()["status"] == "alerting"]
    duplicates = [r.json() for r in responses if r.json()["not_alerted_reason"] == "duplicate"]
    assert len(alerting) == 1
    assert len(duplicates) == 3
    assert {incident["duplicate_of"] for incident in duplicates} == {alerting[0]["id"]}


async def test_selection_is_recorded_after_the_commit(service: Service) -> None:
    [headers] = await seed(service, centres=["sos"], volunteers=3)
    created = (
        await service.client.post("/v1/incidents", json=body("CAD-1"), headers=headers)
    ).json()
    incident_id = uuid.UUID(created["id"])

    assert (
        await scalar(
            service, select(Incident.selection_recorded_at).where(Incident.id == incident_id)
        )
        is not None
    )
    assert (
        await scalar(
            service,
            select(func.count())
            .select_from(SelectionRecord)
            .where(
                SelectionRecord.incident_id == incident_id, SelectionRecord.outcome == "alerted"
            ),
        )
        == 3
    )


async def test_a_post_waiting_for_the_selection_lock_sees_the_incident_committed_meanwhile(
    service: Service, clock: FrozenClock
) -> None:
    """The lock is taken by the incident's INSERT (no statement of its own), before the
    duplicate check's snapshot: a POST that waited for it sees what the holder committed.

    Deterministic: the test holds the lock itself, waits until the POST is blocked on
    it, commits an alerting incident next door, and only then lets the POST go on.
    """
    [headers] = await seed(service, centres=["sos"], volunteers=3)
    async with service.sessions() as holder:
        await holder.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": SELECTION_LOCK_KEY}
        )
        posting = asyncio.create_task(
            service.client.post("/v1/incidents", json=body("CAD-WAITS"), headers=headers)
        )
        async with asyncio.timeout(30):
            while not await scalar(service, _WAITING_FOR_THE_SELECTION_LOCK):
                await asyncio.sleep(0.01)
        first = await create_incident(holder, created_at=clock.now(), centre="sos")
        await holder.commit()
    answer = (await posting).json()
    assert answer["not_alerted_reason"] == "duplicate", answer
    assert answer["duplicate_of"] == str(first.id)


_WAITING_FOR_THE_SELECTION_LOCK = text(
    "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :key"
).bindparams(key=SELECTION_LOCK_KEY)
