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

from app.api.main import create_app
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.registry.keys import Role
from tests.factories import create_key, create_volunteer, make_settings

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
        yield Served(base_url=f"http://127.0.0.1:{port}", keys=keys)
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
