"""The incident event stream (SSE) end to end over real HTTP.

httpx's in-process ASGI transport buffers a whole response, so an endless stream can
only be read from a real server: uvicorn on 127.0.0.1 runs the app with its lifespan
(engine, LISTEN hub). The incident is created over HTTP; a later change is committed
by another engine, as another process would, and must arrive on the open stream
through ``NOTIFY``; a reconnect with ``Last-Event-ID`` replays exactly what followed.
Every wait is on a stream line or a database state, bounded by ``WAIT_S``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.main import create_app
from app.core.clock import SystemClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.models import IncidentEvent
from dispatch.events import EVENTS_CHANNEL, record_event
from dispatch.lifecycle import cancel_incident
from tests.factories import STOCKHOLM, create_key, create_volunteer, make_settings, offset

WAIT_S = 10.0
CENTRE = "sos-http"


@dataclass(frozen=True)
class SseEvent:
    id: int
    event: str
    data: dict[str, Any]
    raw: tuple[str, ...]


class SseReader:
    """Reads an SSE body line by line; every line is awaited at most ``WAIT_S``."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.retry: list[int] = []
        self.comments: list[str] = []

    async def _block(self) -> list[str]:
        block: list[str] = []
        while True:
            line = await asyncio.wait_for(anext(self._lines), WAIT_S)
            if line == "":
                if block:
                    return block
                continue
            block.append(line)

    async def next_event(self) -> SseEvent:
        """The next dispatched event; retry hints and comments are recorded and skipped."""
        while True:
            block = await self._block()
            fields: dict[str, list[str]] = {}
            for line in block:
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
            self.comments += fields.pop("", [])
            self.retry += [int(value) for value in fields.pop("retry", [])]
            if not fields:
                continue
            assert set(fields) == {"id", "event", "data"}, block
            assert all(len(values) == 1 for values in fields.values()), block
            return SseEvent(
                id=int(fields["id"][0]),
                event=fields["event"][0],
                data=json.loads(fields["data"][0]),
                raw=tuple(block),
            )


@pytest.fixture
async def other_engine(committed_db: str) -> AsyncIterator[AsyncEngine]:
    """Not the server's engine: what it commits reaches the server only through NOTIFY."""
    engine = create_engine(committed_db, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def other_factory(other_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(other_engine)


@pytest.fixture
async def base_url(committed_db: str) -> AsyncIterator[str]:
    """The app under uvicorn on a free local port, in this event loop, lifespan included.

    Close every stream before this ends: uvicorn runs the lifespan shutdown (which
    stops the hub and so ends the streams) only after all connections are closed.
    """
    app = create_app(make_settings(), database_url=committed_db, run_worker=False)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, ws="none")
    )
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="uvicorn")
    try:
        async with asyncio.timeout(WAIT_S):
            while not server.started:
                assert not serving.done(), "uvicorn stopped while starting"
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        listener.close()


