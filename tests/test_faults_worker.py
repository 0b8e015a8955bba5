"""Fault tests of the send path: real ``responder worker`` processes, a fake Twilio.

Each test queues alerts in a committed database the way ``POST /v1/incidents``
leaves them, runs one or more worker subprocesses against the local Twilio fake,
injures them (SIGKILL mid-send; provider 429/500/hang; several workers racing)
and then waits, by polling the database and the fake with a timeout, until every
alert has been handed to the provider. What they show is in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Message
from tests.elks_fake import FakeElks, elks_settings_values
from tests.factories import STOCKHOLM, create_alert, create_incident, create_volunteer
from tests.twilio_fake import (
    MESSAGING_SERVICE_SID,
    SERVER_ERROR,
    TOO_MANY,
    Behaviour,
    FakeTwilio,
    hang,
)

SEND_TIMEOUT_S = 1.0
WAIT_S = 90.0
HOLD_TIMEOUT_S = 15.0


class Workers:
    """``responder worker`` subprocesses against one database and the fake."""

    def __init__(self, database_url: str, fake: FakeTwilio, logs: Path) -> None:
        self.database_url = database_url
        self.fake = fake
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        count: int = 1,
        *,
        send_timeout_s: float = SEND_TIMEOUT_S,
        metrics_port: int = 0,
        extra_env: dict[str, str] | None = None,
    ) -> list[subprocess.Popen[bytes]]:
        env = {
            **os.environ,
            "RESPONDER_DATABASE_URL": self.database_url,
            "RESPONDER_TWILIO_ACCOUNT_SID": self.fake.account_sid,
            "RESPONDER_TWILIO_AUTH_TOKEN": self.fake.auth_token,
            "RESPONDER_TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
            "RESPONDER_TWILIO_API_BASE": self.fake.base_url,
            "RESPONDER_PUBLIC_BASE_URL": "https://responder.example.org",
            "RESPONDER_SEND_TIMEOUT_S": str(send_timeout_s),
            "RESPONDER_LOG_LEVEL": "WARNING",
            "RESPONDER_WORKER_METRICS_PORT": str(metrics_port),
            **(extra_env or {}),
        }
        started = []
        for _ in range(count):
            with (self.logs / f"worker-{len(self.processes)}.log").open("wb") as log:
                process = subprocess.Popen(  # noqa: S603 - our own CLI
                    [sys.executable, "-m", "app.cli", "worker"], env=env, stdout=log, stderr=log
                )
            self.processes.append(process)
            started.append(process)
        return started

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(committed_db: str, fake_twilio: FakeTwilio, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(committed_db, fake_twilio, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


async def queue_alerts(database_url: str, count: int) -> dict[uuid.UUID, str]:
    """``count`` alerts queued as an incident's transaction leaves them: message id → phone."""
    engine = create_engine(database_url, pool_size=1)
    now = datetime.now(UTC)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:
            incident = await create_incident(session, created_at=now)
            for _ in range(count):
                volunteer = await create_volunteer(session, near=STOCKHOLM)
                await create_alert(session, incident=incident, volunteer=volunteer, now=now)
        async with unit_of_work(create_session_factory(engine)) as session:
            rows = await session.execute(select(Message.id, Message.phone))
            return {row.id: row.phone for row in rows}
    finally:
        await engine.dispose()


