"""The role matrix, walked over every route the application serves.

Routes are discovered from ``app.routes`` and their roles from the dependency that
``app.api.deps.require_role`` returns (its ``roles`` attribute), so routes added later
are covered without touching this file. Each protected operation must answer 401
without a key and with a wrong one, and 403 to every role it does not allow,
before it looks at its path parameters or body.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.main import create_app
from app.core.settings import Settings
from app.registry.keys import Role
from tests.factories import create_key, create_volunteer, make_settings

ROLES: tuple[Role, ...] = ("admin", "dispatcher", "locator", "volunteer")
UNPROTECTED = re.compile(r"^/(webhooks/|healthz$|healthz/sms$|readyz$|metrics$)")


def roles_of(dependant: Dependant) -> frozenset[str] | None:
    for dependency in dependant.dependencies:
        roles = getattr(dependency.call, "roles", None)
        if roles is not None:
            return frozenset(roles)
        nested = roles_of(dependency)
        if nested is not None:
            return nested
    return None


def operations(app: FastAPI) -> Iterator[tuple[str, str, frozenset[str] | None]]:
    """Every (method, path, roles) served, routers included (FastAPI resolves them lazily)."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            assert route.path is not None
            for method in sorted(route.methods or ()):
                yield method, route.path, roles_of(route.dependant)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


@pytest.fixture
def settings() -> Settings:
    # Hundreds of deliberate 401s from one client must not trip the per-IP limit.
    return make_settings(rate_limit_anonymous_per_minute=1_000_000)


def test_every_route_except_health_and_webhooks_requires_a_role() -> None:
    app = create_app(make_settings(), database_url="postgresql://unused@/unused")
    found = list(operations(app))
    unguarded = [
        f"{method} {path}"
        for method, path, roles in found
        if roles is None and not UNPROTECTED.match(path)
    ]
    assert unguarded == []
    assert ("POST", "/v1/volunteers", frozenset({"admin"})) in found
    assert ("POST", "/v1/locations/bulk", frozenset({"locator"})) in found
    assert ("GET", "/v1/me", frozenset({"volunteer"})) in found


async def test_role_matrix_over_every_route(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session)
    keys = {
        role: await create_key(
            session,
            role=role,
            name=f"{role} key",
            volunteer=volunteer if role == "volunteer" else None,
        )
        for role in ROLES
    }
    wrong = {"Authorization": "Bearer rsp_not-a-key"}
    checked = 0
    failures = []
    for method, path, allowed in operations(app):
        if allowed is None:
            continue
        url = concrete(path)
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        expectations: list[tuple[str, dict[str, str], int]] = [
            ("no key", {}, 401),
            ("wrong key", wrong, 401),
        ]
        expectations += [(role, keys[role], 403) for role in ROLES if role not in allowed]
        for label, headers, status in expectations:
            response = await client.request(method, url, headers=headers, **body)
            checked += 1
            if response.status_code != status:
                failures.append(f"{method} {path} with {label}: {response.status_code}")
            elif response.headers["content-type"] != "application/problem+json":
                failures.append(f"{method} {path} with {label}: not problem+json")
    assert failures == []
    assert checked > 60


async def test_a_revoked_key_is_refused_at_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    from sqlalchemy import update

    from app.core.models import ApiKey
    from app.registry.keys import hash_key

    headers = await create_key(session, role="admin")
    assert (await client.get("/v1/volunteers", headers=headers)).status_code == 200
    token = headers["Authorization"].removeprefix("Bearer ")
    await session.execute(
        update(ApiKey)
        .where(ApiKey.key_hash == hash_key(token))
        .values(revoked_at=ApiKey.created_at)
    )
    assert (await client.get("/v1/volunteers", headers=headers)).status_code == 401
