"""The benchmark: ``.venv/bin/python -m bench.run --volunteers 1000000``.

Creates (or reuses) a private cluster under ``.responder-bench/`` unless
``RESPONDER_DATABASE_URL`` names a database, seeds it when it does not hold exactly
that many volunteers, then measures the targets of SPEC §7, each beside a baseline
from the same run, and writes ``bench/results/<date>.json`` (``--output`` to change)
and a table on standard output. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text

from app.core.db import create_engine, create_session_factory, sync_url
from app.core.heap import serving_heap
from app.core.settings import Settings
from app.embedded import EmbeddedPostgres
from bench import load, seed, sql
from geo.points import LatLon

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("sql", "alert", "webhooks", "locations")
BENCH_CLUSTER_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "12GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
}
TARGETS = {
    "selection_with_aed_p99_ms": 5.0,
    "posted_to_last_request_p50_ms": 30.0,
    "posted_to_last_request_p99_ms": 80.0,
    "post_response_p50_ms": 20.0,
    "service_cpu_ms_per_reply": 3.0,
    "service_cpu_ms_per_location": 1.0,
    "webhooks_per_s": 500.0,
    "single_locations_per_s": 2000.0,
    "bulk_points_per_s": 20000.0,
}


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to run: the full benchmark or the smoke run."""

    points: int = 1000
    selection_samples: int = 1000
    floor_transactions: int = 5000
    no_index_transactions: int = 20
    naive_samples: int = 200
    incidents: int = 200
    incident_interval_s: float = 1.0
    webhooks: int = 5000
    webhook_concurrency: int = 32
    single_locations: int = 10_000
    location_concurrency: int = 64
    volunteer_tokens: int = 1000
    bulk_batch: int = 1000
    bulk_batches: int = 100
    bulk_concurrency: int = 4
    workers: int = 1
    processes: int = 1


SMOKE = Plan(
    points=50,
    selection_samples=20,
    floor_transactions=50,
    no_index_transactions=3,
    naive_samples=5,
    incidents=4,
    incident_interval_s=0.05,
    webhooks=40,
    webhook_concurrency=4,
    single_locations=40,
    location_concurrency=4,
    volunteer_tokens=10,
    bulk_batch=100,
    bulk_batches=3,
    bulk_concurrency=2,
)


@contextmanager
def bench_database(home: Path) -> Iterator[str]:
    """``RESPONDER_DATABASE_URL`` if set, else the private bench cluster (tuned once)."""
    configured = os.environ.get("RESPONDER_DATABASE_URL")
    if configured:
        yield configured
        return
    cluster = EmbeddedPostgres(home)
    cluster.start()
    current = cluster.psql("postgres", "-tAc", "SHOW shared_buffers").strip()
    if current != BENCH_CLUSTER_SETTINGS["shared_buffers"]:
        for name, value in BENCH_CLUSTER_SETTINGS.items():
            cluster.psql("postgres", "-c", f"ALTER SYSTEM SET {name} = '{value}'")
        cluster.stop()
        cluster.start()
    cluster.ensure_database()
    try:
        yield cluster.url()
    finally:
        cluster.stop_if_started_here()


def machine(url: str) -> dict[str, Any]:
    async def versions() -> tuple[str, str]:
        connection = await asyncpg.connect(sync_url(url))
        try:
            postgres = await connection.fetchval("SHOW server_version")
            postgis = await connection.fetchval("SELECT postgis_lib_version()")
        finally:
            await connection.close()
        return str(postgres), str(postgis)

    postgres, postgis = asyncio.run(versions())
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    debian = Path("/etc/debian_version")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "os": f"Debian {debian.read_text().strip()}" if debian.exists() else platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres,
        "postgis": postgis,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


async def measure_sql(url: str, points: list[tuple[float, float]], plan: Plan) -> dict[str, Any]:
    settings = Settings(_env_file=None)
    radius, limit = settings.alert_radius_m, settings.max_alerted
    results: dict[str, Any] = {
        "floor_pgbench_ms": load.summary_ms(
            sql.pgbench_latencies_ms(
                url,
                points=len(points),
                transactions=plan.floor_transactions,
                radius_m=radius,
                limit=limit,
            )
        ),
        "no_index_pgbench_ms": load.summary_ms(
            sql.pgbench_latencies_ms(
                url,
                points=len(points),
                transactions=plan.no_index_transactions,
                radius_m=radius,
                limit=limit,
                options=sql.NO_INDEX_OPTIONS,
            )
        ),
    }
    engine = create_engine(url, pool_size=1)
    factory = create_session_factory(engine)
    now = datetime.now(UTC)
    try:

        async def naive(session: Any, lat: float, lon: float) -> object:
            return await sql.naive_orm_candidates(
                session, lat=lat, lon=lon, radius_m=radius, limit=limit, now=now
            )

        results["naive_orm_haversine_ms"] = load.summary_ms(
            await sql.time_in_rolled_back_sessions(factory, points[: plan.naive_samples], naive)
        )
        results.update(await _measure_selection(factory, points, plan, settings, now))
    finally:
        await engine.dispose()
    return results


