"""Soak run: incidents, replies and location updates together, for minutes, then a census.

``.venv/bin/python -m bench.soak --minutes 3``

Starts a private cluster (or uses ``RESPONDER_DATABASE_URL``), seeds a region with
``bench.seed``, runs ``responder serve`` and the Twilio sink as subprocesses
(``bench.load.running_service``), and drives four open-loop streams at fixed rates
at once: dispatcher incidents, signed SMS replies to real alerts (one YES in five,
the rest NO), volunteer-app location updates and positioning-feed bulk batches.

Afterwards it waits for the outbox to drain and counts: every alert must have its
SMS accepted by the sink (``lost`` = alerts whose SMS never reached it), no request
may have failed (any status other than 2xx, or a transport error), and it reports
the rates actually held with latency percentiles. Results: standard output (JSON),
and ``--output`` to keep them. The figures are recorded in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from twilio.request_validator import RequestValidator

from app.core.db import sync_url
from app.embedded import EmbeddedPostgres
from bench import load, seed

LOGS = Path(__file__).resolve().parent / "results" / "tmp" / "soak-logs"


@dataclass(frozen=True)
class Rates:
    incidents_per_s: float = 1.0
    replies_per_s: float = 20.0
    locations_per_s: float = 200.0
    bulk_per_s: float = 2.0
    bulk_batch: int = 500


@dataclass
class Stream:
    """What one stream sent: status counts and latencies (ms)."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    items: int = 0

    def failures(self) -> int:
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))


MAX_IN_FLIGHT = 64


async def paced(
    rate_per_s: float, until: float, send: Callable[[int], Awaitable[int]], stream: Stream
) -> None:
    """Open loop: request n starts at n / rate, whatever the previous ones are doing.

    A request due while ``MAX_IN_FLIGHT`` of the stream are still unanswered is not
    sent and counted as ``not_sent_backlog`` (a failure): the service did not hold
    the rate, and queueing without bound would only hide it.
    """
    began = time.monotonic()
    pending: set[asyncio.Task[None]] = set()

    async def one(number: int) -> None:
        started = time.perf_counter()
        try:
            status = str(await send(number))
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        stream.latencies_ms.append((time.perf_counter() - started) * 1000)
        stream.statuses[status] += 1

    number = 0
    while (due := began + number / rate_per_s) < until:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if len(pending) >= MAX_IN_FLIGHT:
            stream.statuses["not_sent_backlog"] += 1
            number += 1
            continue
        task = asyncio.create_task(one(number))
        pending.add(task)
        task.add_done_callback(pending.discard)
        number += 1
    if pending:
        await asyncio.wait(pending)


async def unanswered_alerts(database_url: str, answered: set[str]) -> list[tuple[str, str, str]]:
    """(phone, code, alert id) of alerts delivered to the sink and not answered yet."""
    connection = await asyncpg.connect(sync_url(database_url))
    try:
        rows = await connection.fetch(
            "SELECT v.phone, a.code, a.id::text AS id FROM alert AS a"
            " JOIN volunteer AS v ON v.id = a.volunteer_id"
            " WHERE a.response = 'pending' AND a.delivery_status IN ('sent', 'delivered')"
        )
    finally:
        await connection.close()
    return [(row["phone"], row["code"], row["id"]) for row in rows if row["id"] not in answered]


async def census(database_url: str, sink_url: str) -> dict[str, Any]:
    """Wait (at most 120 s) for the outbox to drain, then count alerts and their SMS."""
    connection = await asyncpg.connect(sync_url(database_url))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            waiting = await connection.fetchval(
                "SELECT count(*) FROM message WHERE direction = 'out'"
                " AND status IN ('queued', 'sending')"
            )
            if waiting == 0:
                break
            await asyncio.sleep(0.5)
        alerts = await connection.fetchval("SELECT count(*) FROM alert")
        sent_sids = {
            row["provider_sid"]
            for row in await connection.fetch(
                "SELECT provider_sid FROM message WHERE purpose = 'alert' AND direction = 'out'"
                " AND provider_sid IS NOT NULL"
            )
        }
        abandoned = dict(
            await connection.fetch(
                "SELECT coalesce(failure_reason, '?'), count(*) FROM message"
                " WHERE purpose = 'alert' AND status = 'failed' GROUP BY 1"
            )
        )
        outbound = await connection.fetchval("SELECT count(*) FROM message WHERE direction = 'out'")
        responses = dict(
            await connection.fetch("SELECT response, count(*) FROM alert GROUP BY response")
        )
    finally:
        await connection.close()
    async with httpx.AsyncClient(timeout=60) as client:
        arrivals = (await client.get(f"{sink_url}/_bench/arrivals")).json()
    arrived = {arrival["sid"] for arrival in arrivals}
    counts = Counter(arrival["sid"] for arrival in arrivals)
    return {
        "alerts": alerts,
        "alert_sms_accepted_by_sink": len(sent_sids & arrived),
        "alerts_lost": alerts - len(sent_sids & arrived) - sum(abandoned.values()),
        "alert_sms_abandoned": abandoned,
        "outbound_sms_total": outbound,
        "sink_arrivals": len(arrivals),
        "sink_duplicate_sids": sum(1 for count in counts.values() if count > 1),
        "alert_responses": responses,
    }


def summary(stream: Stream, seconds: float, *, per_item: int = 1) -> dict[str, Any]:
    requests = sum(stream.statuses.values())
    return {
        "requests": requests,
        "requests_per_s": round(requests / seconds, 1),
        "items_per_s": round(requests * per_item / seconds, 1),
        "latency_ms": load.summary_ms(stream.latencies_ms),
        "http_statuses": dict(stream.statuses),
    }


