"""The idle-POST probe: one ``POST /v1/incidents`` after a pause against back to back.

``.venv/bin/python -m bench.idle --volunteers 100000`` (against the bench cluster
that ``bench.run`` seeds) starts the service as ``bench.run`` does, then posts
``alert: false`` incidents (no selection, no SMS), ``--count`` of them ``--pause``
seconds apart and as many back to back, and prints the client's latency beside the
service's own ``Server-Timing`` phases for both, so a gap shows whether it is spent
inside the application (which phase) or outside it (connection, scheduling). Also
``GET /healthz`` the same two ways, the floor of an HTTP round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench import load
from bench.run import RESULTS, bench_database


async def probe(
    service: load.Service, credentials: load.Credentials, *, count: int, pause_s: float
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        await client.get("/healthz")
        for label, gap in (("after_pause", pause_s), ("back_to_back", 0.0)):
            posts: list[dict[str, float]] = []
            health: list[float] = []
            for number in range(count):
                await asyncio.sleep(gap)
                started = time.perf_counter()
                response = await client.post(
                    "/v1/incidents",
                    headers=credentials.dispatcher,
                    json={
                        "external_ref": f"IDLE-{label}-{time.time_ns()}-{number}",
                        "kind": "cardiac_arrest",
                        "location": {"lat": 59.3326, "lon": 18.0649},
                        "address": "Idlegatan 1",
                        "alert": False,
                    },
                )
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                posts.append(
                    {"client": elapsed} | load.server_timing(response.headers.get("server-timing"))
                )
                await asyncio.sleep(gap)
                started = time.perf_counter()
                (await client.get("/healthz")).raise_for_status()
                health.append((time.perf_counter() - started) * 1000)
            results[label] = {
                "post": load.summarise_phases(posts),
                "healthz_ms": load.summary_ms(health),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--pause", type=float, default=1.5)
    parser.add_argument("--home", type=Path, default=Path(".responder-bench"))
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--url", help="probe this running service instead of starting one")
    parser.add_argument("--key", help="with --url: a dispatcher API key")
    args = parser.parse_args()
    if args.url:
        running = load.Service(base_url=args.url, sink_url="", pid=0)
        dispatcher = load.Credentials({"Authorization": f"Bearer {args.key}"}, {})
        report = asyncio.run(probe(running, dispatcher, count=args.count, pause_s=args.pause))
    else:
        report = _probe_bench_service(args.home, count=args.count, pause_s=args.pause)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


def _probe_bench_service(home: Path, *, count: int, pause_s: float) -> dict[str, Any]:
    """The service as ``bench.run`` starts it (no stand-alone worker) on the bench cluster."""
    with bench_database(home) as url:
        asyncio.run(load.reset_activity(url))
        credentials = asyncio.run(load.issue_credentials(url, volunteer_tokens=1))
        with load.running_service(url, logs=RESULTS / "tmp" / "idle", workers=0) as service:
            return asyncio.run(probe(service, credentials, count=count, pause_s=pause_s))


if __name__ == "__main__":
    main()
