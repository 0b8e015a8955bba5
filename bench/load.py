"""The service as in production, driven over HTTP: alert path, webhooks, live locations.

``running_service`` starts the Twilio sink and ``responder serve`` (API and dispatch
worker in one process, the production default) as subprocesses against the bench
database; the load generator is a separate process (wrk for the HTTP phases, one
lean keep-alive connection for the dispatcher's POSTs, ``bench.post_client``), so the
figures include HTTP parsing, authentication, rate limiting and the real Twilio
client in the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator

from app.core.db import create_engine, create_session_factory, sync_url, unit_of_work
from app.registry.keys import Role, issue_key
from bench import wrk
from bench.post_client import PostClient

ACCOUNT_SID = "AC" + "be7c4" * 6 + "00"
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
SERVICE_NUMBER = "+46700000000"
CENTRE = "bench"
TRANSIENT_TABLES = "incident, alert, message, selection_record, incident_event, rate_limit_bucket"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Service:
    base_url: str
    sink_url: str
    pid: int
    worker_pids: list[int] = field(default_factory=list)
    serve_pids: list[int] = field(default_factory=list)
    """With ``--processes N``, ``serve``'s N uvicorn processes (``pid`` supervises them)."""

    @property
    def serving_pids(self) -> list[int]:
        """``serve``'s processes alone."""
        return self.serve_pids or [self.pid]

    @property
    def pids(self) -> list[int]:
        """``serve``'s processes, then the stand-alone workers: whose CPU a phase costs."""
        return [*self.serving_pids, *self.worker_pids]