async def wait_until_hub_listens(factory: async_sessionmaker[AsyncSession]) -> None:
    """The server's LISTEN has completed, so a commit from now on is announced to it."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'idle' AND query = :listen"
    )
    async with asyncio.timeout(WAIT_S):
        while True:
            async with factory() as session:
                listening = (
                    await session.execute(query, {"listen": f'LISTEN "{EVENTS_CHANNEL}"'})
                ).scalar_one()
            if listening:
                return
            await asyncio.sleep(0.05)


async def stored_events(
    factory: async_sessionmaker[AsyncSession], incident_id: str
) -> list[tuple[int, str]]:
    async with factory() as session:
        rows = await session.execute(
            select(IncidentEvent.seq, IncidentEvent.type)
            .where(IncidentEvent.incident_id == incident_id)
            .order_by(IncidentEvent.seq)
        )
        return [(row.seq, row.type) for row in rows]


async def test_event_stream_over_http_replays_follows_notify_and_resumes_after_last_event_id(
    base_url: str, other_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with unit_of_work(other_factory) as session:
        dispatcher = await create_key(session, role="dispatcher", name=CENTRE, centre=CENTRE)
        await create_volunteer(
            session, near=offset(STOCKHOLM, bearing_deg=90, distance_m=150), language="en"
        )

    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0)) as client:
        created = await client.post(
            "/v1/incidents",
            headers=dispatcher,
            json={
                "external_ref": "CAD-SSE-1",
                "kind": "cardiac_arrest",
                "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                "address": "Drottninggatan 1, Stockholm",
            },
        )
        assert created.status_code == 201, created.text
        incident_id = created.json()["id"]
        assert created.json()["counts"]["alerted"] == 1
        alerts = await client.get(f"/v1/incidents/{incident_id}/alerts", headers=dispatcher)
        assert alerts.status_code == 200, alerts.text
        assert [alert["distance_band"] for alert in alerts.json()] == ["100-250"]
        # Committed before the 201; no worker runs, so nothing else is appended meanwhile.
        at_creation = await stored_events(other_factory, incident_id)
        assert [kind for _, kind in at_creation] == ["incident.created", "alerts.queued"]

        path = f"/v1/incidents/{incident_id}/events"
        async with client.stream("GET", path, headers=dispatcher) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            reader = SseReader(response)

            # 1. Everything so far, in id order, typed and timestamped.
            initial = [await reader.next_event() for _ in at_creation]
            assert reader.retry == [2000]
            assert [(event.id, event.event) for event in initial] == at_creation
            assert [event.id for event in initial] == sorted({event.id for event in initial})
            announced, queued = initial
            assert queued.data["type"] == "alerts.queued"
            assert [alert["id"] for alert in queued.data["alerts"]] == [alerts.json()[0]["id"]]
            assert queued.data["alerts"][0] == {
                "id": alerts.json()[0]["id"],
                "distance_band": "100-250",
                "alerted_as": "selection",
            }
            assert announced.data["type"] == "incident.created"
            assert announced.data["status"] == "alerting"
            assert announced.data["alerted"] == 1
            assert announced.data["duplicate_of"] is None
            assert all("at" in event.data for event in initial)

            # 2. A change committed by another engine arrives live, woken by NOTIFY
            #    (the stream's own re-read only happens after a 15 s keep-alive).
            await wait_until_hub_listens(other_factory)
            async with unit_of_work(other_factory) as session:
                await cancel_incident(
                    session,
                    incident_id=uuid.UUID(incident_id),
                    centre=CENTRE,
                    reason="ambulance on scene",
                    now=SystemClock().now(),
                )
            cancelled = await reader.next_event()
            assert cancelled.event == "incident.cancelled"
            assert cancelled.id > queued.id
            assert cancelled.data["type"] == "incident.cancelled"
            assert cancelled.data["status"] == "cancelled"
            assert cancelled.data["reason"] == "ambulance on scene"
            assert reader.comments == []  # no keep-alive was needed to see it

        view = await client.get(f"/v1/incidents/{incident_id}", headers=dispatcher)
        assert view.json()["status"] == "cancelled"
        received = [*initial, cancelled]
        assert [(event.id, event.event) for event in received] == await stored_events(
            other_factory, incident_id
        )

        # 3. Reconnecting after the first event replays exactly the later ones, in order,
        #    byte for byte; a marker committed afterwards is the very next event, so
        #    nothing else (no duplicate, no earlier event) was replayed before it.
        resume = {**dispatcher, "Last-Event-ID": str(announced.id)}
        async with client.stream("GET", path, headers=resume) as response:
            assert response.status_code == 200
            reader = SseReader(response)
            replayed = [await reader.next_event() for _ in received[1:]]
            assert [event.raw for event in replayed] == [event.raw for event in received[1:]]
            async with unit_of_work(other_factory) as session:
                await record_event(
                    session, incident_id=uuid.UUID(incident_id), type="marker", data={}
                )
            marker = await reader.next_event()
            assert marker.event == "marker"
            assert marker.id > cancelled.id
