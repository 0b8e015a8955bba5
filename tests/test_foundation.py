"""The service starts, answers health checks, speaks problem+json, and migrates both ways."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.api.main import create_app
from app.core.db import create_engine, create_session_factory
from app.embedded import EmbeddedPostgres
from app.migrate import downgrade, upgrade
from app.runtime import Runtime
from tests.factories import make_settings


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123_4.5:6"})
    assert response.headers["x-request-id"] == "abc-123_4.5:6"


@pytest.mark.parametrize("offered", ["a" * 65, "<script>", "två", "a b", "x\ty"])
async def test_a_long_or_odd_request_id_is_replaced_by_one_of_ours(
    client: httpx.AsyncClient, offered: str
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": offered.encode()})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_readyz_checks_postgresql_and_postgis_without_naming_versions(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == {"ok": True}


async def test_readyz_names_the_versions_when_the_setting_asks(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    app.state.runtime.settings = make_settings(readyz_versions=True)
    database = (await client.get("/readyz")).json()["checks"]["database"]
    assert database["postgresql"].startswith("15")
    assert database["postgis"].startswith("3.")


async def test_a_trailing_slash_is_not_found_and_never_redirected_to_the_callers_host(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/incidents/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


@contextlib.asynccontextmanager
async def client_without_database() -> AsyncIterator[httpx.AsyncClient]:
    """The app against a database that cannot be reached; app exceptions must not escape."""
    url = "postgresql+asyncpg://postgres@/nowhere?host=/nonexistent-socket-dir&port=5432"
    settings = make_settings()
    app = create_app(settings, database_url=url, run_worker=False)
    engine = create_engine(url, pool_size=1)
    app.state.runtime = Runtime(
        settings=settings,
        database_url=url,
        engine=engine,
        session_factory=create_session_factory(engine),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client
    finally:
        await engine.dispose()


async def test_readyz_is_503_while_the_database_is_unreachable() -> None:
    async with client_without_database() as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"]["ok"] is False


async def test_database_outage_is_a_clean_503_that_keeps_the_connection() -> None:
    """The 503 is answered without the exception escaping to the server.

    An exception that escapes makes uvicorn close the keep-alive connection after the
    answer, so a client retrying at once on it gets a transport error instead of the
    503 it can act on. ``raise_app_exceptions=True`` fails this test if one escapes.
    """
    async with client_without_database() as client:
        response = await client.get(
            "/v1/incidents", headers={"Authorization": "Bearer rsp_whatever"}
        )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"]


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "responder_http_requests_total" in response.text


async def test_openapi_document_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert "Problem" in response.json()["components"]["schemas"]


def test_migrations_go_down_to_base_and_up_again(pg: EmbeddedPostgres) -> None:
    pg.psql("postgres", "-c", 'CREATE DATABASE "migration_roundtrip"')
    try:
        url = pg.url("migration_roundtrip")
        upgrade(url)
        downgrade(url, "base")
        tables = pg.psql(
            "migration_roundtrip",
            "-tAc",
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'",
        )
        assert tables.strip() == "0"
        upgrade(url)
        revision = pg.psql("migration_roundtrip", "-tAc", "SELECT version_num FROM alembic_version")
        assert revision.strip()
    finally:
        pg.psql("postgres", "-c", 'DROP DATABASE "migration_roundtrip" WITH (FORCE)')


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"RESPONDER_TWILIO_ACCOUNT_SID": "AC123"}, "RESPONDER_TWILIO_AUTH_TOKEN is not"),
        ({"RESPONDER_TIMEZONE": "Mars/Olympus"}, "RESPONDER_TIMEZONE"),
        ({"RESPONDER_DATABASE_URL": "mysql://x"}, "RESPONDER_DATABASE_URL"),
        (
            {"RESPONDER_DATABASE_URL": "postgresql://u@/db?host=/nonexistent-dir&port=5999"},
            "database unreachable",
        ),
    ],
)
def test_broken_configuration_exits_with_one_line(env: dict[str, str], reason: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "db", "upgrade"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert reason in lines[0]
    assert "Traceback" not in result.stderr
