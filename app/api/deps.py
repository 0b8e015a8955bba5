"""Request dependencies: one transaction per request, and who is calling.

The session commits before the response is sent (``scope="function"``), so a 201
always means the incident and its queued alerts are durable.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.ratelimit import rate_limiter_of
from app.core.errors import Forbidden
from app.core.settings import Settings
from app.core.timing import current, mark, phase
from app.registry.keys import Principal, Role, authenticate
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
            committing = time.perf_counter()
        timings = current()
        if timings is not None:
            timings.add("commit", time.perf_counter() - committing)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
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


AdminDep = Annotated[Principal, Depends(require_role("admin"))]
DispatcherDep = Annotated[Principal, Depends(require_role("dispatcher"))]
ReaderDep = Annotated[Principal, Depends(require_role("dispatcher", "admin"))]
LocatorDep = Annotated[Principal, Depends(require_role("locator"))]
VolunteerDep = Annotated[Principal, Depends(require_role("volunteer"))]