async def _measure_selection(
    factory: Any, points: list[tuple[float, float]], plan: Plan, settings: Settings, now: datetime
) -> dict[str, Any]:
    """The service's own candidate query, as the incident's POST runs it.

    In the POST the planner's settings ride on the duplicate check, a statement it
    makes anyway (docs/selection.md), so they are set up here before the clock
    starts; and the process runs with the service's collector settings
    (``serving_heap``), as ``serve`` does: a collection walking the harness's own
    start-up objects inside a sample is no cost of the query's.
    """
    from dispatch.selection import KNN_PLANNER_SETTINGS, nearest_available_aed, select_candidates

    found: list[int] = []

    async def set_up(session: Any) -> None:
        await session.execute(text(KNN_PLANNER_SETTINGS))

    async def candidates(session: Any, lat: float, lon: float) -> object:
        chosen = await select_candidates(
            session,
            point=LatLon(lat, lon),
            settings=settings,
            now=now,
            limit=settings.max_alerted,
            planner_set_up=True,
        )
        found.append(len(chosen))
        return chosen

    async def with_aed(session: Any, lat: float, lon: float) -> object:
        point = LatLon(lat, lon)
        aed = await nearest_available_aed(session, point=point, settings=settings, now=now)
        return await select_candidates(
            session,
            point=point,
            settings=settings,
            now=now,
            limit=settings.max_alerted,
            aed=aed,
            planner_set_up=True,
        )

    async def planner_and_candidates(session: Any, lat: float, lon: float) -> object:
        await set_up(session)
        return await candidates(session, lat, lon)

    sample = points[: plan.selection_samples]
    with serving_heap():
        await sql.time_in_rolled_back_sessions(factory, sample[:20], candidates, set_up=set_up)
        found.clear()
        return {
            "selection_ms": load.summary_ms(
                await sql.time_in_rolled_back_sessions(factory, sample, candidates, set_up=set_up)
            ),
            "selection_with_aed_ms": load.summary_ms(
                await sql.time_in_rolled_back_sessions(factory, sample, with_aed, set_up=set_up)
            ),
            # As measured before 2026-11-28T21: the clock also covered checkout and
            # BEGIN (and, before 2026-12-01T22, the planner's settings).
            "selection_incl_begin_ms": load.summary_ms(
                await sql.time_in_rolled_back_sessions(
                    factory, sample, planner_and_candidates, transaction_open=False
                )
            ),
            "candidates_per_incident": load.summary_ms([float(n) for n in found[: len(sample)]]),
        }


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Wall time of one harness step, recorded so a slow harness is visible too."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = round(time.perf_counter() - started, 2)


