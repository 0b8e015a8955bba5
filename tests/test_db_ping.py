"""The idle-connection ping on checkout costs one round trip (it is on the path of
every request after a pause, where each round trip pays an idle backend's wake-up)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from app.core import db


async def test_a_connection_idle_past_the_threshold_is_pinged_with_one_statement(
    committed_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.create_engine(committed_db, pool_size=1)
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            raw.driver_connection.add_query_logger(log)
            await connection.execute(text("SELECT 2"))
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # every checkout is "after idle"
        sent.clear()

        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 3"))).scalar_one() == 3
    finally:
        await engine.dispose()

    # The logger sees simple-protocol statements (asyncpg's execute): the ping, then
    # our transaction's BEGIN and ROLLBACK. SQLAlchemy's own ping would have sent a
    # BEGIN and a ROLLBACK of its own around a prepared ";".
    assert sent == [db.IDLE_PING, "BEGIN;", "ROLLBACK;"]
