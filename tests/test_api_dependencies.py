"""No route pays a thread hand-off for a dependency: FastAPI runs a plain ``def``
dependency in a worker thread, so every dependency the service declares is async."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from app.api.main import create_app
from app.web.console import install_console
from tests.factories import make_settings


def dependencies(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from dependencies(dependency)


def runs_on_the_event_loop(call: Callable[..., Any]) -> bool:
    target = call if inspect.isfunction(call) else getattr(call, "__call__", call)  # noqa: B004
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_every_dependency_of_every_route_is_async() -> None:
    app = create_app(
        make_settings(), database_url="postgresql://unused@/unused", pages=install_console
    )
    threaded = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', repr(call))}"
            for route in iter_route_contexts(app.routes)
            if isinstance(route.original_route, APIRoute)
            for call in dependencies(route.dependant)
            if not runs_on_the_event_loop(call)
        }
    )
    assert threaded == []
