"""Counters in fixed windows, shared by every process (the ``rate_limit_bucket`` table).

One upsert counts a hit and reads the previous window in the same round trip; the
caller judges the sliding estimate ``previous * (1 - elapsed / window) + current``
against its limit. The API's per-key limits (``app/api/ratelimit.py``) count in
one-minute windows on an autocommit connection of their own; the sign-up limits
(``app/registry/signup.py``) count in hourly windows inside the request's
transaction, so a request that fails leaves no count behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import DriverConnection, DriverStatement

MINUTE_S = 60

COUNT_CONFLICT = """
        ON CONFLICT (key, window_start) DO UPDATE SET count = bucket.count + EXCLUDED.count
        RETURNING bucket.count
"""
"""How a hit lands on its window's row: the count after it, under the row's lock
(``INSERT INTO rate_limit_bucket AS bucket … {COUNT_CONFLICT}``)."""
_COUNT = text(
    f"""
    WITH hit AS (
        INSERT INTO rate_limit_bucket AS bucket (key, window_start, count, window_s)
        VALUES (:key, :window_start, :cost, :window_s)
        {COUNT_CONFLICT}
    )
    SELECT hit.count AS current,
           coalesce((SELECT earlier.count FROM rate_limit_bucket AS earlier
                     WHERE earlier.key = :key AND earlier.window_start = :previous_start), 0)
               AS previous
    FROM hit
    """
)
_PURGE = DriverStatement(
    text(
        "DELETE FROM rate_limit_bucket"
        " WHERE window_start < CAST(:moment AS timestamptz) - make_interval(secs => 2 * window_s)"
    )
)


@dataclass(frozen=True)
class WindowCount:
    """The counts of the current and the previous window after a hit."""

    previous: int
    current: int
    elapsed: float
    window_s: int

    @property
    def estimate(self) -> float:
        return self.previous * (1 - self.elapsed / self.window_s) + self.current


def window_of(moment: datetime, *, window_s: int = MINUTE_S) -> tuple[datetime, float]:
    """The start of the window holding ``moment`` and the seconds since it."""
    epoch = moment.timestamp()
    start = math.floor(epoch / window_s) * window_s
    return datetime.fromtimestamp(start, UTC), epoch - start


def retry_after_s(
    *, previous: int, current: int, limit: int, elapsed: float, window_s: int = MINUTE_S
) -> int:
    """Whole seconds until one more hit fits under the sliding estimate.

    The answer assumes the client sends nothing meanwhile.
    """
    room = limit - 1 - current
    if room >= 0 and previous > 0:
        wait = window_s * (1 - room / previous) - elapsed
    else:
        into_next = window_s * (1 - (limit - 1) / current) if current > 0 else 0.0
        wait = (window_s - elapsed) + max(0.0, into_next)
    return max(1, math.ceil(wait))


async def count_hit(
    executor: AsyncConnection | AsyncSession,
    *,
    key: str,
    moment: datetime,
    window_s: int,
    cost: int = 1,
) -> WindowCount:
    """Add ``cost`` to the key's current window; both windows' counts afterwards."""
    window_start, elapsed = window_of(moment, window_s=window_s)
    row = (
        await executor.execute(
            _COUNT,
            {
                "key": key,
                "window_start": window_start,
                "cost": cost,
                "window_s": window_s,
                "previous_start": window_start - timedelta(seconds=window_s),
            },
        )
    ).one()
    return WindowCount(
        previous=row.previous, current=row.current, elapsed=elapsed, window_s=window_s
    )


async def purge_windows(
    executor: AsyncConnection | AsyncSession | DriverConnection, *, moment: datetime
) -> None:
    """Drop windows too old to matter (older than the previous one of their length)."""
    connection = await executor.connection() if isinstance(executor, AsyncSession) else executor
    await _PURGE.execute(connection, {"moment": moment})
