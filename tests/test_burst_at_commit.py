"""The incident POST's burst is claimed in the POST's own transaction and handed to
this process's worker at commit: no wake-up through the database, no claim between
the commit and the requests (docs/dispatch.md, "The burst claimed in the POST's own
transaction").

Each test fails on the code before it: then nothing was sent until a worker
was woken and claimed.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.main import create_app
from app.core.db import sync_url, unit_of_work, when_transaction_ends
from app.core.models import Alert, Message, Volunteer
from app.core.outbox import OUTBOX_CHANNEL, Lease
from app.runtime import Runtime
from dispatch import worker as worker_module
from dispatch.alerting import Created, NewIncident, create_incident
from dispatch.gateway import SendFailure
from dispatch.worker import DispatchWorker
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset
from tests.twilio_fake import FakeTwilio
from tests.worker_harness import Harness

VOLUNTEERS = 6


async def seed(harness: Harness) -> dict[str, str]:
    async with unit_of_work(harness.factory) as session:
        for index in range(VOLUNTEERS):
            await create_volunteer(
                session, near=offset(STOCKHOLM, bearing_deg=60 * index, distance_m=120)
            )
        return await create_key(session, role="dispatcher", centre="sos")


async def create_leased(session: AsyncSession, harness: Harness, lease: Lease) -> Created:
    """A new incident near the volunteers, its alert SMS queued under ``lease``."""
    return await create_incident(
        session,
        centre="sos",
        request=NewIncident(
            external_ref=f"HO-{uuid.uuid4().hex[:8]}",
            kind="cardiac_arrest",
            location=STOCKHOLM,
            address="Drottninggatan 1",
        ),
        settings=harness.settings,
        now=harness.clock.now(),
        lease=lease,
    )


class Notifications:
    """What a listener on the outbox channel was told, checked after a round trip of its
    own: PostgreSQL delivers a committed NOTIFY to a listening session at the end of
    that session's next transaction at the latest."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.received: list[str] = []

    def _heard(self, *args: object) -> None:
        self.received.append(str(args[-1]))

    async def count(self) -> int:
        await self.connection.execute("SELECT 1")
        await asyncio.sleep(0)  # asyncpg runs listener callbacks with call_soon
        return len(self.received)


@pytest.fixture
async def notifications(harness: Harness) -> AsyncIterator[Notifications]:
    connection = await asyncpg.connect(sync_url(harness.url))
    heard = Notifications(connection)
    await connection.add_listener(OUTBOX_CHANNEL, heard._heard)
    try:
        yield heard
    finally:
        await connection.close()


@pytest.fixture
async def served(harness: Harness) -> AsyncIterator[tuple[FastAPI, DispatchWorker]]:
    """The API with a worker of its own that never runs its loop: only the burst
    started at commit sends."""
    app = create_app(harness.settings, database_url=harness.url, run_worker=False)
    worker = harness.worker()
    app.state.runtime = Runtime(
        settings=harness.settings,
        database_url=harness.url,
        engine=harness.engine,
        session_factory=harness.factory,
        clock=harness.clock,
        worker=worker,
    )
    yield app, worker
    await worker.gateway.close()


async def message_rows(harness: Harness) -> list[Message]:
    async with harness.factory() as session:
        return list((await session.execute(select(Message).order_by(Message.created_at))).scalars())


