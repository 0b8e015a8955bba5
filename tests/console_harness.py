"""Browser-test harness for the web pages: a real server, a real Chromium, real SMS edges.

Fixtures (in ``tests/conftest.py``):

- ``browser`` (one per test session): Debian's Chromium driven by Playwright for
  Python, headless, with nothing that reaches the network on its own.
- ``web`` (one per test module): the service under uvicorn on a loopback port, with
  its dispatch worker, against a fresh committed database cloned from the template,
  sending SMS to the fake Twilio; its clock is a ``FrozenClock`` the test may move.
- ``page``: a fresh browser context (no cookies) per test, in English unless the
  test asks for another language.

Screenshots: ``snap(page, name)`` writes ``name.png`` into the folder named by
``CONSOLE_SCREENSHOTS`` (``./dev screenshots`` sets it to ``docs/console``) and
does nothing otherwise, so a test run never dirties the work tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory, unit_of_work
from app.core.settings import Settings
from app.embedded import EmbeddedPostgres
from app.registry.staff import create_staff_user, set_password, start_totp_enrolment
from app.web.console import install_console
from tests.twilio_fake import FakeTwilio, twilio_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# No tile server in tests: the map must work, blank, without one (and nothing leaves
# the machine). A port on loopback where nothing listens.
UNREACHABLE_TILES = "http://127.0.0.1:9/{z}/{x}/{y}.png"
PASSWORD = "correct horse battery staple"
# What a person waits for, at most, on a loaded CI machine (a live update, a redirect).
WAIT_MS = 10_000
expect.set_options(timeout=WAIT_MS)
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class WebServer:
    base_url: str
    database_url: str
    settings: Settings
    clock: FrozenClock
    fake: FakeTwilio
    engine: AsyncEngine

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work`` in one committed transaction of the server's database."""
        async with unit_of_work(create_session_factory(self.engine)) as session:
            return await work(session)

    async def staff(
        self,
        *,
        role: str = "coordinator",
        centre: str | None = None,
        name: str = "Test Coordinator",
        totp: bool = False,
    ) -> Staff:
        """A staff user with a password (and a confirmed TOTP secret when ``totp``)."""
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.org"
        now = self.clock.now()

        async def create(session: AsyncSession) -> Staff:
            link = await create_staff_user(
                session,
                email=email,
                name=name,
                role=role,
                centre=centre,
                actor=None,
                now=now,
                settings=self.settings,
            )
            await set_password(session, token=link.token, password=PASSWORD, now=now)
            secret = None
            if totp:
                user = await start_totp_enrolment(session, user_id=link.user.id)
                user.totp_enabled_at = now
                secret = user.totp_secret
            return Staff(id=link.user.id, email=email, name=name, totp_secret=secret)

        return await self.run(create)

    def url(self, path: str) -> str:
        return self.base_url + path


@dataclass(frozen=True)
class Staff:
    id: uuid.UUID
    email: str
    name: str
    totp_secret: str | None = None


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


def server_settings(fake: FakeTwilio, port: int, **overrides: Any) -> Settings:
    return twilio_settings(
        fake,
        public_base_url=f"http://127.0.0.1:{port}",
        map_tile_url=UNREACHABLE_TILES,
        **overrides,
    )


@contextlib.asynccontextmanager
async def serve(
    pg: EmbeddedPostgres, *, template: str, **overrides: Any
) -> AsyncIterator[WebServer]:
    """The service on a loopback port with its worker, on a fresh committed database."""
    name = f"w_{uuid.uuid4().hex[:12]}"
    pg.psql("postgres", "-c", f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    database_url = pg.url(name)
    fake = FakeTwilio().start()
    port = free_port()
    settings = server_settings(fake, port, **overrides)
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    app = create_app(
        settings,
        database_url=database_url,
        run_worker=True,
        clock=clock,
        pages=install_console,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    engine = create_engine(database_url, pool_size=2)
    base_url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base_url)
        yield WebServer(
            base_url=base_url,
            database_url=database_url,
            settings=settings,
            clock=clock,
            fake=fake,
            engine=engine,
        )
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)
        await engine.dispose()
        fake.stop()
        pg.psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _wait_ready(base_url: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            assert time.monotonic() < deadline, "the web server did not start"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def browser_page(browser: Browser, *, locale: str = "en-GB") -> AsyncIterator[Page]:
    context: BrowserContext = await browser.new_context(
        locale=locale, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(WAIT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def sign_in(page: Page, web: WebServer, staff: Staff, *, path: str = "/console") -> None:
    await page.goto(web.url(path))
    await page.get_by_label("Email").fill(staff.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def snap(page: Page, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
