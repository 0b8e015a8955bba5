"""A setting makes two-step sign-in mandatory for coordinators."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pyotp
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
    return make_settings(require_totp_for_coordinators=True)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


async def test_a_coordinator_must_set_up_totp_before_anything_else(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, clock: FrozenClock
) -> None:
    link = await create_staff_user(
        session,
        email="cora@example.org",
        name="Cora",
        role="coordinator",
        centre=None,
        actor=None,
        now=clock.now(),
        settings=settings,
    )
    await set_password(session, token=link.token, password=PASSWORD, now=clock.now())
    login = await client.get("/console/login")
    signed_in = await client.post(
        "/console/login",
        data={"email": "cora@example.org", "password": PASSWORD, "csrf_token": _csrf(login)},
    )
    assert signed_in.status_code == 303
    keys = await client.get("/console/keys")
    assert keys.status_code == 303
    assert keys.headers["location"] == "/console/account"

    account = await client.get("/console/account")
    assert "Coordinators must use two-step sign-in" in account.text
    secret = re.search(r"<code>([A-Z2-7]+)</code>", account.text)
    assert secret is not None
    enabled = await client.post(
        "/console/account/totp",
        data={"code": pyotp.TOTP(secret.group(1)).at(clock.now()), "csrf_token": _csrf(account)},
    )
    assert "Two-step sign-in is on." in enabled.text
    assert (await client.get("/console/keys")).status_code == 200