async def test_a_posts_burst_goes_out_at_commit_without_a_claim_or_a_wake_up(
    harness: Harness,
    served: tuple[FastAPI, DispatchWorker],
    fake_twilio: FakeTwilio,
    notifications: Notifications,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, worker = served
    dispatcher = await seed(harness)
    sends: list[asyncio.Task[object]] = []
    start_leased = worker.start_leased

    def noting(lease: Lease, committed: bool) -> list[asyncio.Task[SendFailure | None]]:
        started = start_leased(lease, committed)
        sends.extend(started)
        return started

    monkeypatch.setattr(worker, "start_leased", noting)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.post(
            "/v1/incidents",
            headers=dispatcher,
            json={
                "external_ref": "HO-1",
                "kind": "cardiac_arrest",
                "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                "address": "Drottninggatan 1",
            },
        )
    assert answer.status_code == 201, answer.text
    assert len(sends) == VOLUNTEERS, "the burst was not handed to the worker at commit"
    await asyncio.gather(*sends)

    assert len(fake_twilio.messages()) == VOLUNTEERS
    rows = await message_rows(harness)
    assert [(row.status, row.attempts) for row in rows] == [("sent", 1)] * VOLUNTEERS
    async with harness.factory() as session:
        statuses = (await session.execute(select(Alert.delivery_status))).scalars().all()
    assert statuses == ["sent"] * VOLUNTEERS
    assert await notifications.count() == 0, "a worker was woken for a burst already claimed"
    assert worker._free_slots() == worker.slots


async def test_what_the_worker_has_no_room_for_is_queued_woken_and_claimed_as_before(
    harness: Harness, fake_twilio: FakeTwilio, notifications: Notifications
) -> None:
    await seed(harness)
    worker = harness.worker(overrides={"send_concurrency": 4})
    lease = worker.reserve(30)
    assert lease is not None
    assert lease.room == 4
    async with unit_of_work(harness.factory) as session:
        when_transaction_ends(
            session, lambda committed: handed.extend(worker.start_leased(lease, committed))
        )
        handed: list[asyncio.Task[object]] = []
        created = await create_leased(session, harness, lease)
    assert created.alerted == VOLUNTEERS
    assert len(handed) == 4, "the nearest four go at commit"
    await asyncio.gather(*handed)
    assert await notifications.count() == 1, "the two left over were not announced"

    assert await worker.send_due() == 2
    await worker.gateway.close()
    phones = [request.form["To"] for request in fake_twilio.messages()]
    assert sorted(phones) == sorted(set(phones))
    assert len(phones) == VOLUNTEERS


async def test_a_rolled_back_transaction_sends_nothing_and_gives_its_room_back(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    await seed(harness)
    worker = harness.worker()
    lease = worker.reserve(30)
    assert lease is not None
    ended: list[bool] = []

    class Abandoned(Exception):
        pass

    async def queue_then_fail() -> None:
        async with unit_of_work(harness.factory) as session:
            when_transaction_ends(session, ended.append)
            when_transaction_ends(session, functools.partial(worker.start_leased, lease))
            # A savepoint released inside is not the end of the transaction.
            async with session.begin_nested():
                await create_leased(session, harness, lease)
            assert ended == []
            raise Abandoned

    with pytest.raises(Abandoned):
        await queue_then_fail()

    assert ended == [False]
    assert len(lease.taken) == VOLUNTEERS
    assert worker._free_slots() == worker.slots
    assert await message_rows(harness) == []
    assert fake_twilio.messages() == []
    await worker.gateway.close()


async def test_a_burst_whose_process_died_at_the_commit_goes_out_when_its_lease_ends(
    harness: Harness, fake_twilio: FakeTwilio
) -> None:
    """Committed, claimed, never handed over (the process died at commit): exactly as a
    worker that died after its claim, another worker sends each SMS once, after the lease."""
    await seed(harness)
    dead = harness.worker()
    lease = dead.reserve(30)
    assert lease is not None
    async with unit_of_work(harness.factory) as session:
        await create_leased(session, harness, lease)
    other = harness.worker()
    assert await other.send_due() == 0, "a leased SMS was claimed while its lease held"

    harness.clock.advance(dead.lease + timedelta(seconds=1))
    assert await other.send_due() == VOLUNTEERS
    await other.gateway.close()
    await dead.gateway.close()
    phones = [request.form["To"] for request in fake_twilio.messages()]
    assert sorted(phones) == sorted(set(phones))
    assert len(phones) == VOLUNTEERS
    async with harness.factory() as session:
        attempts = (
            await session.execute(
                select(func.max(Message.attempts), func.bool_and(Message.may_have_reached))
            )
        ).one()
    # The second attempt, and an unknown first one: as after any lost claim.
    assert tuple(attempts) == (2, True)


async def test_a_stopping_worker_takes_no_burst(harness: Harness) -> None:
    worker = harness.worker()
    worker.stop()
    assert worker.reserve(30) is None
    await worker.gateway.close()


async def test_a_callback_that_fails_after_the_commit_leaves_the_commit_standing(
    harness: Harness,
) -> None:
    """Raised from the commit, it would answer 500 for an incident that was stored."""

    def fails(_committed: bool) -> None:
        raise RuntimeError("after the commit")

    async with unit_of_work(harness.factory) as session:
        when_transaction_ends(session, fails)
        stored = await create_volunteer(session)
    async with harness.factory() as session:
        assert await session.get(Volunteer, stored.id) is not None


async def test_the_burst_waits_for_the_request_that_committed_it_to_end(
    harness: Harness, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its requests would otherwise be built at the POST's first wait after the
    commit, before the POST's response. (The bound on that wait is set out of reach.)"""
    monkeypatch.setattr(worker_module, "LEASED_START_AFTER_S", 3600.0)
    await seed(harness)
    worker = harness.worker()
    lease = worker.reserve(30)
    assert lease is not None
    sends: list[asyncio.Task[SendFailure | None]] = []

    async def post() -> None:
        async with unit_of_work(harness.factory) as session:
            when_transaction_ends(
                session, lambda committed: sends.extend(worker.start_leased(lease, committed))
            )
            await create_leased(session, harness, lease)
        for _ in range(5):  # the rest of the request: its response, say
            await asyncio.sleep(0)
        assert len(sends) == VOLUNTEERS
        assert fake_twilio.messages() == [], "a request left before its POST ended"

    await asyncio.create_task(post())
    await asyncio.gather(*sends)
    await worker.gateway.close()
    assert len(fake_twilio.messages()) == VOLUNTEERS