async def statuses(database_url: str) -> dict[uuid.UUID, tuple[str, datetime | None, datetime]]:
    """message id → (status, sent_at, deadline_at)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(Message.id, Message.status, Message.sent_at, Message.deadline_at)
            )
            return {row.id: (row.status, row.sent_at, row.deadline_at) for row in rows}
    finally:
        await engine.dispose()


async def wait_until_all_sent(
    database_url: str, count: int
) -> dict[uuid.UUID, tuple[str, datetime | None, datetime]]:
    deadline = time.monotonic() + WAIT_S
    while True:
        seen = await statuses(database_url)
        done = [status for status, _, _ in seen.values() if status in ("sent", "delivered")]
        if len(done) == count:
            return seen
        failed = [status for status, _, _ in seen.values() if status == "failed"]
        assert not failed, f"{len(failed)} messages abandoned"
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(done)} of {count} sent after {WAIT_S} s: {seen}")
        await asyncio.sleep(0.2)


def accepted_by_message(fake: FakeTwilio) -> Counter[uuid.UUID]:
    """How many times the provider accepted an SMS for each of our message ids."""
    counts: Counter[uuid.UUID] = Counter()
    for request in fake.messages():
        query = parse_qs(urlsplit(request.form["StatusCallback"]).query)
        counts[uuid.UUID(query["message_id"][0])] += 1
    return counts


async def test_worker_killed_mid_send_loses_nothing_and_repeats_only_what_was_in_flight(
    committed_db: str, fake_twilio: FakeTwilio, workers: Workers
) -> None:
    queued = await queue_alerts(committed_db, 12)
    # 8 answered at once; 4 held by the provider until the worker has been killed, then
    # accepted: their outcome is unknown to us, the case the duplicate window is about.
    release = threading.Event()
    fake_twilio.script(*[Behaviour()] * 8, *[Behaviour(hold=release)] * 4)
    # Long enough that the held sends are still waiting when the worker is killed; it also
    # sets the lease after which a restarted worker takes the in-flight sends over.
    (first,) = workers.start(send_timeout_s=HOLD_TIMEOUT_S)
    try:
        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 12, WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while True:
            before_kill = await statuses(committed_db)
            recorded = {key for key, (status, _, _) in before_kill.items() if status == "sent"}
            if len(recorded) == 8:
                break
            assert time.monotonic() < deadline, f"only {len(recorded)} of 8 recorded as sent"
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        release.set()
    in_flight = {key for key, (status, _, _) in before_kill.items() if status == "sending"}
    assert len(in_flight) == 4
    await asyncio.to_thread(fake_twilio.wait_for, 12, WAIT_S)

    workers.start()
    final = await wait_until_all_sent(committed_db, len(queued))

    accepted = accepted_by_message(fake_twilio)
    assert set(accepted) == set(queued), "an alert was never handed to the provider"
    repeated = {key for key, times in accepted.items() if times > 1}
    assert repeated <= in_flight, "an SMS recorded as sent was sent again"
    assert all(sent_at is not None and sent_at <= due for _, sent_at, due in final.values())


async def test_provider_429_500_and_hangs_delay_but_never_lose_an_alert(
    committed_db: str, fake_twilio: FakeTwilio, workers: Workers
) -> None:
    queued = await queue_alerts(committed_db, 8)
    held_then_refused = Behaviour(status=500, hang_s=SEND_TIMEOUT_S + 1)
    held_then_accepted = hang(SEND_TIMEOUT_S + 1)
    fake_twilio.script(
        TOO_MANY,
        TOO_MANY,
        SERVER_ERROR,
        SERVER_ERROR,
        held_then_refused,
        held_then_accepted,
        TOO_MANY,
        SERVER_ERROR,
        TOO_MANY,
        SERVER_ERROR,
    )
    workers.start()

    final = await wait_until_all_sent(committed_db, len(queued))

    accepted = accepted_by_message(fake_twilio)
    assert set(accepted) == set(queued)
    assert sum(accepted.values()) - len(queued) <= 1, "duplicates beyond the one held send"
    assert all(sent_at is not None and sent_at <= due for _, sent_at, due in final.values())
    assert len(fake_twilio.requests) >= len(queued) + 10


@pytest.mark.parametrize("count", [2, 4])
async def test_racing_workers_never_send_an_sms_twice(
    committed_db: str, fake_twilio: FakeTwilio, workers: Workers, count: int
) -> None:
    # A send timeout far beyond any load on this machine: a timed-out send's outcome is
    # unknown and may be repeated by design, which is not what this test is about.
    workers.start(count, send_timeout_s=WAIT_S)
    queued: dict[uuid.UUID, str] = {}
    for _ in range(4):
        queued |= await queue_alerts(committed_db, 50)

    await wait_until_all_sent(committed_db, len(queued))

    accepted = accepted_by_message(fake_twilio)
    assert set(accepted) == set(queued)
    assert max(accepted.values()) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_stand_alone_worker_serves_its_queue_and_latency_metrics(
    committed_db: str, fake_twilio: FakeTwilio, workers: Workers
) -> None:
    port = free_port()
    hold = threading.Event()
    fake_twilio.script(*[Behaviour(hold=hold)] * 3)
    queued = await queue_alerts(committed_db, 3)
    workers.start(metrics_port=port)
    url = f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient() as client:

        async def scrape(wanted: str) -> str:
            deadline = time.monotonic() + WAIT_S
            text = ""
            while True:
                with contextlib.suppress(httpx.TransportError):
                    text = (await client.get(url)).text
                    if wanted in text:
                        return text
                assert time.monotonic() < deadline, f"never saw {wanted!r} at {url}"
                await asyncio.sleep(0.1)

        await asyncio.to_thread(fake_twilio.wait_for_arrivals, 3)
        await scrape('responder_outbox_depth{purpose="alert"} 3.0')
        hold.set()
        await wait_until_all_sent(committed_db, len(queued))
        text = await scrape("responder_alert_sms_accepted_seconds_count 3.0")
    assert 'responder_outbox_depth{purpose="cert_reminder"}' in text
    assert "responder_outbox_oldest_due_alert_age_seconds" in text


async def test_a_worker_process_hands_alerts_to_the_secondary_while_the_primary_fails(
    committed_db: str, fake_twilio: FakeTwilio, fake_elks: FakeElks, workers: Workers
) -> None:
    """``responder worker`` wires the secondary from RESPONDER_ELKS_*: with the primary
    answering 500, every alert goes out once, through 46elks, before its deadline."""
    queued = await queue_alerts(committed_db, 6)
    fake_twilio.script(*[SERVER_ERROR] * 100)
    env = {
        f"RESPONDER_{name.upper()}": str(value)
        for name, value in elks_settings_values(fake_elks).items()
    }
    workers.start(extra_env=env)

    final = await wait_until_all_sent(committed_db, len(queued))

    assert Counter(request.form["to"] for request in fake_elks.sent()) == Counter(queued.values())
    assert fake_twilio.messages() == []
    assert all(sent_at is not None and sent_at <= due for _, sent_at, due in final.values())
