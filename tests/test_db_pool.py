"""The pool keeps the connections it opened: load that rises and falls around the
pool size must not open and close a connection every few requests."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import event, text

from app.core import db


async def test_connections_beyond_the_pool_size_are_kept_for_the_next_burst(
    database_url: str,
) -> None:
    engine = db.create_engine(database_url, pool_size=2)
    opened: list[Any] = []
    event.listen(engine.sync_engine.pool, "connect", lambda *args: opened.append(args))

    async def burst(size: int) -> None:
        async with AsyncExitStack() as stack:
            connections = [await stack.enter_async_context(engine.connect()) for _ in range(size)]
            await asyncio.gather(*(c.execute(text("SELECT 1")) for c in connections))

    try:
        await burst(4)  # twice the pool size: what the old overflow allowed
        assert len(opened) == 4
        for _ in range(3):
            await burst(4)
            await burst(3)
        assert len(opened) == 4  # none closed on return, none re-opened
    finally:
        await engine.dispose()