async def soak(
    service: load.Service, database_url: str, *, seconds: float, rates: Rates
) -> dict[str, Any]:
    credentials = await load.issue_credentials(database_url, volunteer_tokens=400)
    bulk_ids = await load.sample_volunteer_ids(database_url, 20_000)
    rng = random.Random(7)
    points = seed.incident_points(10_000, rng=rng)
    streams = {name: Stream() for name in ("incidents", "replies", "locations", "bulk")}
    tag = uuid.uuid4().hex[:6]
    validator = RequestValidator(load.AUTH_TOKEN)
    sms_url = f"{service.base_url}/webhooks/twilio/sms"
    answered: set[str] = set()
    backlog: list[tuple[str, str, str]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30, limits=limits) as client:

        async def incident(number: int) -> int:
            lat, lon = points[number % len(points)]
            answer = await client.post(
                "/v1/incidents",
                headers=credentials.dispatcher,
                json={
                    "external_ref": f"SOAK-{tag}-{number}",
                    "kind": "cardiac_arrest",
                    "location": {"lat": lat, "lon": lon},
                    "address": f"Soakgatan {number}, Stockholm",
                },
            )
            return answer.status_code

        async def reply(number: int) -> int:
            if not backlog:
                backlog.extend(await unanswered_alerts(database_url, answered))
            if backlog:
                phone, code, alert_id = backlog.pop()
                answered.add(alert_id)
                text = f"{'YES' if number % 5 == 0 else 'NO'} {code}"
            else:
                phone, text = f"+4670{9_000_000 + number % 999_999:07d}", "HELP"
            params = {
                "MessageSid": f"SM{uuid.uuid4().hex}",
                "AccountSid": load.ACCOUNT_SID,
                "From": phone,
                "To": load.SERVICE_NUMBER,
                "Body": text,
                "NumMedia": "0",
            }
            signature = validator.compute_signature(sms_url, params)
            answer = await client.post(
                "/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
            )
            return answer.status_code

        async def location(number: int) -> int:
            _, headers = credentials.volunteers[number % len(credentials.volunteers)]
            lat, lon = points[number % len(points)]
            answer = await client.put(
                "/v1/me/location", headers=headers, json=fix(lat, lon, number)
            )
            return answer.status_code

        async def bulk(number: int) -> int:
            fixes = []
            for k in range(rates.bulk_batch):
                n = number * rates.bulk_batch + k
                lat, lon = points[n % len(points)]
                fixes.append({"volunteer_id": str(bulk_ids[n % len(bulk_ids)])} | fix(lat, lon, n))
            answer = await client.post(
                "/v1/locations/bulk", headers=credentials.locator, json={"locations": fixes}
            )
            return answer.status_code

        began = time.monotonic()
        until = began + seconds
        await asyncio.gather(
            paced(rates.incidents_per_s, until, incident, streams["incidents"]),
            paced(rates.replies_per_s, until, reply, streams["replies"]),
            paced(rates.locations_per_s, until, location, streams["locations"]),
            paced(rates.bulk_per_s, until, bulk, streams["bulk"]),
        )
        held = time.monotonic() - began
    counted = await census(database_url, service.sink_url)
    return {
        "seconds": round(held, 1),
        "rates_asked": rates.__dict__,
        "incidents": summary(streams["incidents"], held),
        "replies": summary(streams["replies"], held),
        "single_locations": summary(streams["locations"], held),
        "bulk_locations": summary(streams["bulk"], held, per_item=rates.bulk_batch),
        "failed_requests": sum(stream.failures() for stream in streams.values()),
        "census": counted,
    }


def fix(lat: float, lon: float, number: int) -> dict[str, Any]:
    return {
        "lat": lat + (number % 97) * 1e-5,
        "lon": lon + (number % 89) * 1e-5,
        "accuracy_m": 5 + number % 40,
        "recorded_at": datetime.now(UTC).isoformat(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--volunteers", type=int, default=50_000)
    parser.add_argument("--incidents-per-s", type=float, default=Rates.incidents_per_s)
    parser.add_argument("--replies-per-s", type=float, default=Rates.replies_per_s)
    parser.add_argument("--locations-per-s", type=float, default=Rates.locations_per_s)
    parser.add_argument("--bulk-per-s", type=float, default=Rates.bulk_per_s)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--logs", type=Path, default=LOGS, help="service and sink logs")
    args = parser.parse_args(argv)
    rates = Rates(
        incidents_per_s=args.incidents_per_s,
        replies_per_s=args.replies_per_s,
        locations_per_s=args.locations_per_s,
        bulk_per_s=args.bulk_per_s,
    )
    home = Path(tempfile.mkdtemp(prefix="responder-soak-"))
    home.chmod(0o755)
    cluster = EmbeddedPostgres(home / "cluster")
    try:
        cluster.start()
        cluster.ensure_database()
        url = cluster.url()
        seed.seed_database(url, volunteers=args.volunteers)
        asyncio.run(load.reset_activity(url))
        with load.running_service(url, logs=args.logs) as service:
            report = asyncio.run(soak(service, url, seconds=args.minutes * 60, rates=rates))
    finally:
        cluster.stop()
        if cluster.log_file.exists():
            args.logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(cluster.log_file, args.logs / "postgresql.log")
        shutil.rmtree(home, ignore_errors=True)
    report["volunteers"] = args.volunteers
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    ok = report["failed_requests"] == 0 and report["census"]["alerts_lost"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
