"""What a running process holds: settings, the engine and the long-lived clients.

Created in the lifespan (never at import) and closed there; the dispatch worker and
the event hub hang off it when this process runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.clock import Clock, SystemClock
from app.core.db import create_session_factory
from app.core.settings import Settings
from dispatch.events import EventHub
from dispatch.gateway import SmsGateway
from dispatch.lifecycle import run_timers
from dispatch.voice import CallWorker, create_voice_gateway
from dispatch.worker import DispatchWorker


class DetachedTasks:
    """Bookkeeping that must delay neither a response nor the next request on its connection.

    A Starlette ``BackgroundTask`` runs inside the request's ASGI call, so uvicorn
    reads the next request on that keep-alive connection only after it finishes.
    Work spawned here runs beside later requests instead; the set holds a reference
    (so a task is never garbage-collected mid-flight) and the lifespan drains it on
    shutdown. Only for work whose loss costs no alert (it is rebuilt on demand).
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[asyncio.TimerHandle, Coroutine[Any, Any, None]] = {}

    def spawn(self, work: Coroutine[Any, Any, None], *, after_s: float = 0.0) -> None:
        """Run ``work`` now, or ``after_s`` seconds from now (at once if drained first)."""
        if after_s <= 0:
            self._start(work)
            return

        def due() -> None:
            self._start(self._waiting.pop(handle))

        handle = asyncio.get_running_loop().call_later(after_s, due)
        self._waiting[handle] = work

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, *, timeout_s: float) -> None:
        """Start what waits, wait for running work; cancel what still runs after ``timeout_s``."""
        for handle, work in list(self._waiting.items()):
            handle.cancel()
            self._start(work)
        self._waiting.clear()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    dispatch_engine: AsyncEngine | None = None
    """The dispatch pipelines' own pool (``app.core.db.create_dispatch_engine``) in a
    process that also serves requests; without one they use ``engine``."""
    clock: Clock = field(default_factory=SystemClock)
    gateway: SmsGateway | None = None
    secondary_gateway: SmsGateway | None = None
    """The SMS provider that takes alerts over from ``gateway`` (46elks), if configured."""
    worker: DispatchWorker | None = None
    worker_task: asyncio.Task[None] | None = None
    call_worker: CallWorker | None = None
    call_worker_task: asyncio.Task[None] | None = None
    events: EventHub | None = None
    # Set by the lifespan, which drains it; without one (an app driven without its
    # lifespan) after-response work runs as a plain BackgroundTask.
    detached: DetachedTasks | None = None

    @property
    def dispatch_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Where the dispatch worker and the call worker open their transactions."""
        if self.dispatch_engine is None:
            return self.session_factory
        return create_session_factory(self.dispatch_engine)


def create_worker(runtime: Runtime, gateway: SmsGateway) -> DispatchWorker:
    """The worker of a process, with the timed transitions of ``dispatch.lifecycle``."""
    settings = runtime.settings

    async def timers(factory: async_sessionmaker[AsyncSession], now: datetime) -> None:
        await run_timers(factory, now=now, settings=settings)

    return DispatchWorker(
        session_factory=runtime.dispatch_sessions,
        gateway=gateway,
        secondary=runtime.secondary_gateway,
        settings=settings,
        clock=runtime.clock,
        database_url=runtime.database_url,
        timers=timers,
    )


def create_call_worker(runtime: Runtime) -> CallWorker | None:
    """The call pipeline of a process, when calls can be placed (``TWILIO_VOICE_FROM``)."""
    gateway = create_voice_gateway(runtime.settings)
    if gateway is None:
        return None
    return CallWorker(
        session_factory=runtime.dispatch_sessions,
        gateway=gateway,
        settings=runtime.settings,
        clock=runtime.clock,
        database_url=runtime.database_url,
    )
