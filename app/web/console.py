"""Wiring the console into the service: its routes, static assets, errors and headers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import ErrorPage
from app.core.settings import Settings
from app.web.auth import EnrolmentRequired, SignInRequired, see_other, sign_in_redirect
from app.web.pages import CONSOLE, error_page, is_page
from app.web.routes import ROUTERS
from app.web.volunteer_auth import VolunteerSignInRequired, to_login

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
PROJECT_ASSETS = Path(__file__).resolve().parents[2] / "node_modules"
VENDOR = {"htmx": "htmx.org/dist", "leaflet": "leaflet/dist"}


class ConsoleHeaders:
    """Pure ASGI middleware: a strict Content-Security-Policy and no framing for pages
    (the console's and the volunteers').

    Scripts and styles only from the console itself; images also from the map tile
    server. Pure ASGI (not ``BaseHTTPMiddleware``) so the live streams pass untouched.
    """

    def __init__(self, app: ASGIApp, *, tile_url: str) -> None:
        self.app = app
        tiles = urlsplit(tile_url.replace("{s}", "a"))
        tile_origin = f"{tiles.scheme}://{tiles.netloc}"
        self.headers = [
            (
                b"content-security-policy",
                (
                    "default-src 'self'; script-src 'self'; style-src 'self'; "
                    f"img-src 'self' data: {tile_origin}; connect-src 'self'; "
                    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
                ).encode("latin-1"),
            ),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"cache-control", b"no-store"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith((f"{CONSOLE}/static/", f"{CONSOLE}/vendor/"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and not static:
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)


def assets_dir(settings: Settings) -> Path:
    return settings.web_assets_dir or PROJECT_ASSETS


def install_console(app: FastAPI, settings: Settings) -> ErrorPage:
    """The console's routes, assets and handlers on ``app`` (``create_app(pages=...)``)."""
    for router in ROUTERS:
        app.include_router(router)
    app.mount(f"{CONSOLE}/static", StaticFiles(directory=STATIC), name="console-static")
    assets = assets_dir(settings)
    for name, relative in VENDOR.items():
        if not (assets / relative).is_dir():
            log.warning(
                "console asset missing: run ./dev setup (npm ci)", asset=str(assets / relative)
            )
        app.mount(
            f"{CONSOLE}/vendor/{name}",
            StaticFiles(directory=assets / relative, check_dir=False),
            name=f"console-vendor-{name}",
        )

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(request, exc.next_path)

    @app.exception_handler(VolunteerSignInRequired)
    async def _volunteer_sign_in(request: Request, exc: VolunteerSignInRequired) -> Response:
        return to_login(request)

    @app.exception_handler(EnrolmentRequired)
    async def _enrol(request: Request, exc: EnrolmentRequired) -> Response:
        return see_other(request, f"{CONSOLE}/account")

    app.add_middleware(ConsoleHeaders, tile_url=settings.map_tile_url)
    return error_page
