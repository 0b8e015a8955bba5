"""Test harness: one throwaway PostgreSQL + PostGIS cluster per run, real migrations.

- ``pg`` starts a private cluster in a temporary directory (as the ``postgres`` OS
  user when we are root) and builds ``responder_template`` with ``alembic upgrade
  head``, which also tests the migrations.
- ``session`` is the default: a connection inside an outer transaction that is
  rolled back after the test; the app under test uses the same session, each
  request's transaction (or each transaction of a route that opens its own) a
  savepoint.
- ``committed_db`` is for tests that need real commits (concurrent requests,
  workers, LISTEN/NOTIFY): a fresh database cloned from the template, dropped after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.api.deps import get_driver_connection, get_session, get_transactions
from app.api.main import create_app
from app.core.clock import FrozenClock
from app.core.db import Transactions, create_engine, create_session_factory
from app.core.settings import Settings
from app.embedded import EmbeddedPostgres
from app.migrate import upgrade
from app.runtime import Runtime
from app.web.console import install_console
from tests.console_harness import WebServer, browser_page, chromium, serve
from tests.elks_fake import FakeElks
from tests.factories import make_settings, savepoints
from tests.twilio_fake import FakeTwilio
from tests.worker_harness import Harness, open_harness

TEMPLATE = "responder_template"

for _name in [name for name in os.environ if name.startswith("RESPONDER_")]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    home = Path(tempfile.mkdtemp(prefix="responder-test-"))
    home.chmod(0o755)
    cluster = EmbeddedPostgres(home / "cluster")
    cluster.start()
    cluster.ensure_database(TEMPLATE)
    upgrade(cluster.url(TEMPLATE))
    cluster.psql("postgres", "-c", f'CREATE DATABASE "responder_test" TEMPLATE "{TEMPLATE}"')
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(pg: EmbeddedPostgres) -> str:
    return pg.url("responder_test")


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 24, 14, 32, tzinfo=UTC))


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    ) as session:
        yield session


@pytest.fixture
def session_factory(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's connection, each transaction a savepoint: for code that
    opens its own transactions (the worker's timers), rolled back with the test."""
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
def app(
    settings: Settings,
    database_url: str,
    engine: AsyncEngine,
    session: AsyncSession,
    clock: FrozenClock,
) -> FastAPI:
    """The service bound to the test's session: everything it writes is rolled back."""
    application = create_app(
        settings,
        database_url=database_url,
        run_worker=False,
        clock=clock,
        pages=install_console,
    )
    application.state.runtime = Runtime(
        settings=settings,
        database_url=database_url,
        engine=engine,
        session_factory=create_session_factory(engine),
        clock=clock,
    )

    async def session_in_savepoint() -> AsyncIterator[AsyncSession]:
        async with session.begin_nested():
            yield session

    async def connection_in_savepoint() -> AsyncIterator[AsyncConnection]:
        async with session.begin_nested():
            yield await session.connection()

    async def transactions_in_savepoints() -> Transactions:
        return savepoints(session)

    application.dependency_overrides[get_session] = session_in_savepoint
    application.dependency_overrides[get_transactions] = transactions_in_savepoints
    application.dependency_overrides[get_driver_connection] = connection_in_savepoint
    return application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """The provider's edge: a local Twilio-compatible server (``tests/twilio_fake.py``)."""
    fake = FakeTwilio().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_elks() -> Iterator[FakeElks]:
    """The secondary provider's edge: a local 46elks-compatible server (``tests/elks_fake.py``)."""
    fake = FakeElks().start()
    yield fake
    fake.stop()


@pytest.fixture
async def harness(
    committed_db: str, fake_twilio: FakeTwilio, clock: FrozenClock
) -> AsyncIterator[Harness]:
    """A dispatch worker's surroundings: a committed database, the fake, the clock."""
    async for opened in open_harness(committed_db, fake_twilio, clock):
        yield opened


@pytest.fixture
def committed_db(pg: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database from the template, for tests that need real commits."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg.psql("postgres", "-c", f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    try:
        yield pg.url(name)
    finally:
        pg.psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def committed_engine(committed_db: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(committed_db, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
def factory(committed_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that commit, on the ``committed_db``: one per transaction of the test."""
    return create_session_factory(committed_engine)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, once per run (tests/console_harness.py)."""
    async with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
async def web(pg: EmbeddedPostgres) -> AsyncIterator[WebServer]:
    """The service under uvicorn with its worker, one per test module."""
    async with serve(pg, template=TEMPLATE) as server:
        yield server


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies), in English."""
    async with browser_page(browser) as opened:
        yield opened
