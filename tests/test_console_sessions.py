"""Sessions, cookies and the sign-in throttle, through the app in process (no browser)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.settings import Settings
from app.registry.staff import create_staff_user, set_password
from tests.console_harness import PASSWORD
from tests.factories import make_settings


@pytest.fixture
def settings() -> Settings:
    return make_settings(web_base_url="https://console.example.org", login_failures_per_account=3)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Over https, as the console's origin says: the browser sends Secure cookies only there."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client


async def _coordinator(session: AsyncSession, settings: Settings, clock: FrozenClock) -> str:
    link = await create_staff_user(
        session,
        email="Cora@Example.org",
        name="Cora",
        role="coordinator",
        centre=None,
        actor=None,
        now=clock.now(),
        settings=settings,
    )
    await set_password(session, token=link.token, password=PASSWORD, now=clock.now())
    return "cora@example.org"


async def _login_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/console/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


async def _sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    token = await _login_token(client)
    return await client.post(
        "/console/login", data={"email": email, "password": password, "csrf_token": token}
    )


async def test_the_session_cookie_is_httponly_lax_and_secure_on_an_https_origin(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    email = await _coordinator(session, settings, clock)
    answer = await _sign_in(client, email, PASSWORD)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("responder_console=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" in cookie
    assert "Path=/console" in cookie


async def test_signing_in_again_rotates_the_session_id_and_ends_the_old_one(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    email = await _coordinator(session, settings, clock)
    await _sign_in(client, email, PASSWORD)
    first = client.cookies["responder_console"]
    await _sign_in(client, email, PASSWORD)
    second = client.cookies["responder_console"]
    assert first != second
    client.cookies.set("responder_console", first, path="/console")
    answer = await client.get("/console/account")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login")


async def test_failed_sign_ins_are_slowed_down_per_account_never_locked_out(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    email = await _coordinator(session, settings, clock)
    for _ in range(3):
        assert (await _sign_in(client, email, "wrong password!")).status_code == 401
    slowed = await _sign_in(client, email, PASSWORD)
    assert slowed.status_code == 429
    assert "Wait 2 seconds and try again" in slowed.text
    clock.advance(timedelta(seconds=2))
    assert (await _sign_in(client, email, PASSWORD)).status_code == 303


async def test_the_absolute_timeout_ends_even_a_busy_session(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    email = await _coordinator(session, settings, clock)
    await _sign_in(client, email, PASSWORD)
    for _ in range(24):  # a request every 29 minutes: never idle for 30
        clock.advance(timedelta(minutes=29))
        assert (await client.get("/console/account")).status_code == 200
    clock.advance(timedelta(minutes=29))  # 12 h 5 min after sign-in
    answer = await client.get("/console/account")
    assert answer.status_code == 303


async def test_console_pages_are_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]


async def test_a_malformed_console_link_is_a_404_page_not_a_problem(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/console/incidents/not-a-uuid")
    assert answer.status_code in (303, 404)
    assert "problem+json" not in answer.headers.get("content-type", "")
