"""Property-based API fuzzing: schemathesis against /openapi.json, over real HTTP.

Every operation is driven with the key of each role that may call it (and the
webhooks and health routes with none): no answer may be a 5xx, and every answer
must be one the document lists, with the listed media type, headers and body
schema, for valid and for invalid data. Bounded (few examples per operation,
derandomized, no shrinking) so the whole run stays well under two minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from app.api.main import create_app
from app.api.schemas.events import PAYLOADS
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Message, Volunteer
from app.registry.keys import Role
from dispatch.alerting import NewIncident, create_incident
from dispatch.delivery import advance_message
from dispatch.lifecycle import IncidentChanges, close_incident, expire_unanswered, update_incident
from dispatch.responses import InboundSms, handle_inbound_sms
from dispatch.strategies import run_strategy_steps
from dispatch.voice import call_status
from tests.factories import (
    STOCKHOLM,
    create_aed,
    create_key,
    create_volunteer,
    make_settings,
    offset,
    savepoints,
    with_code,
)

MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ROLES: tuple[Role, ...] = ("admin", "dispatcher", "locator", "volunteer")


@dataclass
class Served:
    base_url: str
    keys: dict[Role, dict[str, str]]
    committed_db: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def committed_keys(url: str) -> dict[Role, dict[str, str]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            volunteer = await create_volunteer(session)
            return {
                role: await create_key(
                    session, role=role, volunteer=volunteer if role == "volunteer" else None
                )
                for role in ROLES
            }
    finally:
        await engine.dispose()


@pytest.fixture
def served(committed_db: str) -> Iterator[Served]:
    """The service on a real port in its own thread and event loop (as uvicorn runs it)."""
    settings = make_settings(
        rate_limit_admin_per_minute=1_000_000,
        rate_limit_volunteer_per_minute=1_000_000,
        rate_limit_anonymous_per_minute=1_000_000,
        rate_limit_unsigned_webhook_per_minute=1_000_000,
    )
    app = create_app(settings, database_url=committed_db, run_worker=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    keys = asyncio.run(committed_keys(committed_db))
    thread.start()
    try:
        with httpx.Client() as client:
            for _ in range(200):
                if server.started:
                    break
                threading.Event().wait(0.05)
            assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        yield Served(base_url=f"http://127.0.0.1:{port}", keys=keys, committed_db=committed_db)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def roles_allowed(served: Served, method: str, path: str) -> list[Role]:
    """The roles the service lets through its role check (anything but a 403 there)."""
    filled = path.replace("{", "").replace("}", "")
    allowed = []
    with httpx.Client(base_url=served.base_url) as client:
        for role in ROLES:
            answer = client.request(method, filled, headers=served.keys[role], json={})
            if answer.status_code != 403:
                allowed.append(role)
    return allowed


def fuzz(operation: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    """Failures found for one operation with one set of headers, valid and invalid data."""
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        failures += fuzz_in_mode(operation, base_url, headers, mode)
    return failures


def fuzz_in_mode(
    operation: Any, base_url: str, headers: dict[str, str], mode: GenerationMode
) -> list[str]:
    failures: list[str] = []

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:  # one failure or a group of them
            failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:800]}")

    with contextlib.suppress(Unsatisfiable):  # nothing invalid to send (no parameters)
        run()
    return failures


def test_no_operation_answers_5xx_or_outside_its_document(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        if operation.definition.raw.get("security"):
            roles = roles_allowed(served, operation.method.upper(), operation.path)
            assert roles, f"{operation.label}: no role may call it"
            for role in roles:
                failures += fuzz(operation, served.base_url, served.keys[role])
        else:
            failures += fuzz(operation, served.base_url, {})

    assert failures == [], "\n".join(failures)


async def committed_incident_with_every_event(url: str, admin: dict[str, str]) -> str:
    """An incident that went through each kind of change, committed (its id)."""
    # A batch of 3 (a NO is replaced at once) and one widening step: their events too.
    widen_after = timedelta(minutes=1)
    # Calls can be placed (the one who says NO prefers them): an alert call's events too.
    settings = make_settings(
        cpr_responders=1,
        alert_batch=3,
        widen_after=widen_after,
        widen_steps_m=[1000],
        twilio_account_sid="AC" + "a" * 32,
        twilio_auth_token="token",
        twilio_from="+46700000000",
        twilio_voice_from="+46700000001",
    )
    clock = FrozenClock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    engine = create_engine(url, pool_size=1)
    factory = create_session_factory(engine)

    async def reply(volunteer: Volunteer, body: str) -> None:
        phone = volunteer.phone or ""
        async with unit_of_work(factory) as session:
            await handle_inbound_sms(
                savepoints(session),
                sms=InboundSms(
                    f"SM{body}{phone}", phone, await with_code(session, volunteer.id, body)
                ),
                now=clock.now(),
                settings=settings,
            )

    try:
        async with unit_of_work(factory) as session:
            await create_aed(session, at=offset(STOCKHOLM, bearing_deg=0, distance_m=50))
            people = [
                await create_volunteer(
                    session,
                    near=offset(STOCKHOLM, bearing_deg=bearing, distance_m=40 + bearing),
                    language="en",
                    contact_preference="voice" if bearing == 60 else "sms",
                )
                for bearing in range(0, 300, 60)
            ]
            created = await create_incident(
                session,
                centre="sse",
                request=NewIncident(
                    external_ref="SSE-1",
                    kind="cardiac_arrest",
                    location=STOCKHOLM,
                    address="Drottninggatan 1",
                ),
                settings=settings,
                now=clock.now(),
            )
            incident_id = created.incident.id
            message = (
                (
                    await session.execute(
                        select(Message.id).where(
                            Message.incident_id == incident_id,
                            Message.purpose == "alert",
                            Message.channel == "sms",
                        )
                    )
                )
                .scalars()
                .first()
            )
            call = (
                await session.execute(
                    select(Message.id).where(
                        Message.incident_id == incident_id, Message.channel == "voice"
                    )
                )
            ).scalar_one()
        async with unit_of_work(factory) as session:
            assert message is not None
            await advance_message(session, message_id=message, status="sent", now=clock.now())
            await call_status(
                session,
                message_id=call,
                call_sid="CA" + "c" * 32,
                status="ringing",
                answered_by=None,
                now=clock.now(),
            )
        await reply(people[0], "YES")
        await reply(people[1], "NO")
        await reply(people[2], "YES")
        await reply(people[2], "ARRIVED")
        await reply(people[0], "WITHDRAW")
        async with unit_of_work(factory) as session:
            await update_incident(
                session,
                incident_id=incident_id,
                centre=None,
                changes=IncidentChanges(
                    address="Drottninggatan 3",
                    location=offset(STOCKHOLM, bearing_deg=90, distance_m=30),
                ),
                now=clock.now(),
                settings=settings,
            )
        clock.advance(widen_after)
        assert await run_strategy_steps(factory, now=clock.now(), settings=settings) == 1
        clock.advance(settings.alert_reply_window + timedelta(seconds=1))
        await expire_unanswered(factory, now=clock.now(), settings=settings)
        async with unit_of_work(factory) as session:
            await close_incident(
                session,
                incident_id=incident_id,
                centre=None,
                outcome="ROSC",
                now=clock.now(),
                settings=settings,
            )
        return str(incident_id)
    finally:
        await engine.dispose()


def test_every_event_of_the_stream_matches_its_documented_schema(served: Served) -> None:
    """Schemathesis's SSE check (ST108, "SSE event violates schema") on a real stream.

    The fuzzing above only ever reaches the stream with made-up incident ids (404):
    here it reads one incident's events, each checked against the event object of
    the ``text/event-stream`` schema and the ``contentSchema`` of its type.
    """
    admin = served.keys["admin"]
    incident_id = asyncio.run(committed_incident_with_every_event(served.committed_db, admin))
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    operation = schema["/v1/incidents/{incident_id}/events"]["GET"]
    case = operation.Case(path_parameters={"incident_id": incident_id})
    # The stream never ends by itself: it is read until it goes quiet for a second.
    response = case.call(base_url=served.base_url, headers=admin, timeout=(5, 1))
    events = [
        line.split(": ", 1)[1] for line in response.text.splitlines() if line.startswith("event: ")
    ]
    assert set(PAYLOADS) - set(events) <= {"incident.cancelled"}, events
    case.validate_response(response, checks=CHECKS)
