"""Secrets and personal data: no plaintext key stored or logged, no name or phone at INFO.

The flows run end to end against a committed database (CLI, API, worker, webhooks),
with every structlog event and every stdlib log record captured.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import create_session_factory
from dispatch.gateway import SmsGateway, create_gateway
from dispatch.worker import DispatchWorker
from tests.factories import STOCKHOLM, offset
from tests.twilio_fake import FakeTwilio, twilio_settings

TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")
NAME = "Ingrid Åkesson-Lindqvist"
PHONE_NATIONAL = "070-123 45 67"
PHONE = "+46701234567"


@contextmanager
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[tuple[str, str]]]:
    """(level, rendered event) for everything logged inside the block, both libraries."""
    lines: list[tuple[str, str]] = []
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        yield lines
    lines += [(event.get("log_level", "info"), repr(event)) for event in events]
    lines += [
        (record.levelname.lower(), f"{record.getMessage()} {record.__dict__!r}")
        for record in caplog.records
    ]


def at_info_or_above(lines: list[tuple[str, str]]) -> list[str]:
    return [line for level, line in lines if level not in ("debug", "notset")]


async def columns_containing(connection: AsyncConnection, needle: str) -> list[str]:
    """Every ``table.column`` of a text-like type holding ``needle`` anywhere."""
    columns = (
        await connection.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND data_type = ANY(:types)"
            ),
            {"types": list(TEXT_TYPES)},
        )
    ).all()
    found = []
    for table, column in columns:
        hit = (
            await connection.execute(
                text(
                    f'SELECT EXISTS (SELECT 1 FROM "{table}"'
                    f' WHERE strpos("{column}"::text, :needle) > 0)'
                ),
                {"needle": needle},
            )
        ).scalar_one()
        if hit:
            found.append(f"{table}.{column}")
    return found


@asynccontextmanager
async def closing_gateway(gateway: SmsGateway) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await gateway.close()


@pytest.fixture
async def service(
    committed_db: str, fake_twilio: FakeTwilio
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    clock = FrozenClock(datetime(2026, 11, 24, 14, 32, tzinfo=UTC))
    settings = twilio_settings(fake_twilio)
    app = create_app(settings, database_url=committed_db, run_worker=False, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.51", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


def create_key_with_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESPONDER_DATABASE_URL": database_url, "RESPONDER_LOG_LEVEL": "DEBUG"}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "app.cli", "api-key", "create", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )


async def test_keys_are_never_stored_or_logged_in_plaintext(
    committed_db: str, service: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    app, client = service
    created = create_key_with_cli(committed_db, "--role", "admin", "--name", "ops")
    admin_key = created.stdout.strip()
    assert admin_key.startswith("rsp_")
    assert admin_key not in created.stderr
    admin = {"Authorization": f"Bearer {admin_key}"}

    with captured_logs(caplog) as lines:
        volunteer = await client.post(
            "/v1/volunteers",
            headers=admin,
            json={"name": NAME, "phone": PHONE, "language": "sv", "consent": True},
        )
        issued = await client.post(f"/v1/volunteers/{volunteer.json()['id']}/tokens", headers=admin)
        token = issued.json()["token"]
        assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).is_success
        assert (await client.get("/v1/volunteers", headers=admin)).is_success
        wrong = {"Authorization": f"Bearer {admin_key}x"}
        assert (await client.get("/v1/volunteers", headers=wrong)).status_code == 401

    secrets = [admin_key, token, admin_key.removeprefix("rsp_"), token.removeprefix("rsp_")]
    for secret in secrets:
        assert not [line for _, line in lines if secret in line]
        assert created.stderr.count(secret) == 0
    async with app.state.runtime.engine.connect() as connection:
        for secret in secrets:
            assert await columns_containing(connection, secret) == []


async def test_names_and_phone_numbers_stay_out_of_info_logs_through_a_whole_alert(
    committed_db: str,
    service: tuple[FastAPI, httpx.AsyncClient],
    fake_twilio: FakeTwilio,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, client = service
    runtime = app.state.runtime
    admin_key = create_key_with_cli(committed_db, "--role", "admin", "--name", "ops").stdout
    dispatcher_key = create_key_with_cli(
        committed_db, "--role", "dispatcher", "--name", "cad", "--centre", "north"
    ).stdout
    admin = {"Authorization": f"Bearer {admin_key.strip()}"}
    dispatcher = {"Authorization": f"Bearer {dispatcher_key.strip()}"}
    home = offset(STOCKHOLM, bearing_deg=45, distance_m=150)
    gateway = create_gateway(runtime.settings)
    worker = DispatchWorker(
        session_factory=create_session_factory(runtime.engine),
        gateway=gateway,
        settings=runtime.settings,
        clock=runtime.clock,
    )

    async with closing_gateway(gateway):
        with captured_logs(caplog) as lines:
            volunteer = (
                await client.post(
                    "/v1/volunteers",
                    headers=admin,
                    json={"name": NAME, "phone": PHONE_NATIONAL, "language": "en", "consent": True},
                )
            ).json()
            certification = await client.post(
                f"/v1/volunteers/{volunteer['id']}/certifications",
                headers=admin,
                json={
                    "kind": "cpr",
                    "issued_on": "2026-01-01",
                    "expires_on": "2028-01-01",
                    "issuer": "Swedish Resuscitation Council",
                    "reference": "HLR-1",
                },
            )
            await client.post(
                f"/v1/certifications/{certification.json()['id']}/verify", headers=admin
            )
            await client.post(
                f"/v1/volunteers/{volunteer['id']}/places",
                headers=admin,
                json={"label": "home", "location": {"lat": home.lat, "lon": home.lon}},
            )
            incident = await client.post(
                "/v1/incidents",
                headers=dispatcher,
                json={
                    "external_ref": "CAD-PII-1",
                    "kind": "cardiac_arrest",
                    "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                    "address": "Drottninggatan 1, Stockholm",
                },
            )
            assert incident.json()["counts"]["alerted"] == 1
            assert await worker.send_due() == 1
            sent = fake_twilio.messages()[0]
            code = sent.form["Body"].split("YES ")[1].split()[0]
            url = runtime.settings.public_base_url + "/webhooks/twilio/sms"
            body, headers = fake_twilio.inbound_sms(url, from_phone=PHONE, body=f"yes {code}")
            reply = await client.post("/webhooks/twilio/sms", content=body, headers=headers)
            assert reply.status_code == 200
            callback_url, callback, signed = fake_twilio.status_callback(sent, "delivered")
            path = callback_url.removeprefix(runtime.settings.public_base_url)
            assert (await client.post(path, content=callback, headers=signed)).status_code == 204
            await worker.send_due()
            incident_id = incident.json()["id"]
            shown = await client.get(f"/v1/incidents/{incident_id}", headers=dispatcher)
            assert NAME in shown.text
            await client.post(f"/v1/incidents/{incident_id}/close", headers=dispatcher)
            await worker.send_due()

    logged = at_info_or_above(lines)
    assert logged, "nothing was logged: the capture is broken"
    personal = [NAME, "Åkesson", PHONE, PHONE.removeprefix("+"), "701234567", PHONE_NATIONAL]
    leaks: list[Any] = [(item, line) for item in personal for line in logged if item in line]
    assert leaks == []