@contextmanager
def profiled(service: load.Service, prefix: Path | None, phase: str) -> Iterator[None]:
    """py-spy sampling the service's processes (out of process) while the block runs.

    Writes ``<prefix>-<phase>.pyspy.txt`` for ``serve`` and ``<prefix>-<phase>-worker.pyspy.txt``
    for the stand-alone worker (collapsed stacks; ``python -m bench.profile``): a reply's
    CPU is both processes', the stand-downs it causes mostly the worker's.
    """
    if prefix is None:
        yield
        return
    targets = [(service.pid, "")] + [
        (pid, f"-worker{index or ''}") for index, pid in enumerate(service.worker_pids)
    ]
    spies = [
        subprocess.Popen(  # noqa: S603 - our own arguments
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "500",
                "--output",
                str(prefix.with_name(f"{prefix.name}-{phase}{suffix}.pyspy.txt")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, suffix in targets
    ]
    time.sleep(1)
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(timeout=60)


def measure_service(
    url: str,
    points: list[tuple[float, float]],
    plan: Plan,
    *,
    phases: set[str],
    logs: Path,
    profile: Path | None,
    seconds: dict[str, float],
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with timed(seconds, "credentials"):
        asyncio.run(load.reset_activity(url))
        credentials = asyncio.run(
            load.issue_credentials(url, volunteer_tokens=plan.volunteer_tokens)
        )
        feed_ids = asyncio.run(load.sample_volunteer_ids(url, plan.bulk_batch * 10))
    with ExitStack() as stack:
        with timed(seconds, "service_start"):
            service = stack.enter_context(
                load.running_service(url, logs=logs, workers=plan.workers, processes=plan.processes)
            )
        with timed(seconds, "floors"):
            results["floors"] = asyncio.run(load.measure_floors(service, url))
        if "alert" in phases:
            with timed(seconds, "alert"), profiled(service, profile, "alert"):
                results["alert_path"] = asyncio.run(
                    load.measure_alert_path(
                        service,
                        credentials,
                        points=points[: plan.incidents],
                        interval_s=plan.incident_interval_s,
                        run_tag=int(time.time()),
                    )
                )
        if "webhooks" in phases:
            # Half the requests each: replies as real traffic spreads them over
            # incidents, then the same number queued one incident at a time (baseline).
            for key, order in (
                ("webhooks", load.INTERLEAVED),
                ("webhooks_by_incident", load.BY_INCIDENT),
            ):
                with timed(seconds, key), profiled(service, profile, key):
                    results[key] = asyncio.run(
                        load.measure_webhooks(
                            service,
                            url,
                            requests=plan.webhooks // 2,
                            concurrency=plan.webhook_concurrency,
                            order=order,
                        )
                    )
        if "locations" in phases:
            with (
                timed(seconds, "single_locations"),
                profiled(service, profile, "single_locations"),
            ):
                results["single_locations"] = asyncio.run(
                    load.measure_single_locations(
                        service,
                        credentials,
                        points=points,
                        requests=plan.single_locations,
                        concurrency=plan.location_concurrency,
                    )
                )
            with (
                timed(seconds, "bulk_locations"),
                profiled(service, profile, "bulk_locations"),
            ):
                results["bulk_locations"] = asyncio.run(
                    load.measure_bulk_locations(
                        service,
                        credentials,
                        feed_ids,
                        points=points,
                        batch=plan.bulk_batch,
                        batches=plan.bulk_batches,
                        concurrency=plan.bulk_concurrency,
                    )
                )
        with timed(seconds, "service_stop"):
            stack.close()
    return results


def run(
    url: str,
    *,
    volunteers: int,
    plan: Plan,
    phases: set[str],
    reseed: bool,
    logs: Path,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Every measurement, in order, against ``url``; the record that is written out."""
    seconds: dict[str, float] = {}
    with timed(seconds, "schema"):
        rebuilt = seed.prepare_schema(url)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "volunteers": volunteers,
        "machine": machine(url),
        "plan": asdict(plan),
        "targets": TARGETS,
    }
    if rebuilt or reseed or asyncio.run(seed.seeded_volunteers(url)) != volunteers:
        with timed(seconds, "seed"):
            report["seed"] = asdict(asyncio.run(seed.seed(url, volunteers=volunteers)))
    asyncio.run(seed.refresh_live_locations(url))
    # Every phase starts from no recent alerts: whatever ran in the cooldown before
    # (an earlier run's incidents) would otherwise decide whom the selection skips.
    asyncio.run(load.reset_activity(url))
    points = seed.incident_points(plan.points, rng=random.Random(7))
    asyncio.run(sql.store_incident_points(url, points))
    results: dict[str, Any] = {}
    if "sql" in phases:
        with timed(seconds, "sql"):
            results.update(asyncio.run(measure_sql(url, points, plan)))
    if phases & {"alert", "webhooks", "locations"}:
        results.update(
            measure_service(
                url, points, plan, phases=phases, logs=logs, profile=profile, seconds=seconds
            )
        )
    report["results"] = results
    report["harness_seconds"] = seconds
    report["machine"]["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    return report


def _lookup(results: dict[str, Any], *path: str) -> Any:
    """The value at ``path`` in a results tree, or None where a phase did not run."""
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _figure(results: dict[str, Any], *path: str) -> str:
    value = _lookup(results, *path)
    if value is None:
        return "—"
    if isinstance(value, list):
        return " + ".join(f"{item:,.2f}" for item in value)
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


def _http_detail(results: dict[str, Any], phase: str) -> str:
    """Latency and whose CPU it was: the generator's beside the service's."""
    return (
        f"p50 {_figure(results, phase, 'latency_ms', 'p50')} /"
        f" p99 {_figure(results, phase, 'latency_ms', 'p99')} ms;"
        f" CPU s wrk {_figure(results, phase, 'cpu_s', 'generator')},"
        f" service {_figure(results, phase, 'cpu_s', 'service')}"
    )


def table(report: dict[str, Any]) -> str:
    r = report["results"]
    rows = [
        ("candidate selection p50 / p99 (ms)",
         f"{_figure(r, 'selection_ms', 'p50')} / {_figure(r, 'selection_ms', 'p99')}",
         f"floor {_figure(r, 'floor_pgbench_ms', 'p50')} / {_figure(r, 'floor_pgbench_ms', 'p99')};"
         f" no index {_figure(r, 'no_index_pgbench_ms', 'p50')};"
         f" naive ORM {_figure(r, 'naive_orm_haversine_ms', 'p50')}",
         ""),
        ("  with nearest AED p50 / p99 (ms)",
         f"{_figure(r, 'selection_with_aed_ms', 'p50')} / "
         f"{_figure(r, 'selection_with_aed_ms', 'p99')}", "SPEC §7's figure", "p99 ≤ 5"),
        ("  incl. checkout + BEGIN p50 / p99 (ms)",
         f"{_figure(r, 'selection_incl_begin_ms', 'p50')} / "
         f"{_figure(r, 'selection_incl_begin_ms', 'p99')}", "", ""),
        ("client sent POST → 30th request p50 / p99 / max (ms)",
         f"{_figure(r, 'alert_path', 'posted_to_last_request_ms', 'p50')} / "
         f"{_figure(r, 'alert_path', 'posted_to_last_request_ms', 'p99')} / "
         f"{_figure(r, 'alert_path', 'posted_to_last_request_ms', 'max')}",
         f"accepted → 30th p50 {_figure(r, 'alert_path', 'accepted_to_last_request_ms', 'p50')}"
         f" / p99 {_figure(r, 'alert_path', 'accepted_to_last_request_ms', 'p99')};"
         f" sent → 1st p50 {_figure(r, 'alert_path', 'posted_to_first_request_ms', 'p50')},"
         f" 1st → 30th p50 {_figure(r, 'alert_path', 'first_to_last_request_ms', 'p50')}",
         "≤ 30 / ≤ 80"),
        ("  POST response p50 / p99 (ms)",
         f"{_figure(r, 'alert_path', 'post_response_ms', 'p50')} / "
         f"{_figure(r, 'alert_path', 'post_response_ms', 'p99')}",
         "server side, wall (CPU): " + ", ".join(
             f"{name} {_figure(r, 'alert_path', 'post_server_timing_ms', name, 'p50')}"
             f" ({_figure(r, 'alert_path', 'post_server_timing_ms', f'{name}-cpu', 'p50')})"
             for name in (r.get("alert_path", {}).get("post_server_timing_ms") or {})
             if not name.endswith("-cpu")
         ), "p50 ≤ 20"),
        ("floor: bare route GET /healthz (req/s; CPU ms per request)",
         f"{_figure(r, 'floors', 'bare_route', 'requests_per_s')};"
         f" {_figure(r, 'floors', 'bare_route', 'service_cpu_ms_per_request')}",
         _http_detail(r["floors"], "bare_route") if "floors" in r else "", ""),
        ("floor: one Twilio request (CPU ms; p50 ms; 30 at once p50 ms)",
         f"{_figure(r, 'floors', 'provider_send', 'cpu_ms_per_send')};"
         f" {_figure(r, 'floors', 'provider_send', 'send_ms', 'p50')};"
         f" {_figure(r, 'floors', 'provider_send', 'burst_of_30_ms', 'p50')}",
         "the official client, one process, no database", ""),
        ("floor: one commit p50 / p99 (ms)",
         f"{_figure(r, 'floors', 'commit_ms', 'p50')} / {_figure(r, 'floors', 'commit_ms', 'p99')}",
         "single-row insert, its own connection", ""),
        ("inbound SMS webhook (req/s)", _figure(r, "webhooks", "requests_per_s"),
         _http_detail(r, "webhooks"), "reported"),
        ("  service CPU per reply (ms)", _figure(r, "webhooks", "service_cpu_ms_per_request"),
         "serve + worker, incl. the SMS each reply causes", "≤ 3"),
        ("  replies one incident at a time (req/s)",
         _figure(r, "webhooks_by_incident", "requests_per_s"),
         _http_detail(r, "webhooks_by_incident"), ""),
        ("PUT /v1/me/location (req/s)", _figure(r, "single_locations", "requests_per_s"),
         _http_detail(r, "single_locations"), "reported"),
        ("  service CPU per location update (ms)",
         _figure(r, "single_locations", "service_cpu_ms_per_request"), "", "≤ 1"),
        ("POST /v1/locations/bulk (points/s)", _figure(r, "bulk_locations", "points_per_s"),
         _http_detail(r, "bulk_locations"), "≥ 20,000"),
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(lines)


def _value(results: dict[str, Any], *path: str) -> float | None:
    value = _lookup(results, *path)
    return float(value) if isinstance(value, int | float) else None


def _sum(*values: float | None) -> float | None:
    return None if any(value is None for value in values) else sum(v for v in values if v)


def floor_table(report: dict[str, Any]) -> str:
    """Each #17 target beside what it measured and the floor of the same run, as markdown.

    A floor is what the same run measured for the parts no implementation avoids:
    the bare route's CPU (HTTP, routing, middleware), one commit, the official
    Twilio client's request (one, or 30 at once), the bare KNN (``pgbench``).
    """
    r = report["results"]
    bare_cpu = _value(r, "floors", "bare_route", "service_cpu_ms_per_request")
    commit = _value(r, "floors", "commit_ms", "p50")
    burst = _value(r, "floors", "provider_send", "burst_of_30_ms", "p50")
    send_cpu = _value(r, "floors", "provider_send", "cpu_ms_per_send")
    post_floor = _sum(bare_cpu, commit, _value(r, "selection_with_aed_ms", "p50"))
    rows = [
        (
            "client sent → 30th p50 (ms)",
            ("alert_path", "posted_to_last_request_ms", "p50"),
            30.0,
            _sum(post_floor, burst),
            "POST floor + 30 Twilio requests at once",
        ),
        (
            "client sent → 30th p99 (ms)",
            ("alert_path", "posted_to_last_request_ms", "p99"),
            80.0,
            None,
            "",
        ),
        (
            "POST response p50 (ms)",
            ("alert_path", "post_response_ms", "p50"),
            20.0,
            post_floor,
            "bare route CPU + selection with AED p50 + one commit",
        ),
        (
            "selection incl. nearest AED p99 (ms)",
            ("selection_with_aed_ms", "p99"),
            5.0,
            _value(r, "floor_pgbench_ms", "p99"),
            "bare KNN (pgbench) p99",
        ),
        (
            "service CPU per reply (ms)",
            ("webhooks", "service_cpu_ms_per_request"),
            3.0,
            _sum(bare_cpu, send_cpu),
            "bare route CPU + one Twilio request's CPU",
        ),
        (
            "service CPU per location update (ms)",
            ("single_locations", "service_cpu_ms_per_request"),
            1.0,
            bare_cpu,
            "bare route CPU",
        ),
    ]
    lines = [
        "| target | measured | target value | floor, same run | measured / target |"
        " measured / floor | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, path, target, floor, what in rows:
        measured = _value(r, *path)
        if measured is None:
            continue
        over_floor = "—" if not floor else f"{measured / floor:.1f}×"
        floor_text = "—" if floor is None else f"{floor:.2f} ({what})"
        lines.append(
            f"| {name} | {measured:.2f} | ≤ {target:g} | {floor_text} |"
            f" {measured / target:.1f}× | {over_floor} | {'yes' if measured <= target else 'no'} |"
        )
    return "\n".join(lines)


def _plan(args: argparse.Namespace) -> Plan:
    plan = replace(SMOKE if args.smoke else Plan(), workers=args.workers, processes=args.processes)
    if args.incident_interval is not None:
        plan = replace(plan, incident_interval_s=args.incident_interval)
    if args.incidents is not None:
        plan = replace(plan, incidents=args.incidents)
    return plan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--volunteers", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="tiny counts: the harness only")
    parser.add_argument("--reseed", action="store_true", help="seed even if already seeded")
    parser.add_argument("--only", choices=PHASES, action="append", help="repeatable")
    parser.add_argument("--profile", action="store_true", help="py-spy each service phase")
    parser.add_argument(
        "--workers", type=int, default=1, help="stand-alone dispatch workers beside serve"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="serve --processes N (uvicorn processes)"
    )
    parser.add_argument(
        "--incident-interval", type=float, default=None, help="seconds between incidents"
    )
    parser.add_argument("--incidents", type=int, default=None, help="incidents posted (200)")
    parser.add_argument("--home", type=Path, default=Path(".responder-bench"))
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    output = args.output or RESULTS / f"{stamp}-{args.volunteers}.json"
    logs = RESULTS / "tmp" / stamp
    profile = RESULTS / "profiles" / stamp if args.profile else None
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
    with bench_database(args.home) as url:
        report = run(
            url,
            volunteers=args.volunteers,
            plan=_plan(args),
            phases=set(args.only or PHASES),
            reseed=args.reseed,
            logs=logs,
            profile=profile,
        )
    report["command"] = " ".join(["python -m bench.run", *(argv or sys.argv[1:])])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print()
    print(floor_table(report))
    print(f"\nwritten: {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
