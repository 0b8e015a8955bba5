"""``PUT /v1/me/location`` authenticates, counts and writes on an autocommit
connection: the limiter's answers, exact under concurrency, revocation at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from app.api.main import create_app
from app.api.ratelimit import RateLimiter
from app.core import db
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import ApiKey, LiveLocation, RateLimitBucket
from app.core.settings import Settings
from app.registry.keys import hash_key, revoke_key
from tests.factories import committed_key, make_settings


def limited(*, db_pool_size: int = 12, **limits: int) -> Settings:
    return make_settings(
        db_pool_size=db_pool_size,
        **{f"rate_limit_{name}_per_minute": value for name, value in limits.items()},
    )


async def read(url: str, statement: Any) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return (await connection.execute(statement)).scalar()
    finally:
        await engine.dispose()


def served(url: str, clock: FrozenClock, settings: Settings) -> FastAPI:
    app = create_app(settings, database_url=url, run_worker=False, clock=clock)
    app.state.rate_limiter = RateLimiter(settings, clock=clock)
    return app


@asynccontextmanager
async def running(
    url: str, clock: FrozenClock, settings: Settings, *, app: FastAPI | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = app or served(url, clock, settings)
    transport = httpx.ASGITransport(
        app=app, raise_app_exceptions=False, client=("192.0.2.40", 40000)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client


async def terminate_service_backends(url: str) -> None:
    """Kill the service's database connections, as a restart or a failover would."""
    others = (
        "FROM pg_stat_activity WHERE application_name = 'responder'"
        " AND pid <> pg_backend_pid() AND datname = current_database()"
    )
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as admin:
            admin = await admin.execution_options(isolation_level="AUTOCOMMIT")
            await admin.execute(text(f"SELECT pg_terminate_backend(pid) {others}"))
            for _ in range(500):  # until the backends are gone, not for a while
                if not await admin.scalar(text(f"SELECT count(*) {others}")):
                    break
                await asyncio.sleep(0.01)
    finally:
        await engine.dispose()


def fix(clock: FrozenClock, *, seconds: int = 0, lat: float = 59.33) -> dict[str, Any]:
    recorded = clock.now() - timedelta(minutes=1) + timedelta(seconds=seconds)
    return {"lat": lat, "lon": 18.06, "accuracy_m": 10, "recorded_at": recorded.isoformat()}


async def test_updates_over_the_token_limit_get_429_and_write_nothing(
    committed_db: str, clock: FrozenClock
) -> None:
    headers = await committed_key(committed_db, "volunteer")
    async with running(committed_db, clock, limited(volunteer=2)) as client:
        answers = [
            await client.put(
                "/v1/me/location", headers=headers, json=fix(clock, seconds=n, lat=59.3 + n / 100)
            )
            for n in range(3)
        ]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert [answer.json().get("status") for answer in answers[:2]] == ["accepted", "accepted"]
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert answers[2].headers["content-type"] == "application/problem+json"
    stored = await read(committed_db, select(func.ST_Y(func.ST_GeomFromWKB(LiveLocation.location))))
    assert stored == pytest.approx(59.31)


async def test_concurrent_updates_of_one_token_are_counted_exactly(
    committed_db: str, clock: FrozenClock
) -> None:
    headers = await committed_key(committed_db, "volunteer")
    async with running(committed_db, clock, limited(volunteer=5)) as client:
        answers = await asyncio.gather(
            *(
                client.put("/v1/me/location", headers=headers, json=fix(clock, seconds=n))
                for n in range(20)
            )
        )

    assert sorted(answer.status_code for answer in answers) == [200] * 5 + [429] * 15
    # Refused requests are counted too, so a client ignoring Retry-After stays out.
    assert await read(committed_db, select(func.sum(RateLimitBucket.count))) == 20


async def test_the_token_shares_its_budget_with_its_other_requests(
    committed_db: str, clock: FrozenClock
) -> None:
    headers = await committed_key(committed_db, "volunteer")
    async with running(committed_db, clock, limited(volunteer=2)) as client:
        first = await client.put("/v1/me/location", headers=headers, json=fix(clock))
        profile = await client.get("/v1/me", headers=headers)
        third = await client.put("/v1/me/location", headers=headers, json=fix(clock, seconds=1))

    assert (first.status_code, profile.status_code, third.status_code) == (200, 200, 429)


