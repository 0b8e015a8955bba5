"""The provider's health: in /readyz's body (never failing it) and in /healthz/sms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from app.api.main import create_app
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.runtime import Runtime
from dispatch.delivery import note_gateway_result
from tests.factories import make_settings

NOW = datetime(2026, 11, 24, 14, 32, tzinfo=UTC)


@pytest.fixture
async def ready_client(committed_db: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = make_settings()
    app = create_app(settings, database_url=committed_db, run_worker=False)
    engine = create_engine(committed_db, pool_size=2)
    runtime = Runtime(
        settings=settings,
        database_url=committed_db,
        engine=engine,
        session_factory=create_session_factory(engine),
    )
    app.state.runtime = runtime
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, runtime
    await engine.dispose()


async def record(runtime: Runtime, **result: object) -> None:
    async with unit_of_work(runtime.session_factory) as session:
        await note_gateway_result(session, gateway="console", now=NOW, **result)  # type: ignore[arg-type]


async def test_a_refusing_provider_fails_the_sms_probe_but_not_readiness(
    ready_client: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = ready_client
    assert (await client.get("/readyz")).json()["checks"]["sms"]["ok"] is True
    assert (await client.get("/healthz/sms")).status_code == 200

    await record(runtime, ok=False, refused=True, error="twilio 401 code 20003")
    ready = await client.get("/readyz")
    assert ready.status_code == 200, "incidents, cancels and replies are still taken"
    sms = ready.json()["checks"]["sms"]
    assert (sms["ok"], sms["status"], sms["last_error"]) == (
        False,
        "refused",
        "twilio 401 code 20003",
    )
    probe = await client.get("/healthz/sms")
    assert probe.status_code == 503
    assert probe.json()["sms"]["status"] == "refused"

    await record(runtime, ok=True)
    assert (await client.get("/healthz/sms")).status_code == 200


async def test_repeated_failures_show_degraded_in_both_probes(
    ready_client: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, runtime = ready_client
    for _ in range(5):
        await record(runtime, ok=False, error="twilio 500")
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["sms"]["status"] == "degraded"
    assert response.json()["checks"]["sms"]["consecutive_failures"] == 5
    probe = await client.get("/healthz/sms")
    assert (probe.status_code, probe.json()["sms"]["status"]) == (503, "degraded")


async def test_failed_sends_are_counted_in_metrics(
    ready_client: tuple[httpx.AsyncClient, Runtime],
) -> None:
    client, _ = ready_client
    assert "responder_sms_send_failures_total" in (await client.get("/metrics")).text
