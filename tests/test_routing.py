"""The busiest routers are matched first; the document and every request's route stay."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from app.api.main import API_ROUTERS, BUSIEST_ROUTERS, create_app
from app.web.console import install_console
from tests.factories import make_settings


def served_app() -> FastAPI:
    return create_app(
        make_settings(), database_url="postgresql://unused@/unused", pages=install_console
    )


def test_the_busiest_routers_share_no_path_with_the_others() -> None:
    """Matched earlier, a busy route would take a request meant for another router's."""
    busy = [route for router in BUSIEST_ROUTERS for route in router.routes]
    others = [
        route for router in API_ROUTERS if router not in BUSIEST_ROUTERS for route in router.routes
    ]
    assert busy
    assert others
    overlapping = [
        (first.path, second.path)
        for first in busy
        for second in others
        if isinstance(first, APIRoute) and isinstance(second, APIRoute)
        if first.path_regex.match(second.path) or second.path_regex.match(first.path)
    ]
    assert overlapping == []


def test_the_location_update_is_matched_before_the_registry() -> None:
    paths = [getattr(route, "path", None) for route in iter_route_contexts(served_app().routes)]
    assert paths.index("/v1/me/location") < paths.index("/healthz") < paths.index("/console")


def test_the_document_lists_every_api_route_in_its_reading_order() -> None:
    app = served_app()
    documented = {
        (route.path, method.lower())
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and route.original_route.include_in_schema
        for method in route.original_route.methods or ()
    }
    paths = app.openapi()["paths"]
    assert {(path, method) for path, ops in paths.items() for method in ops} == documented
    assert list(paths)[:2] == ["/healthz", "/readyz"]
    assert list(paths).index("/v1/incidents") < list(paths).index("/v1/me/location")