async def test_a_revoked_token_is_refused_at_once(committed_db: str, clock: FrozenClock) -> None:
    headers = await committed_key(committed_db, "volunteer")
    token = headers["Authorization"].removeprefix("Bearer ")
    async with running(committed_db, clock, limited(volunteer=100)) as client:
        before = await client.put("/v1/me/location", headers=headers, json=fix(clock))
        key_id = await read(
            committed_db, select(ApiKey.id).where(ApiKey.key_hash == hash_key(token))
        )
        engine = create_engine(committed_db, pool_size=1)
        try:
            async with unit_of_work(create_session_factory(engine)) as session:
                await revoke_key(session, key_id=key_id)
        finally:
            await engine.dispose()
        after = await client.put("/v1/me/location", headers=headers, json=fix(clock, seconds=1))

    assert (before.status_code, after.status_code) == (200, 401)


async def test_other_roles_are_counted_as_their_role_then_refused(
    committed_db: str, clock: FrozenClock
) -> None:
    headers = await committed_key(committed_db, "admin")
    async with running(committed_db, clock, limited(admin=2)) as client:
        answers = [
            (await client.put("/v1/me/location", headers=headers, json=fix(clock))).status_code
            for _ in range(3)
        ]

    assert answers == [403, 403, 429]


async def test_unknown_tokens_are_counted_against_the_client_ip(
    committed_db: str, clock: FrozenClock
) -> None:
    wrong = {"Authorization": "Bearer rsp_not-a-key"}
    async with running(committed_db, clock, limited(anonymous=2)) as client:
        answers = [
            (await client.put("/v1/me/location", headers=wrong, json={})).status_code
            for _ in range(3)
        ]

    assert answers == [401, 401, 429]


async def test_a_bad_body_is_judged_after_the_token(committed_db: str, clock: FrozenClock) -> None:
    headers = await committed_key(committed_db, "volunteer")
    bad = {"lat": 91, "lon": 18.06, "accuracy_m": 10, "recorded_at": "2026-11-24T14:00:00Z"}
    async with running(committed_db, clock, limited(volunteer=100)) as client:
        without_key = await client.put("/v1/me/location", json=bad)
        with_key = await client.put("/v1/me/location", headers=headers, json=bad)

    assert (without_key.status_code, with_key.status_code) == (401, 422)


async def test_a_connection_lost_under_an_update_is_replaced_for_the_next(
    committed_db: str, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statements run on the driver, past SQLAlchemy's own disconnect handling, so
    a lost connection must still be thrown away rather than handed to the next request."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)  # no ping to find it first
    headers = await committed_key(committed_db, "volunteer")
    async with running(committed_db, clock, limited(volunteer=100, db_pool_size=1)) as client:
        before = await client.put("/v1/me/location", headers=headers, json=fix(clock))
        await terminate_service_backends(committed_db)
        lost = await client.put("/v1/me/location", headers=headers, json=fix(clock, seconds=1))
        after = await client.put("/v1/me/location", headers=headers, json=fix(clock, seconds=2))

    assert (before.status_code, lost.status_code, after.status_code) == (200, 503, 200)


async def test_every_answer_gives_its_connection_back_to_the_pool(
    committed_db: str, clock: FrozenClock
) -> None:
    """The route's connection is the pool's own, checked out bare (``driver_connection``):
    whatever the answer, it goes back."""
    volunteer = await committed_key(committed_db, "volunteer")
    admin = await committed_key(committed_db, "admin")
    settings = limited(volunteer=100, db_pool_size=2)
    app = served(committed_db, clock, settings)
    async with running(committed_db, clock, settings, app=app) as client:
        answers = await asyncio.gather(
            *(
                client.put("/v1/me/location", headers=volunteer, json=fix(clock, seconds=n))
                for n in range(12)
            ),
            client.put("/v1/me/location", headers=admin, json=fix(clock)),
            client.put("/v1/me/location", json=fix(clock)),
            client.put("/v1/me/location", headers=volunteer, json={"lat": 91}),
        )
        checked_out = app.state.runtime.engine.sync_engine.pool.checkedout()

    assert sorted(answer.status_code for answer in answers) == [200] * 12 + [401, 403, 422]
    assert checked_out == 0


async def test_a_connection_lost_while_idle_is_found_by_the_ping_and_the_update_succeeds(
    committed_db: str, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bare checkout is still the pool's: an idle connection is pinged first, so the
    first update after a database restart is answered, not refused with a 503."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as idle
    headers = await committed_key(committed_db, "volunteer")
    async with running(committed_db, clock, limited(volunteer=100, db_pool_size=1)) as client:
        before = await client.put("/v1/me/location", headers=headers, json=fix(clock))
        await terminate_service_backends(committed_db)
        after = await client.put("/v1/me/location", headers=headers, json=fix(clock, seconds=1))

    assert (before.status_code, after.status_code) == (200, 200)
