"""What an internal error writes to the log: one brief record, no key, no personal data.

The service runs as served (uvicorn, ``configure_logging``, in a subprocess of its
own, ``tests/fault_server.py``) in both log formats. A test-only route fails inside
PostgreSQL on a statement holding the caller's key and a volunteer's name and
phone, with all three in local variables too.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from app.core.db import create_engine, create_session_factory, unit_of_work
from app.logging import (
    MAX_FRAMES,
    MAX_VALUE_CHARS,
    TracebackBudget,
    exception_message,
    redact_text,
)
from tests.factories import create_key
from tests.fault_server import NAME, PHONE, SMS_BODY

PERSONAL = [NAME, "Åkesson", PHONE, PHONE.removeprefix("+"), "701234567", SMS_BODY, "portkod"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _admin_key(database_url: str) -> str:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            headers = await create_key(session, role="admin")
    finally:
        await engine.dispose()
    return headers["Authorization"].removeprefix("Bearer ")


@dataclass
class FaultServer:
    port: int
    key: str
    process: subprocess.Popen[str]

    def stop(self) -> list[str]:
        """Stop the service; its log, line by line."""
        self.process.terminate()
        _, stderr = self.process.communicate(timeout=30)
        return stderr.splitlines()


@pytest.fixture(params=["console", "json"])
def served(request: pytest.FixtureRequest, committed_db: str) -> Iterator[FaultServer]:
    key = asyncio.run(_admin_key(committed_db))
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    environment |= {"RESPONDER_LOG_FORMAT": request.param, "RESPONDER_LOG_LEVEL": "DEBUG"}
    process = subprocess.Popen(  # noqa: S603 - our own test server
        [sys.executable, "-m", "tests.fault_server", committed_db, str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = FaultServer(port=port, key=key, process=process)
    try:
        _wait_until_listening(process, port)
        yield server
    finally:
        if process.poll() is None:
            server.stop()


def _wait_until_listening(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the fault server exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the fault server never listened")


def test_an_internal_error_is_logged_once_briefly_without_key_or_personal_data(
    served: FaultServer,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    headers = {"Authorization": f"Bearer {served.key}", "X-Request-ID": "fault-1"}
    connection.request("GET", "/v1/test/fault", headers=headers)
    failed = connection.getresponse()
    problem = json.loads(failed.read())
    socket_used = connection.sock
    # The same keep-alive connection carries the next request: nothing reset it.
    connection.request("GET", "/healthz")
    after = connection.getresponse()
    after.read()
    assert connection.sock is socket_used
    connection.close()
    log = served.stop()

    assert failed.status == 500
    assert problem["request_id"] == "fault-1"
    assert after.status == 200
    whole = "\n".join(log)
    secrets = [served.key, served.key.removeprefix("rsp_")]
    assert [item for item in [*secrets, *PERSONAL] if item in whole] == []
    errors = [line for line in log if "unhandled error" in line]
    assert len(errors) == 1, whole
    assert "fault-1" in errors[0]
    assert "Exception in ASGI application" not in whole
    assert "DataError" in whole  # the error is still recognisable
    assert len(log) < 20 + MAX_FRAMES * 3, whole


def test_phone_numbers_keys_and_addresses_are_masked_in_any_text() -> None:
    for phone in ["+46701234567", "46701234567", "070-123 45 67", "0701234567", "+46 70 123 45 67"]:
        assert phone not in redact_text(f"sending to {phone} now"), phone
    assert "rsp_abc" not in redact_text("key rsp_abcDEF123_-x")
    assert "s3cr3t" not in redact_text("Authorization: Bearer s3cr3t.token")
    assert "anna@example.se" not in redact_text("mail anna@example.se")
    kept = "2026-11-24T14:32:00Z 3f2a0c1e-1234-5678-9abc-def012345678 59.3326 18.0649 8000 ms"
    assert redact_text(kept) == kept
    assert len(redact_text("x" * 100_000)) < 1100


def test_only_a_bounded_number_of_tracebacks_a_minute_keep_their_frames() -> None:
    now = [0.0]
    budget = TracebackBudget(3, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 60.0
    assert budget.take()


def test_a_cut_never_reveals_the_inside_of_a_quote_or_a_number_across_it() -> None:
    message = exception_message("invalid input: 'Ingrid Åkesson " + "x" * 20_000 + "'")
    assert "Ingrid" not in message
    straddling = "y" * (MAX_VALUE_CHARS - 5) + " +46701234567"
    assert "+4670" not in redact_text(straddling)
