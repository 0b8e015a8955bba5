"""Rate limits that hold across every process: sliding one-minute windows in PostgreSQL.

Who is limited (SPEC section 5):

- admin, locator and volunteer keys, per key, each role with its own limit;
- requests refused with 401 (no key, unknown or revoked key), per client IP;
- webhook traffic whose Twilio signature is missing or wrong, per client IP.

Never limited: dispatcher keys (an incident must never be refused) and correctly
signed webhooks (a reply or a delivery receipt must never be dropped).

How it stays cheap on hot paths:

- Each count is one autocommit upsert on a connection of the limiter's own pool
  (as large as the request pool, so it never queues where requests do not),
  released at once: no bucket row is locked for the length of a request, and
  an exhausted request pool never makes the limiter wait.
- The table is UNLOGGED, so a count costs no WAL flush.
- The role of a key never changes, so each process remembers it per key hash:
  after a key's first request a dispatcher pays nothing at all.
- High limits are claimed in leases of ``limit // LEASE_DIVISOR`` requests, so the
  bulk location feed touches its counter a few times a second, not per request;
  a process may over-claim by one lease, a fraction of a percent of the limit.
- The limiter fails open: if its query fails or takes longer than
  ``LIMITER_TIMEOUT_S`` the request goes ahead (and is logged). Rate limiting
  protects the service; it must never become the reason it refuses work.

Windows follow the wall clock, not the injected domain clock: limits measure real
request rates, and a frozen or simulated clock (tests, demos) must not freeze them.
Refused requests are counted too, so a client that ignores ``Retry-After`` stays out.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from starlette.requests import Request

from app.core.buckets import (
    MINUTE_S,
    WindowCount,
    count_hit,
    purge_windows,
    retry_after_s,
    window_of,
)
from app.core.clock import Clock, SystemClock
from app.core.db import DriverConnection, async_url, kept_pool
from app.core.errors import RateLimited
from app.core.models import ApiKey
from app.core.settings import Settings
from app.registry.keys import Role, hash_key

log = structlog.get_logger(__name__)

LEASE_DIVISOR = 500
LIMITER_TIMEOUT_S = 1.0
ROLE_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class KeyIdentity:
    key_id: uuid.UUID
    role: Role


class RateLimiter:
    """One per process; its state is a cache and leases, the counts live in PostgreSQL."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._roles: OrderedDict[str, KeyIdentity] = OrderedDict()
        self._leases: dict[str, tuple[datetime, int]] = {}
        self._purged_window: datetime | None = None
        self._engine: AsyncEngine | None = None

    def open(self, database_url: str) -> None:
        """Count on a pool of the limiter's own (called by the lifespan).

        Under overload the request pool is exhausted; a limiter drawing from it would
        wait (and then fail open) on every request. It is as large as the request
        pool: every request holds a limiter connection for one statement just before
        it takes its session's, so a smaller pool made requests queue here first
        (and, past ``LIMITER_TIMEOUT_S``, go uncounted). Without ``open`` (an app built
        without its lifespan, as in tests) the request engine passed in is used.

        Its connections are autocommit from the start and are not pinged on checkout:
        the ping and the per-checkout isolation switch were two thirds of a count's
        cost. A connection broken by a database restart fails its one statement,
        which fails open (one request uncounted) and is replaced.
        """
        self._engine = create_async_engine(
            async_url(database_url),
            **kept_pool(self._settings.db_pool_size),
            pool_recycle=1800,
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,  # bucket keys name client IPs
            connect_args={"server_settings": {"application_name": "responder"}, "timeout": 10},
        )

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def limit_for(self, role: Role) -> int | None:
        """Requests per minute for a key of this role; None = never limited."""
        limits: dict[str, int] = {
            "admin": self._settings.rate_limit_admin_per_minute,
            "locator": self._settings.rate_limit_locator_per_minute,
            "volunteer": self._settings.rate_limit_volunteer_per_minute,
        }
        return limits.get(role)

    async def check_caller(self, engine: AsyncEngine, *, token: str | None) -> None:
        """Count a request made with a known admin, locator or volunteer key.

        Raise ``RateLimited`` when the key's bucket is full. Runs before the request's
        session takes a connection. A key this process cannot find (none, unknown,
        revoked) is not counted here: if authentication then fails, the 401 is
        counted against the client's IP by ``check_failed_authentication``.
        """
        if token:
            await self._guarded(self._check_key(self._engine or engine, token))

    async def check_failed_authentication(self, engine: AsyncEngine, *, client_ip: str) -> None:
        """Count a request refused with 401; raise ``RateLimited`` when the IP is over."""
        limit = self._settings.rate_limit_anonymous_per_minute
        bucket = f"ip:{client_ip}"
        await self._guarded(self._count(self._engine or engine, bucket=bucket, limit=limit))

    async def check_unsigned_webhook(self, engine: AsyncEngine, *, client_ip: str) -> None:
        """Count a webhook whose signature failed; raise ``RateLimited`` when full."""
        limit = self._settings.rate_limit_unsigned_webhook_per_minute
        bucket = f"webhook:{client_ip}"
        await self._guarded(self._count(self._engine or engine, bucket=bucket, limit=limit))

    async def _guarded(self, check: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(LIMITER_TIMEOUT_S):
                await check
        except RateLimited:
            raise
        except Exception as exc:  # noqa: BLE001 - fail open, by design
            log.warning("rate limiter unavailable; request allowed", error=type(exc).__name__)

    async def _check_key(self, engine: AsyncEngine, token: str) -> None:
        identity = await self._identify(engine, token)
        if identity is None:
            return
        limit = self.limit_for(identity.role)
        if limit is not None:
            await self._count(engine, bucket=f"key:{identity.key_id}", limit=limit)

    async def _identify(self, engine: AsyncEngine, token: str) -> KeyIdentity | None:
        digest = hash_key(token)
        cached = self._roles.get(digest)
        if cached is not None:
            self._roles.move_to_end(digest)
            return cached
        async with self._autocommit(engine) as connection:
            row = (
                await connection.execute(
                    select(ApiKey.id, ApiKey.role).where(
                        ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        identity = KeyIdentity(key_id=row.id, role=row.role)
        self._roles[digest] = identity
        if len(self._roles) > ROLE_CACHE_SIZE:
            self._roles.popitem(last=False)
        return identity

    def now(self) -> datetime:
        """The limiter's clock: the wall clock, whatever the domain clock says."""
        return self._clock.now()

    async def _count(self, engine: AsyncEngine, *, bucket: str, limit: int) -> None:
        moment = self._clock.now()
        window_start, _ = window_of(moment)
        lease = self._leases.get(bucket)
        if lease is not None and lease[0] == window_start and lease[1] > 0:
            self._leases[bucket] = (window_start, lease[1] - 1)
            return
        cost = max(1, limit // LEASE_DIVISOR)
        async with self._autocommit(engine) as connection:
            counted = await count_hit(
                connection, key=bucket, moment=moment, window_s=MINUTE_S, cost=cost
            )
            await self.purge_once_per_window(connection, moment=moment)
        granted = cost - max(0, math.ceil(counted.estimate - limit))
        if granted >= 1:
            if cost > 1:
                self._leases[bucket] = (window_start, granted - 1)
            return
        self._leases.pop(bucket, None)
        raise self.refusal(counted, limit=limit)

    def judge(self, counted: WindowCount, *, limit: int) -> None:
        """Raise ``RateLimited`` when a hit counted elsewhere (one request, cost 1) is over."""
        if counted.estimate > limit:
            raise self.refusal(counted, limit=limit)

    def refusal(self, counted: WindowCount, *, limit: int) -> RateLimited:
        wait = retry_after_s(
            previous=counted.previous,
            current=counted.current,
            limit=limit,
            elapsed=counted.elapsed,
        )
        return RateLimited(
            f"more than {limit} requests a minute; retry in {wait} s", retry_after=wait
        )

    async def purge_once_per_window(
        self, connection: AsyncConnection | AsyncSession | DriverConnection, *, moment: datetime
    ) -> None:
        """Drop old windows, the first time this process counts in a new window."""
        window_start, _ = window_of(moment)
        if self._purged_window == window_start:
            return
        self._purged_window = window_start
        await purge_windows(connection, moment=moment)
        self._leases = {
            key: lease for key, lease in self._leases.items() if lease[0] == window_start
        }

    @asynccontextmanager
    async def _autocommit(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode: each statement commits on its own."""
        async with engine.connect() as connection:
            if engine is self._engine:
                yield connection
            else:
                yield await connection.execution_options(isolation_level="AUTOCOMMIT")


def client_ip(request: Request) -> str:
    """The peer address (behind a proxy, run uvicorn with --proxy-headers)."""
    return request.client.host if request.client else "unknown"


def rate_limiter_of(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def limit_failed_authentication(request: Request) -> None:
    """Count a 401 against the client's IP; raises ``RateLimited`` once it is over.

    Called by the 401 handler, after the request's session has given back its
    connection, so a flood of bad keys never holds two connections per request.
    """
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    runtime = getattr(request.app.state, "runtime", None)
    if limiter is None or runtime is None:
        return
    await limiter.check_failed_authentication(runtime.engine, client_ip=client_ip(request))


async def limit_unsigned_webhook(request: Request) -> None:
    """Call when a webhook's Twilio signature is missing or wrong, before answering 403.

    Raises ``RateLimited`` (429 with Retry-After) once the client's IP has sent too
    many unsigned requests this minute. Never call it for a correctly signed webhook.
    """
    engine = request.app.state.runtime.engine
    await rate_limiter_of(request).check_unsigned_webhook(engine, client_ip=client_ip(request))
