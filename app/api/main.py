"""The FastAPI application: ``create_app()`` wires routers, errors and the lifespan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import (
    ErrorPage,
    InternalErrors,
    Problem,
    RequestGuards,
    complete_operation_responses,
    install_problem_handlers,
)
from app.api.ratelimit import RateLimiter
from app.api.routers import (
    aeds,
    canary,
    certifications,
    health,
    incident_actions,
    incidents,
    locations,
    me,
    voice,
    volunteers,
    webhooks,
)
from app.core.clock import Clock, SystemClock
from app.core.db import create_dispatch_engine, create_engine, create_session_factory
from app.core.heap import serving_heap
from app.core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.core.settings import Settings, get_settings
from app.core.timing import collect
from app.runtime import DetachedTasks, Runtime, create_call_worker, create_worker
from dispatch.events import EventHub
from dispatch.gateway import create_gateway, create_secondary_gateway
from geo.search import load_service_area


class RequestMetrics:
    """Counts and times requests by route template (never by raw path: ids would explode)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)


class ServerTiming:
    """``Server-Timing`` on every response: the phases timed by ``app.core.timing``.

    Outermost, so ``app`` (to the response's first byte) covers every middleware;
    installed only when ``RESPONDER_SERVER_TIMING`` is on (the benchmark reads it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timings = collect()

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                timings.since_start("app")
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", timings.header().encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_header)


async def start_dispatch(runtime: Runtime, *, run_worker: bool) -> None:
    """The SMS gateway and event hub of this process, and the worker when it runs one."""
    runtime.gateway = create_gateway(runtime.settings)
    runtime.secondary_gateway = create_secondary_gateway(runtime.settings)
    runtime.events = EventHub(runtime.database_url)
    runtime.events.start()
    if run_worker:
        runtime.dispatch_engine = create_dispatch_engine(
            runtime.database_url, pool_size=runtime.settings.db_pool_size
        )
        runtime.worker = create_worker(runtime, runtime.gateway)
        runtime.worker_task = asyncio.create_task(runtime.worker.run(), name="dispatch-worker")
        runtime.call_worker = create_call_worker(runtime)
        if runtime.call_worker is not None:
            runtime.call_worker_task = asyncio.create_task(
                runtime.call_worker.run(), name="call-worker"
            )


async def stop_dispatch(runtime: Runtime) -> None:
    if runtime.worker is not None and runtime.worker_task is not None:
        runtime.worker.stop()
        await runtime.worker_task
    if runtime.call_worker is not None and runtime.call_worker_task is not None:
        runtime.call_worker.stop()
        await runtime.call_worker_task
        await runtime.call_worker.gateway.close()
    if runtime.events is not None:
        await runtime.events.stop()
    for gateway in (runtime.gateway, runtime.secondary_gateway):
        if gateway is not None:
            await gateway.close()
    if runtime.dispatch_engine is not None:
        await runtime.dispatch_engine.dispose()


API_ROUTERS = (
    health.router,
    incidents.router,
    volunteers.router,
    certifications.router,
    aeds.router,
    me.router,
    locations.router,
    webhooks.router,
    webhooks.elks_router,
    voice.router,
    incident_actions.router,
    canary.router,
)
"""The API's routers, in the order ``/openapi.json`` lists them."""

BUSIEST_ROUTERS = (me.router, webhooks.router, webhooks.elks_router)
"""Matched before the others: every volunteer's phone updates its location every few
minutes and every SMS reply is a webhook, and a request is tried against the routes
one by one (behind 40 routes, finding ``PUT /v1/me/location`` cost 63 µs of its
~1 ms of CPU; now 8: docs/benchmarks.md, "second pass"). Only the matching order
changes, never the document's; no path of these routers is also a path of another,
so no request changes its route (``tests/test_routing.py``)."""


PageLayer = Callable[[FastAPI, Settings], ErrorPage]
"""Installs web pages on the app and returns how their errors are rendered."""

# Shutdown waits this long for after-response bookkeeping (a selection record).
DETACHED_DRAIN_S = 10.0


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    run_worker: bool = True,
    clock: Clock | None = None,
    pages: PageLayer | None = None,
) -> FastAPI:
    """Build the service. ``database_url`` overrides the settings (embedded cluster, tests).

    ``pages`` adds a layer of web pages (the console, ``app.web.console.install_console``):
    it is handed in by the top (``responder serve``) rather than imported here, because
    the pages import the API's dependencies and schemas and the two may not form a cycle.
    """
    settings = settings or get_settings()
    url = database_url or settings.database_url
    if url is None:
        raise RuntimeError("no database URL: start through `responder serve` or set one")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(url, pool_size=settings.db_pool_size)
        detached = DetachedTasks()
        runtime = Runtime(
            settings=settings,
            database_url=url,
            engine=engine,
            session_factory=create_session_factory(engine),
            clock=clock or SystemClock(),
            detached=detached,
        )
        app.state.runtime = runtime
        app.state.rate_limiter.open(url)
        await start_dispatch(runtime, run_worker=app.state.run_worker)
        try:
            with serving_heap():
                yield
        finally:
            await detached.drain(timeout_s=DETACHED_DRAIN_S)
            await stop_dispatch(runtime)
            await app.state.rate_limiter.close()
            await engine.dispose()

    app = FastAPI(
        title="Responder",
        version="1.0.0",
        summary="Alerts CPR-trained volunteers to a nearby cardiac arrest by SMS.",
        lifespan=lifespan,
        # A redirect to the slash-less path would be built from the request's Host
        # header, so anyone could make the service answer with a Location of theirs.
        redirect_slashes=False,
    )
    app.state.run_worker = run_worker
    app.state.rate_limiter = RateLimiter(settings)
    # The API's routes before the pages', the busiest first: FastAPI matches a request
    # against the routes one after another in Python.
    for router in (*BUSIEST_ROUTERS, *(r for r in API_ROUTERS if r not in BUSIEST_ROUTERS)):
        app.include_router(router)
    error_page = pages(app, settings) if pages is not None else None
    install_problem_handlers(app, error_page=error_page)
    if settings.service_area is not None:
        load_service_area(settings.service_area)  # a broken file stops the start, not an alert

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=[route for router in API_ROUTERS for route in router.routes],
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            schemas.update(schemas["Problem"].pop("$defs", {}))
            complete_operation_responses(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(InternalErrors, error_page=error_page)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestGuards, max_body_bytes=settings.max_body_bytes, error_page=error_page)
    if settings.server_timing:
        app.add_middleware(ServerTiming)
    return app
