"""Database engine and sessions; the unit of work is owned by the caller.

Services ``flush()``; whoever opened the transaction (a request dependency, a worker
job) commits it or rolls it back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def async_url(url: str) -> str:
    """Accept ``postgresql://`` as well as ``postgresql+asyncpg://``."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise ValueError("database URL must be postgresql:// or postgresql+asyncpg://")


def sync_url(url: str) -> str:
    """The same database for libpq-style tools (psql, asyncpg.connect)."""
    return "postgresql://" + async_url(url).removeprefix("postgresql+asyncpg://")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "responder"}, "timeout": 10},
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: committed if the block ends normally, rolled back otherwise."""
    async with factory() as session, session.begin():
        yield session