def _uvicorn_processes(supervisor: int, expected: int) -> list[int]:
    """The spawned worker processes under ``serve --processes N``, once all N exist."""
    deadline = time.monotonic() + 60
    while True:
        listed = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        spawned = [
            int(pid) for pid in listed if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        if len(spawned) >= expected or time.monotonic() > deadline:
            return spawned
        time.sleep(0.1)


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited at start; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within 120 s; see {log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_service(
    database_url: str, *, logs: Path, workers: int = 1, processes: int = 1
) -> Iterator[Service]:
    """The Twilio sink, ``responder serve --processes N`` and ``workers`` × ``responder worker``.

    The default mirrors ``docker-compose.yml``: one ``serve`` process (API and a
    dispatch worker) plus one stand-alone worker, all claiming from the same queue.
    """
    logs.mkdir(parents=True, exist_ok=True)
    sink_port, api_port = free_port(), free_port()
    sink_url = f"http://127.0.0.1:{sink_port}"
    base_url = f"http://127.0.0.1:{api_port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("RESPONDER_")}
    env.update(
        RESPONDER_DATABASE_URL=database_url,
        RESPONDER_TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        RESPONDER_TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        RESPONDER_TWILIO_FROM=SERVICE_NUMBER,
        RESPONDER_TWILIO_API_BASE=sink_url,
        RESPONDER_PUBLIC_BASE_URL=base_url,
        RESPONDER_LOG_LEVEL="WARNING",
        RESPONDER_LOG_FORMAT="json",
        # Each response names its phases; the alert path's breakdown is read from it.
        RESPONDER_SERVER_TIMING="true",
    )
    responder = str(Path(sys.executable).with_name("responder"))
    with contextlib.ExitStack() as stack:

        def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
            out = stack.enter_context((logs / f"{name}.log").open("wb"))
            process = subprocess.Popen(  # noqa: S603 - our own entry points
                command, stdout=out, stderr=subprocess.STDOUT, env=env
            )
            stack.callback(_stop, process)
            return process

        sink = start(
            "twilio-sink", [sys.executable, "-m", "bench.twilio_sink", "--port", str(sink_port)]
        )
        _wait_until_up(f"{sink_url}/_bench/arrivals", sink, logs / "twilio-sink.log")
        service = start(
            "service",
            [responder, "serve", "--host", "127.0.0.1", "--port", str(api_port)]
            + ["--processes", str(processes)],
        )
        _wait_until_up(f"{base_url}/healthz", service, logs / "service.log")
        serve_pids = _uvicorn_processes(service.pid, processes) if processes > 1 else []
        worker_pids = [start(f"worker-{n}", [responder, "worker"]).pid for n in range(workers)]
        yield Service(
            base_url=base_url,
            sink_url=sink_url,
            pid=service.pid,
            worker_pids=worker_pids,
            serve_pids=serve_pids,
        )


@dataclass
class Credentials:
    dispatcher: dict[str, str]
    locator: dict[str, str]
    volunteers: list[tuple[uuid.UUID, dict[str, str]]] = field(default_factory=list)


async def reset_activity(database_url: str) -> None:
    """Forget earlier runs' incidents, alerts, messages and rate-limit counters.

    Otherwise cooldowns and duplicate detection from a previous run would change
    who is alerted, and the figures would depend on history.
    """
    connection = await asyncpg.connect(sync_url(database_url))
    try:
        await connection.execute(f"TRUNCATE {TRANSIENT_TABLES} CASCADE")
        await connection.execute("DELETE FROM api_key WHERE name LIKE 'bench-%'")
    finally:
        await connection.close()


async def issue_credentials(database_url: str, *, volunteer_tokens: int) -> Credentials:
    """Keys for each role the benchmark plays, made the way the CLI makes them."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with unit_of_work(create_session_factory(engine)) as session:

            async def key(role: Role, name: str, **extra: Any) -> dict[str, str]:
                plaintext, _ = await issue_key(session, role=role, name=name, **extra)
                return {"Authorization": f"Bearer {plaintext}"}

            credentials = Credentials(
                dispatcher=await key("dispatcher", "bench-dispatcher", centre=CENTRE),
                locator=await key("locator", "bench-locator"),
            )
            for volunteer_id in await _active_volunteer_ids(session, volunteer_tokens):
                headers = await key("volunteer", "bench-app", volunteer_id=volunteer_id)
                credentials.volunteers.append((volunteer_id, headers))
    finally:
        await engine.dispose()
    return credentials


async def _active_volunteer_ids(session: AsyncSession, count: int) -> list[uuid.UUID]:
    from sqlalchemy import select

    from app.core.models import Volunteer

    result = await session.execute(
        select(Volunteer.id).where(Volunteer.status == "active").order_by(Volunteer.id).limit(count)
    )
    return list(result.scalars())


def summary_ms(samples: Sequence[float]) -> dict[str, float | int]:
    """n, p50, p99, mean and max of latencies in milliseconds (nearest-rank)."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 2)

    return {
        "n": len(ordered),
        "p50": rank(0.50),
        "p99": rank(0.99),
        "mean": round(sum(ordered) / len(ordered), 2),
        "max": round(ordered[-1], 2),
    }


def server_timing(header: str | None) -> dict[str, float]:
    """A ``Server-Timing`` header (``name;dur=1.2, …``) → {name: ms}."""
    phases: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name and duration:
            phases[name] = float(duration)
    return phases


def summarise_phases(samples: Sequence[dict[str, float]]) -> dict[str, Any]:
    """{phase: summary} over requests; a phase absent from a request is not a zero."""
    names = dict.fromkeys(name for sample in samples for name in sample)
    return {name: summary_ms([s[name] for s in samples if name in s]) for name in names}


_ADDRESS = re.compile(r"Benchgatan (\d+)-(\d+)")


async def measure_alert_path(
    service: Service,
    credentials: Credentials,
    *,
    points: Sequence[tuple[float, float]],
    interval_s: float,
    run_tag: int,
) -> dict[str, Any]:
    """POST sent → the last of the incident's alert requests received by the sink.

    Incidents are posted one at a time at a fixed pace (open loop, far below
    capacity), which is how cardiac arrests arrive; each incident's address carries
    its number so that the sink's arrivals can be attributed to it. The POSTs go
    through ``PostClient``: the clock starts as the request's bytes are written.
    """
    async with (
        httpx.AsyncClient(base_url=service.base_url, timeout=30) as client,
        PostClient(service.base_url) as dispatcher,
    ):
        await client.delete(f"{service.sink_url}/_bench/arrivals")
        posted: dict[int, tuple[float, float, int]] = {}
        phases: list[dict[str, float]] = []
        statuses: dict[str, int] = {}
        for number, (lat, lon) in enumerate(points):
            request = dispatcher.encode(
                "/v1/incidents",
                headers=credentials.dispatcher,
                body={
                    "external_ref": f"BENCH-{run_tag}-{number}",
                    "kind": "cardiac_arrest",
                    "location": {"lat": lat, "lon": lon},
                    "address": f"Benchgatan {run_tag}-{number}",
                },
            )
            response = await dispatcher.send(request)
            phases.append(server_timing(response.headers.get("server-timing")))
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
            if response.status in (200, 201):
                alerted = int(response.json().get("counts", {}).get("alerted", 0))
                posted[number] = (response.sent, response.received, alerted)
            await asyncio.sleep(max(0.0, response.sent + interval_s - time.monotonic()))
        expected = sum(alerted for _, _, alerted in posted.values())
        arrivals = await _wait_for_arrivals(client, service.sink_url, expected)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    received: dict[int, int] = {}
    for arrival in arrivals:
        match = _ADDRESS.search(arrival.get("body") or "")
        if match and int(match.group(1)) == run_tag:
            number = int(match.group(2))
            first[number] = min(first.get(number, arrival["t"]), arrival["t"])
            last[number] = max(last.get(number, 0.0), arrival["t"])
            received[number] = received.get(number, 0) + 1
    full = [n for n, (_, _, alerted) in posted.items() if alerted and received.get(n) == alerted]
    alerted_counts = [float(alerted) for _, _, alerted in posted.values()]
    return {
        "incidents": len(points),
        "http_statuses": statuses,
        "alerts_per_incident": summary_ms(alerted_counts),
        "incidents_alerted": sum(1 for count in alerted_counts if count > 0),
        "incidents_with_30_alerts": sum(1 for count in alerted_counts if count == 30),
        "incidents_fully_received": len(full),
        "alerts_expected": expected,
        "alerts_received": sum(received.values()),
        # The headline: what a dispatch centre lives through, from its send onwards.
        "posted_to_last_request_ms": summary_ms([(last[n] - posted[n][0]) * 1000 for n in full]),
        "post_response_ms": summary_ms([(b - a) * 1000 for a, b, _ in posted.values()]),
        # SPEC §7's figure: its clock starts once the 201 is back.
        "accepted_to_last_request_ms": summary_ms([(last[n] - posted[n][1]) * 1000 for n in full]),
        # Where the burst's time goes: until the worker's first request, and its spread.
        "posted_to_first_request_ms": summary_ms([(first[n] - posted[n][0]) * 1000 for n in full]),
        "first_to_last_request_ms": summary_ms([(last[n] - first[n]) * 1000 for n in full]),
        # Server-Timing of each POST: offsets (dependencies, handler, app) and phases.
        "post_server_timing_ms": summarise_phases(phases),
        # The first 20 (few incidents open yet) against the last 20 (every earlier one
        # still open: its alerts' volunteers busy or cooling down, so selection walks
        # further out from the centre).
        "post_server_timing_first_20_ms": summarise_phases(phases[:20]),
        "post_server_timing_last_20_ms": summarise_phases(phases[-20:]),
    }


async def _wait_for_arrivals(
    client: httpx.AsyncClient, sink_url: str, expected: int
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        arrivals: list[dict[str, Any]] = (await client.get(f"{sink_url}/_bench/arrivals")).json()
        if len(arrivals) >= expected or time.monotonic() > deadline:
            return arrivals
        await asyncio.sleep(0.2)


INTERLEAVED = "interleaved"
BY_INCIDENT = "by_incident"


async def _alert_replies(database_url: str, order: str) -> list[tuple[str, str]]:
    """(phone, code) of half the alerts so far, so that replies change real state.

    ``interleaved``: the odd-ranked alerts of every incident, round robin over the
    incidents (real traffic: an incident's replies trickle in over a minute or two,
    so concurrent replies are mostly about different incidents). ``by_incident``:
    the even-ranked ones, one incident after the other, so concurrent replies queue
    on one incident's lock (the worst case; replies to one incident are serialised
    by design). Disjoint halves, so both orders can run against the same alerts.
    """
    parity, ordering = (1, "rank, created_at") if order == INTERLEAVED else (0, "created_at")
    connection = await asyncpg.connect(sync_url(database_url))
    try:
        rows = await connection.fetch(
            "SELECT phone, code FROM ("
            " SELECT v.phone, a.code, a.created_at,"
            " row_number() OVER (PARTITION BY a.incident_id ORDER BY a.created_at, a.id) AS rank"
            " FROM alert AS a JOIN volunteer AS v ON v.id = a.volunteer_id) AS ranked"
            f" WHERE rank % 2 = $1 ORDER BY {ordering}",
            parity,
        )
    finally:
        await connection.close()
    return [(row["phone"], row["code"]) for row in rows]


async def measure_webhooks(
    service: Service, database_url: str, *, requests: int, concurrency: int, order: str
) -> dict[str, Any]:
    """Signed inbound SMS: replies to real alerts (1 in 5 YES, the rest NO), then HELP.

    Each request is what Twilio sends: form fields and ``X-Twilio-Signature`` over
    the public URL, a fresh MessageSid each. ``order``: see ``_alert_replies``.
    """
    validator = RequestValidator(AUTH_TOKEN)
    url = f"{service.base_url}/webhooks/twilio/sms"
    replies = await _alert_replies(database_url, order)
    raw = []
    for number in range(requests):
        if number < len(replies):
            phone, code = replies[number]
            text = f"{'YES' if number % 5 == 0 else 'NO'} {code}"
        else:
            phone, text = f"+4670{9_000_000 + number % 999_999:07d}", "HELP"
        params = {
            "MessageSid": f"SM{uuid.uuid4().hex}",
            "AccountSid": ACCOUNT_SID,
            "From": phone,
            "To": SERVICE_NUMBER,
            "Body": text,
            "NumMedia": "0",
        }
        raw.append(
            wrk.raw_request(
                service.base_url,
                "POST",
                "/webhooks/twilio/sms",
                headers={"X-Twilio-Signature": validator.compute_signature(url, params)},
                body=urlencode(params).encode(),
                content_type="application/x-www-form-urlencoded",
            )
        )
    measured = wrk.replay(service.base_url, raw, connections=concurrency, service_pids=service.pids)
    return {
        "order": order,
        "replies_to_alerts": min(requests, len(replies)),
        **measured,
    }


def _fix(lat: float, lon: float, number: int) -> dict[str, Any]:
    return {
        "lat": lat + (number % 97) * 1e-5,
        "lon": lon + (number % 89) * 1e-5,
        "accuracy_m": 5 + number % 40,
        "recorded_at": datetime.now(UTC).isoformat(),
    }


async def measure_single_locations(
    service: Service,
    credentials: Credentials,
    *,
    points: Sequence[tuple[float, float]],
    requests: int,
    concurrency: int,
) -> dict[str, Any]:
    """``PUT /v1/me/location`` from many volunteers' app tokens at once."""
    volunteers = credentials.volunteers
    raw = [
        wrk.raw_request(
            service.base_url,
            "PUT",
            "/v1/me/location",
            headers=volunteers[n % len(volunteers)][1],
            body=json.dumps(_fix(*points[n % len(points)], n)).encode(),
            content_type="application/json",
        )
        for n in range(requests)
    ]
    measured = wrk.replay(service.base_url, raw, connections=concurrency, service_pids=service.pids)
    return {"volunteer_tokens": len(volunteers), **measured}


async def measure_bulk_locations(
    service: Service,
    credentials: Credentials,
    volunteer_ids: Sequence[uuid.UUID],
    *,
    points: Sequence[tuple[float, float]],
    batch: int,
    batches: int,
    concurrency: int,
) -> dict[str, Any]:
    """``POST /v1/locations/bulk`` from the positioning feed, ``batch`` fixes a request."""
    bodies = []
    for b in range(batches):
        fixes = []
        for k in range(batch):
            n = b * batch + k
            fixes.append(
                {"volunteer_id": str(volunteer_ids[n % len(volunteer_ids)])}
                | _fix(*points[n % len(points)], n)
            )
        bodies.append(
            wrk.raw_request(
                service.base_url,
                "POST",
                "/v1/locations/bulk",
                headers=credentials.locator,
                body=json.dumps({"locations": fixes}).encode(),
                content_type="application/json",
            )
        )
    measured = wrk.replay(
        service.base_url, bodies, connections=concurrency, service_pids=service.pids
    )
    return {
        "points": batch * batches,
        "batch": batch,
        "points_per_s": round(batch * batches / measured["seconds"], 1),
        **measured,
    }


async def sample_volunteer_ids(database_url: str, count: int) -> list[uuid.UUID]:
    """Volunteers spread over the whole table, for the bulk feed (by id, one per fix)."""
    connection = await asyncpg.connect(sync_url(database_url))
    try:
        rows = await connection.fetch(
            "SELECT id FROM volunteer ORDER BY md5(id::text) LIMIT $1", count
        )
    finally:
        await connection.close()
    return [row["id"] for row in rows]


async def measure_floors(service: Service, database_url: str) -> dict[str, Any]:
    """What the same run measures for the parts every request is made of.

    ``bare_route``: ``GET /healthz`` through the same middleware stack, no database
    (2,000 by wrk, 16 connections): HTTP, routing and the middleware, per request.
    ``commit_ms``: one single-row insert and its commit on a fresh asyncpg connection
    (the round trips and the WAL flush every write request waits for), into a
    scratch table dropped afterwards. ``provider_send``: building and sending one
    Twilio request (:func:`measure_provider_send`).
    """
    raw = [
        wrk.raw_request(
            service.base_url, "GET", "/healthz", headers={}, body=b"", content_type="text/plain"
        )
        for _ in range(2000)
    ]
    # ``serve``'s CPU alone: no worker takes part in a bare request, and the stand-alone
    # worker may still be starting up while these run (its start-up is not a floor).
    bare = wrk.replay(service.base_url, raw, connections=16, service_pids=service.serving_pids)
    connection = await asyncpg.connect(sync_url(database_url))
    commits: list[float] = []
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_commit (n int)")
        for number in range(200):
            started = time.perf_counter()
            async with connection.transaction():
                await connection.execute("INSERT INTO bench_commit VALUES ($1)", number)
            commits.append((time.perf_counter() - started) * 1000)
    finally:
        await connection.execute("DROP TABLE IF EXISTS bench_commit")
        await connection.close()
    return {
        "bare_route": bare,
        "commit_ms": summary_ms(commits),
        "provider_send": await measure_provider_send(service.sink_url),
    }


async def measure_provider_send(
    sink_url: str, *, sends: int = 300, bursts: int = 20
) -> dict[str, Any]:
    """What the official Twilio client costs per SMS, with no database at all.

    The service's own ``TwilioGateway`` (twilio's ``Client`` over its aiohttp
    transport) against the same sink: ``sends`` one after another (CPU of this process
    per send, and latency), then ``bursts`` × 30 at once, the wall time until the
    30th is answered: the floor of "accepted → 30th" for one process.
    """
    from dispatch.gateway import SendRequest, TwilioGateway

    gateway = TwilioGateway(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        public_base_url="https://bench.invalid",
        messaging_service_sid=None,
        from_number=SERVICE_NUMBER,
        api_base=sink_url,
        timeout_s=10.0,
    )

    def request(number: int) -> SendRequest:
        return SendRequest(
            message_id=uuid.uuid4(),
            alert_id=uuid.uuid4(),
            to=f"+4670{number % 10_000_000:07d}",
            body=f"Floor {number}: cardiac arrest 240 m from you, Floorgatan 1. Reply YES 1234",
            validity_s=120,
        )

    try:
        await gateway.send(request(0))  # the connection pool's first connection
        latencies: list[float] = []
        cpu_started = time.process_time()
        for number in range(sends):
            started = time.perf_counter()
            await gateway.send(request(number))
            latencies.append((time.perf_counter() - started) * 1000)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / sends
        burst_ms: list[float] = []
        for burst in range(bursts):
            started = time.perf_counter()
            await asyncio.gather(*(gateway.send(request(burst * 30 + n)) for n in range(30)))
            burst_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await gateway.close()
    return {
        "cpu_ms_per_send": round(cpu_ms, 3),
        "send_ms": summary_ms(latencies),
        "burst_of_30_ms": summary_ms(burst_ms),
    }
