"""Request dependencies: one transaction per request, and who is calling.

The session commits before the response is sent (``scope="function"``), so a 201
always means the incident and its queued alerts are durable.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.api.ratelimit import rate_limiter_of
from app.core.db import DriverConnection, Transactions, driver_connection, transactions_of
from app.core.errors import Forbidden
from app.core.settings import Settings
from app.core.timing import current, mark, phase
from app.registry.keys import Principal, Role, authenticate, authenticate_counted
from app.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# The dependencies are ``async def`` although they never await: FastAPI runs a plain
# ``def`` dependency in a worker thread, a thread hand-off on every request.
async def _runtime_dependency(request: Request) -> Runtime:
    return get_runtime(request)


async def _settings_dependency(request: Request) -> Settings:
    return get_runtime(request).settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction; ``committing`` is when its commit starts, ``commit`` how long."""
    async with get_runtime(request).session_factory() as session:
        async with session.begin():
            yield session
            mark("committing")
            committing, committing_cpu = time.perf_counter(), time.thread_time()
        timings = current()
        if timings is not None:
            timings.add(
                "commit", time.perf_counter() - committing, time.thread_time() - committing_cpu
            )


async def get_transactions(request: Request) -> Transactions:
    """For a route whose work retries whole transactions (an inbound SMS): it opens
    each one itself, rather than running inside the request's (``get_session``)."""
    return transactions_of(get_runtime(request).session_factory)


async def get_driver_connection(request: Request) -> AsyncIterator[DriverConnection]:
    """A connection for a route whose every write is one statement, used through the driver.

    Each statement commits on its own: no ``BEGIN`` and ``COMMIT`` round trips, no ORM
    session and no SQLAlchemy ``Connection`` to build and tear down
    (``app.core.db.driver_connection``). Tests put a connection inside their own
    rolled-back transaction in its place, where the same statements run through
    SQLAlchemy.
    """
    async with driver_connection(get_runtime(request).engine) as connection:
        yield connection


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
DriverConnectionDep = Annotated[
    AsyncConnection | DriverConnection, Depends(get_driver_connection, scope="function")
]
TransactionsDep = Annotated[Transactions, Depends(get_transactions)]
SettingsDep = Annotated[Settings, Depends(_settings_dependency)]
RuntimeDep = Annotated[Runtime, Depends(_runtime_dependency)]

_bearer = HTTPBearer(auto_error=False, description="API key or volunteer token")


def require_role(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that rate-limits (429), authenticates (401), then checks the role (403)."""

    async def principal(
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        # Counted before the session takes its connection; a 401 is counted per IP
        # by its error handler (app/ratelimit.py).
        mark("dependencies")
        with phase("ratelimit"):
            await rate_limiter_of(request).check_caller(
                get_runtime(request).engine, token=credentials.credentials if credentials else None
            )
        header = f"Bearer {credentials.credentials}" if credentials else None
        with phase("auth"):
            caller = await authenticate(session, header)
        if caller.role not in roles:
            raise Forbidden(f"this operation needs the role {' or '.join(roles)}")
        return caller

    # Read by tests/test_roles.py, which walks every route's dependencies.
    principal.roles = frozenset(roles)  # type: ignore[attr-defined]
    return principal


@dataclass(frozen=True, slots=True)
class CallerOnConnection:
    """Who is calling, and the route's connection their key was checked on.

    One dependency hands the route both: FastAPI spends 10–20 µs of CPU solving each
    dependency of every request (docs/benchmarks.md, "second pass").
    """

    principal: Principal
    connection: AsyncConnection | DriverConnection


def require_role_on_connection(role: Role) -> Callable[..., Awaitable[CallerOnConnection]]:
    """``require_role(role)`` for a route on a driver connection, in one statement.

    The key's lookup and its rate-limit count are one round trip on the route's own
    connection (``authenticate_counted``) instead of the limiter's count on its pool
    and the lookup in a transaction. The answers are ``require_role``'s, in its order:
    429 for a key over its limit, 401 for none, an unknown or a revoked key (counted
    against the client's IP by the 401 handler), 403 for another role's key (counted
    by the limiter as that role, first). One difference: the limiter fails open when
    its count fails; here the count is the lookup's statement, which fails as a whole
    (503, like any lost database).
    """

    async def caller_on_connection(
        request: Request,
        connection: DriverConnectionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> CallerOnConnection:
        mark("dependencies")
        limiter = rate_limiter_of(request)
        limit = limiter.limit_for(role)
        header = f"Bearer {credentials.credentials}" if credentials else None
        moment = limiter.now()
        with phase("auth"):
            caller, counted = await authenticate_counted(
                connection, header, counted_role=role, moment=moment
            )
        if counted is None:
            token = credentials.credentials if credentials else None
            await limiter.check_caller(get_runtime(request).engine, token=token)
            raise Forbidden(f"this operation needs the role {role}")
        if limit is not None:
            limiter.judge(counted, limit=limit)
            await limiter.purge_once_per_window(connection, moment=moment)
        return CallerOnConnection(caller, connection)

    caller_on_connection.roles = frozenset({role})  # type: ignore[attr-defined]
    return caller_on_connection


AdminDep = Annotated[Principal, Depends(require_role("admin"))]
DispatcherDep = Annotated[Principal, Depends(require_role("dispatcher"))]
ReaderDep = Annotated[Principal, Depends(require_role("dispatcher", "admin"))]
LocatorDep = Annotated[Principal, Depends(require_role("locator"))]
VolunteerDep = Annotated[Principal, Depends(require_role("volunteer"))]
VolunteerOnConnectionDep = Annotated[
    CallerOnConnection, Depends(require_role_on_connection("volunteer"))
]
