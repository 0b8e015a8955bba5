"""The worker's claim and its record of a send run statements built once.

They run on every wake of every worker and for every SMS sent. SQLAlchemy caches a
statement's compiled form under a cache key that it computes once per statement
object, except for an ORM-enabled UPDATE (an ORM entity or attribute anywhere in
it), whose key it rebuilds on every execution: for the claim's UPDATE that cost
more CPU than the rest of a send (docs/benchmarks.md, first pass).
So these statements are built on table columns, once; this test fails when a
statement of that path is built per call again, or made ORM-enabled. No timing is
asserted: it counts the cache keys computed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import event

from app.core.db import unit_of_work
from dispatch.gateway import SendResult
from dispatch.worker import claim_tiers, record_success
from tests.statements import count_cache_keys, with_session_queries
from tests.worker_harness import Harness


async def test_claiming_and_recording_a_send_compute_no_statement_cache_key(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = await harness.alerts(2)
    computed = count_cache_keys(monkeypatch)
    per_send = []
    for number, _ in enumerate(alerts):
        computed[0] = 0
        now = harness.clock.now()
        async with unit_of_work(harness.factory) as session:
            [claimed] = (
                await claim_tiers(
                    session, now=now, worker_id="w", limit=1, lease=timedelta(seconds=30)
                )
            ).claimed
        async with unit_of_work(harness.factory) as session:
            await record_success(
                session,
                sms=claimed,
                result=SendResult(provider_sid=f"SM{number}", status="queued"),
                now=now,
                provider="twilio",
            )
        per_send.append(computed[0])

    assert per_send[1] == 0, f"cache keys computed for the second send: {per_send}"
    for alert in alerts:
        assert (await harness.reload(alert)).delivery_status == "sent"


async def test_a_burst_is_claimed_in_one_statement_and_the_other_tiers_wait_for_the_next_claim(
    harness: Harness,
) -> None:
    """The burst's first request waited on the claim's round trips (the alerts' mark, the
    urgent and bulk reads): under load each one cost milliseconds (docs/benchmarks.md)."""
    alerts = await harness.alerts(3)
    [update_phone] = await harness.texts("update", 1)
    statements: list[str] = []

    def counting(*args: Any) -> None:
        statements.append(args[2])

    event.listen(harness.engine.sync_engine, "before_cursor_execute", counting)
    try:
        with with_session_queries(statements):
            now = harness.clock.now()
            async with unit_of_work(harness.factory) as session:
                burst = (
                    await claim_tiers(
                        session, now=now, worker_id="w", limit=10, lease=timedelta(seconds=30)
                    )
                ).claimed
            claimed_statements = len(statements)
            async with unit_of_work(harness.factory) as session:
                after = (
                    await claim_tiers(
                        session, now=now, worker_id="w", limit=10, lease=timedelta(seconds=30)
                    )
                ).claimed
    finally:
        event.remove(harness.engine.sync_engine, "before_cursor_execute", counting)

    assert claimed_statements == 1, statements
    assert {sms.alert_id for sms in burst} == {alert.id for alert in alerts}
    for alert in alerts:
        assert (await harness.reload(alert)).delivery_status == "sending"
    assert [sms.phone for sms in after] == [update_phone]


def count_transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element counter of the transactions asyncpg starts from now on."""
    started = [0]
    start = asyncpg.transaction.Transaction.start

    async def counting(self: Any) -> None:
        started[0] += 1
        await start(self)

    monkeypatch.setattr(asyncpg.transaction.Transaction, "start", counting)
    return started


async def test_the_workers_claim_runs_without_begin_and_commit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One atomic statement needs no transaction around it: two round trips fewer
    before a burst's first request."""
    await harness.alerts(2)
    started = count_transactions(monkeypatch)
    worker = harness.worker()

    sends = await worker.fill_slots()  # returns once claimed; the sends start after
    claim_transactions = started[0]
    await asyncio.gather(*sends)
    await worker.gateway.close()

    assert len(sends) == 2
    assert claim_transactions == 0


async def test_the_workers_idle_wait_reads_the_next_due_time_without_begin_and_rollback(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It runs on every wake of the loop (in the reply phases, after most finished
    sends): a single read needs no transaction, so its BEGIN and ROLLBACK were two
    round trips of three."""
    worker = harness.worker()
    await worker._idle_for()  # a first connection's set-up is its own
    started = count_transactions(monkeypatch)

    idle_s = await worker._idle_for()
    await worker.gateway.close()

    assert idle_s == worker.poll_interval_s  # nothing queued: the poll interval
    assert started[0] == 0
