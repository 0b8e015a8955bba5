"""What numbering events under the incident's lock costs delivery receipts.

A receipt (a status callback, or the worker recording a send) locks the alert SMS's
incident before the SMS and its alert, because its event takes the incident's event
counter (``dispatch.events``). Receipts of one incident therefore commit one
after another. Measured here: 30 receipts at once for the 30 alerts of one incident
(serialised on its row), against 30 receipts at once for 30 incidents (nothing to
wait for) in the same run, each receipt its own transaction, as the webhook does.

    .venv/bin/python -m bench.receipts [--rounds 20]

A private throwaway cluster; prints a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import Alert, Incident, Message, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.embedded import EmbeddedPostgres
from app.migrate import upgrade
from dispatch.delivery import advance_message
from geo.points import LatLon, geography_point

ALERTS = 30
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def queued_alert_messages(
    factory: async_sessionmaker[AsyncSession], *, incidents: int, per_incident: int
) -> list[uuid.UUID]:
    """``incidents`` incidents with ``per_incident`` alerts each, every alert SMS queued."""
    async with unit_of_work(factory) as session:
        alerts: list[tuple[Alert, Volunteer]] = []
        for _ in range(incidents):
            incident = Incident(
                centre="bench",
                external_ref=uuid.uuid4().hex,
                request_hash="0" * 64,
                kind="cardiac_arrest",
                location=geography_point(LatLon(59.3326, 18.0649)),
                address="Drottninggatan 1",
                flags={},
                status="alerting",
                radius_m=500.0,
                cpr_slots=2,
                aed_slots=0,
                created_at=NOW,
                updated_at=NOW,
            )
            session.add(incident)
            await session.flush()
            for _ in range(per_incident):
                volunteer = Volunteer(
                    name="bench", phone=f"+4670{uuid.uuid4().int % 10**7:07d}", language="sv"
                )
                session.add(volunteer)
                await session.flush()
                alert = Alert(
                    incident_id=incident.id,
                    volunteer_id=volunteer.id,
                    code="1234",
                    distance_m=100.0,
                    location_source="place",
                    created_at=NOW,
                    updated_at=NOW,
                )
                session.add(alert)
                alerts.append((alert, volunteer))
        await session.flush()
        await queue_sms(
            session,
            [
                OutboundSms(
                    phone=volunteer.phone or "",
                    body="CPR ALERT",
                    purpose="alert",
                    volunteer_id=volunteer.id,
                    incident_id=alert.incident_id,
                    alert_id=alert.id,
                    deadline_at=NOW,
                )
                for alert, volunteer in alerts
            ],
            now=NOW,
        )
    async with factory() as session:
        rows = await session.execute(
            select(Message.id).where(Message.alert_id.in_([alert.id for alert, _ in alerts]))
        )
        return list(rows.scalars())


async def receipts_at_once(
    factory: async_sessionmaker[AsyncSession], message_ids: list[uuid.UUID]
) -> float:
    """Seconds until every receipt, each its own transaction, has committed."""

    async def receipt(message_id: uuid.UUID) -> None:
        async with unit_of_work(factory) as session:
            await advance_message(session, message_id=message_id, status="sent", now=NOW)

    started = time.perf_counter()
    await asyncio.gather(*(receipt(message_id) for message_id in message_ids))
    return time.perf_counter() - started


async def measure(url: str, rounds: int) -> dict[str, object]:
    engine = create_engine(url, pool_size=ALERTS)
    factory = create_session_factory(engine)
    one: list[float] = []
    many: list[float] = []
    try:
        for _ in range(rounds):
            same = await queued_alert_messages(factory, incidents=1, per_incident=ALERTS)
            spread = await queued_alert_messages(factory, incidents=ALERTS, per_incident=1)
            one.append(await receipts_at_once(factory, same))
            many.append(await receipts_at_once(factory, spread))
    finally:
        await engine.dispose()
    return {
        "receipts": ALERTS,
        "rounds": rounds,
        "one_incident_ms": {"p50": statistics.median(one) * 1000, "max": max(one) * 1000},
        "thirty_incidents_ms": {"p50": statistics.median(many) * 1000, "max": max(many) * 1000},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="responder-receipts-"))
    home.chmod(0o755)
    cluster = EmbeddedPostgres(home / "cluster")
    try:
        cluster.start()
        cluster.ensure_database()
        upgrade(cluster.url())
        print(json.dumps(asyncio.run(measure(cluster.url(), args.rounds)), indent=2))
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
