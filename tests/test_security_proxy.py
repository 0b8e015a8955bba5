"""Proxy headers are believed only from the proxies the deployment names.

The service runs under uvicorn with the options ``responder serve`` uses. Before,
uvicorn's default believed ``X-Forwarded-For`` from 127.0.0.1, so any local process
(or a proxy that passes the header through) chose its own client address, and with
it its rate-limit bucket.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from fastapi import Request

from app.api.main import create_app
from app.cli import server_options
from app.core.settings import Settings
from tests.factories import make_settings

FORGED = "198.51.100.9"


@asynccontextmanager
async def served(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app under a real uvicorn, with a test-only route that shows the client address."""
    app = create_app(settings, database_url=database_url, run_worker=False)

    @app.get("/test/peer")
    async def peer(request: Request) -> dict[str, str | None]:
        return {"client": request.client.host if request.client else None}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, **server_options(settings))
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while not server.started:
                await asyncio.sleep(0.05)
            yield client
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)


@pytest.mark.parametrize(
    ("forwarded_allow_ips", "seen"),
    [("", "127.0.0.1"), ("10.0.0.1", "127.0.0.1"), ("127.0.0.1", FORGED)],
    ids=["default-none", "another-proxy", "this-proxy"],
)
async def test_x_forwarded_for_counts_only_from_a_configured_proxy(
    committed_db: str, forwarded_allow_ips: str, seen: str
) -> None:
    settings = make_settings(forwarded_allow_ips=forwarded_allow_ips)
    async with served(settings, committed_db) as client:
        answer = await client.get("/test/peer", headers={"X-Forwarded-For": FORGED})

    assert answer.json() == {"client": seen}
