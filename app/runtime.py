"""What a running process holds: settings, the engine and the long-lived clients.

Created in the lifespan (never at import) and closed there; the dispatch worker and
the event hub hang off it when this process runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.clock import Clock, SystemClock
from app.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    clock: Clock = field(default_factory=SystemClock)
