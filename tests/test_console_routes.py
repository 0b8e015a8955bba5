"""Every console route is guarded by construction: discovered, not listed by hand."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _console_routes(app: FastAPI) -> list[Any]:
    """Routers included (FastAPI resolves them lazily)."""
    return [
        route
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        and route.path is not None
        and route.path.startswith("/console")
    ]


def test_every_state_changing_console_route_checks_the_csrf_token(app: FastAPI) -> None:
    unguarded = [
        route.path
        for route in _console_routes(app)
        if set(route.methods or ()) & STATE_CHANGING
        and not any(getattr(call, "checks_csrf", False) for call in _calls(route.dependant))
    ]
    assert _console_routes(app)
    assert unguarded == []


def test_every_console_page_but_sign_in_needs_a_session(app: FastAPI) -> None:
    public = {
        "/console/login",
        "/console/login/code",
        "/console/login/sso",
        "/console/login/sso/callback",
        "/console/password/{token}",
    }
    open_routes = [
        route.path
        for route in _console_routes(app)
        if route.path not in public
        and not any(
            hasattr(call, "roles") or call.__name__ == "staff" for call in _calls(route.dependant)
        )
    ]
    assert open_routes == []


async def test_an_oversized_upload_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/console/aeds/import",
        content=b"x" * (5 * 1024 * 1024 + 1),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("text/html")
