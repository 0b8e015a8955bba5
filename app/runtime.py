"""What a running process holds: settings, the engine and the long-lived clients.

Created in the lifespan (never at import) and closed there; the dispatch worker and
the event hub hang off it when this process runs them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.clock import Clock, SystemClock
from app.settings import Settings

if TYPE_CHECKING:
    from dispatch.events import EventHub
    from dispatch.gateway import SmsGateway
    from dispatch.worker import DispatchWorker


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    clock: Clock = field(default_factory=SystemClock)
    gateway: SmsGateway | None = None
    worker: DispatchWorker | None = None
    worker_task: asyncio.Task[None] | None = None
    events: EventHub | None = None
