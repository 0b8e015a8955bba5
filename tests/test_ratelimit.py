"""Rate limits: 429 with Retry-After, shared across processes, never for dispatchers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import func, select

from app.api.deps import AdminDep, DispatcherDep, LocatorDep, VolunteerDep
from app.api.main import create_app
from app.api.ratelimit import RateLimiter, limit_unsigned_webhook, retry_after_s
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.errors import RateLimited
from app.core.models import RateLimitBucket
from app.core.settings import Settings
from app.registry.keys import Principal, issue_key, revoke_key
from tests.factories import committed_key, make_settings

probe = APIRouter()


@probe.get("/v1/probe/admin")
async def admin_probe(caller: AdminDep) -> dict[str, str]:
    return {"role": caller.role}


@probe.get("/v1/probe/dispatcher")
async def dispatcher_probe(caller: DispatcherDep) -> dict[str, str]:
    return {"role": caller.role}


@probe.get("/v1/probe/locator")
async def locator_probe(caller: LocatorDep) -> dict[str, str]:
    return {"role": caller.role}


@probe.get("/v1/probe/volunteer")
async def volunteer_probe(caller: VolunteerDep) -> Principal:
    return caller


@probe.post("/webhooks/probe")
async def unsigned_webhook_probe(request: Request) -> dict[str, str]:
    await limit_unsigned_webhook(request)
    return {"answer": "forbidden"}


def limited(**limits: int) -> Settings:
    return make_settings(
        **{f"rate_limit_{name}_per_minute": value for name, value in limits.items()}
    )


LIMITS = limited(admin=3, volunteer=2, locator=1000, anonymous=3, unsigned_webhook=2)


@asynccontextmanager
async def running(url: str, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    """One service process: its own engine, its own limiter, the probe routes."""
    app = create_app(LIMITS, database_url=url, run_worker=False)
    app.include_router(probe)
    app.state.rate_limiter = RateLimiter(LIMITS, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


def client_of(app: FastAPI, ip: str = "192.0.2.10") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def statuses(client: httpx.AsyncClient, path: str, count: int, **kwargs: Any) -> list[int]:
    method = "POST" if path.startswith("/webhooks/") else "GET"
    return [(await client.request(method, path, **kwargs)).status_code for _ in range(count)]


@pytest.fixture
async def service(committed_db: str, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    async with running(committed_db, clock) as app, client_of(app) as client:
        yield client


async def test_admin_over_the_limit_gets_429_problem_with_retry_after(
    service: httpx.AsyncClient, committed_db: str
) -> None:
    headers = await committed_key(committed_db, "admin")
    assert await statuses(service, "/v1/probe/admin", 3, headers=headers) == [200] * 3

    refused = await service.get("/v1/probe/admin", headers=headers)

    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert int(refused.headers["retry-after"]) >= 1


async def test_waiting_retry_after_lets_the_next_request_through(
    service: httpx.AsyncClient, committed_db: str, clock: FrozenClock
) -> None:
    headers = await committed_key(committed_db, "admin")
    await statuses(service, "/v1/probe/admin", 3, headers=headers)
    refused = await service.get("/v1/probe/admin", headers=headers)

    clock.advance(timedelta(seconds=int(refused.headers["retry-after"]) - 1))
    assert (await service.get("/v1/probe/admin", headers=headers)).status_code == 429
    clock.advance(timedelta(seconds=200))
    assert (await service.get("/v1/probe/admin", headers=headers)).status_code == 200


async def test_each_key_has_its_own_budget(service: httpx.AsyncClient, committed_db: str) -> None:
    first = await committed_key(committed_db, "admin")
    second = await committed_key(committed_db, "admin")
    await statuses(service, "/v1/probe/admin", 4, headers=first)

    assert (await service.get("/v1/probe/admin", headers=second)).status_code == 200


async def test_volunteer_token_is_limited_per_token(
    service: httpx.AsyncClient, committed_db: str
) -> None:
    headers = await committed_key(committed_db, "volunteer")

    assert await statuses(service, "/v1/probe/volunteer", 3, headers=headers) == [200, 200, 429]


async def test_locator_feed_is_counted_in_leases_and_still_limited(
    committed_db: str, clock: FrozenClock
) -> None:
    headers = await committed_key(committed_db, "locator")
    token = headers["Authorization"].removeprefix("Bearer ")
    limiter = RateLimiter(LIMITS, clock=clock)
    engine = create_engine(committed_db, pool_size=1)
    try:
        for _ in range(1000):
            await limiter.check_caller(engine, token=token)
        with pytest.raises(RateLimited):
            await limiter.check_caller(engine, token=token)
        async with engine.connect() as connection:
            stored = (
                await connection.execute(select(func.sum(RateLimitBucket.count)))
            ).scalar_one()
    finally:
        await engine.dispose()

    assert stored == 1002


async def test_dispatcher_is_never_limited(service: httpx.AsyncClient, committed_db: str) -> None:
    headers = await committed_key(committed_db, "dispatcher")

    assert set(await statuses(service, "/v1/probe/dispatcher", 20, headers=headers)) == {200}


async def test_failed_authentication_is_limited_per_client_ip(
    committed_db: str, clock: FrozenClock
) -> None:
    dispatcher = await committed_key(committed_db, "dispatcher")
    wrong = {"Authorization": "Bearer rsp_not-a-key"}
    async with (
        running(committed_db, clock) as app,
        client_of(app, "198.51.100.7") as attacker,
        client_of(app, "198.51.100.8") as neighbour,
    ):
        refused = await statuses(attacker, "/v1/probe/admin", 3, headers=wrong)
        refused += await statuses(attacker, "/v1/probe/admin", 1)

        assert refused == [401, 401, 401, 429]
        assert (await neighbour.get("/v1/probe/admin", headers=wrong)).status_code == 401
        assert (await attacker.get("/v1/probe/dispatcher", headers=dispatcher)).status_code == 200


async def test_revoked_key_is_counted_against_the_client_ip(
    service: httpx.AsyncClient, committed_db: str
) -> None:
    engine = create_engine(committed_db, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            plaintext, record = await issue_key(session, role="admin", name="revoked")
            await revoke_key(session, key_id=record.id)
    finally:
        await engine.dispose()
    headers = {"Authorization": f"Bearer {plaintext}"}

    assert await statuses(service, "/v1/probe/admin", 4, headers=headers) == [401] * 3 + [429]


async def test_unsigned_webhook_traffic_is_limited_per_ip(service: httpx.AsyncClient) -> None:
    assert await statuses(service, "/webhooks/probe", 3) == [200, 200, 429]


async def test_two_processes_share_one_count(committed_db: str, clock: FrozenClock) -> None:
    headers = await committed_key(committed_db, "admin")
    async with (
        running(committed_db, clock) as first,
        running(committed_db, clock) as second,
        client_of(first) as one,
        client_of(second, "192.0.2.11") as other,
    ):
        seen = []
        for _ in range(3):
            seen.append((await one.get("/v1/probe/admin", headers=headers)).status_code)
            seen.append((await other.get("/v1/probe/admin", headers=headers)).status_code)

    assert seen == [200, 200, 200, 429, 429, 429]


async def test_limiter_fails_open_when_its_database_is_unreachable(clock: FrozenClock) -> None:
    limiter = RateLimiter(limited(anonymous=1), clock=clock)
    engine = create_engine("postgresql://nobody@/missing?host=/nonexistent", pool_size=1)
    try:
        for _ in range(3):
            await limiter.check_failed_authentication(engine, client_ip="192.0.2.30")
    finally:
        await engine.dispose()


def test_retry_after_waits_until_one_more_request_fits() -> None:
    assert retry_after_s(previous=10, current=0, limit=10, elapsed=0) == 6
    assert retry_after_s(previous=0, current=4, limit=3, elapsed=0) == 90
    assert retry_after_s(previous=0, current=4, limit=3, elapsed=59.5) == 31
    assert retry_after_s(previous=0, current=2, limit=1, elapsed=10) == 110
