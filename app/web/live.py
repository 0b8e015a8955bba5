"""The live parts of the dispatcher's pages: server-sent events carrying rendered HTML.

Built on the same event log and ``EventHub`` as the API's stream: a notification
wakes the stream, which re-reads the state from the database and sends the parts
of the page that changed (``live.js`` puts them in place). A burst of events (thirty
alerts delivered within a second) is coalesced into one render.

While a stream is open the person is there: each turn of the loop keeps the session
alive, so a dispatcher watching an incident is not signed out by the idle timeout
(the absolute timeout still ends the session, and then the page goes to sign-in).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import unit_of_work
from app.registry.web_sessions import find_session
from app.runtime import Runtime
from app.web.auth import SESSION_COOKIE
from app.web.pages import CONSOLE

KEEPALIVE_S = 15.0
COALESCE_S = 0.2
FALLBACK_POLL_S = 2.0

Render = Callable[[AsyncSession], Awaitable[list[tuple[str, str, str, int | None]]]]
"""Reads the state and returns the updates: (target id, mode, html, event id or None)."""


def sse(event: str, data: dict[str, str], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def live_updates(
    request: Request, runtime: Runtime, *, incident_id: uuid.UUID | None, render: Render
) -> AsyncIterator[str]:
    """Render now, then again on each change, until the client leaves or the session ends."""
    hub = runtime.events
    waiter = hub.subscribe(incident_id) if hub is not None else None
    token = request.cookies.get(SESSION_COOKIE, "")
    sent: dict[str, str] = {}
    try:
        yield "retry: 2000\n\n"
        while hub is None or not hub.stopping:
            if waiter is not None:
                waiter.clear()
            async with unit_of_work(runtime.session_factory) as session:
                alive = await find_session(
                    session, token=token, now=runtime.clock.now(), settings=runtime.settings
                )
                updates = await render(session) if alive is not None else []
            if alive is None:
                yield sse("signed-out", {"location": f"{CONSOLE}/login?ended=1"})
                return
            for target, mode, html, event_id in updates:
                if mode == "replace" and sent.get(target) == html:
                    continue
                sent[target] = html
                yield sse("render", {"target": target, "mode": mode, "html": html}, event_id)
            if waiter is None:
                await asyncio.sleep(FALLBACK_POLL_S)
                continue
            try:
                await asyncio.wait_for(waiter.wait(), KEEPALIVE_S)
                await asyncio.sleep(COALESCE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
    finally:
        if hub is not None and waiter is not None:
            hub.unsubscribe(incident_id, waiter)


def event_stream(updates: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        updates,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
