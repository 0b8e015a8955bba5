"""The console's defences, tried in a real browser: CSRF, session timeouts, escaping."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
from playwright.async_api import Browser, Page, expect
from sqlalchemy import func, select

from app.core.models import ApiKey
from tests.console_harness import WebServer, browser_page, sign_in
from tests.factories import STOCKHOLM, create_key, create_volunteer, offset
from tests.test_console_dispatcher import _post_incident, _reply


async def _key_count(web: WebServer) -> int:
    return await web.run(lambda session: session.scalar(select(func.count()).select_from(ApiKey)))


async def test_a_forged_or_missing_csrf_token_is_refused_and_nothing_is_stored(
    page: Page, web: WebServer
) -> None:
    await sign_in(page, web, await web.staff(), path="/console/keys")
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    before = await _key_count(web)
    form = {"name": "forged", "role": "locator", "centre": ""}
    forged = await page.request.post(web.url("/console/keys"), form=form | {"csrf_token": "x" * 43})
    missing = await page.request.post(web.url("/console/keys"), form=form)
    assert forged.status == 403
    assert missing.status == 403
    assert "not sent from this console" in await forged.text()
    assert await _key_count(web) == before

    await page.get_by_label("Name").fill("genuine")
    await page.get_by_label("Role").select_option(label="Locator")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_label("New key")).to_be_visible()
    assert await _key_count(web) == before + 1


async def test_sign_in_without_the_forms_token_is_refused(page: Page, web: WebServer) -> None:
    coordinator = await web.staff()
    answer = await page.request.post(
        web.url("/console/login"), form={"email": coordinator.email, "password": "x"}
    )
    assert answer.status == 403


async def test_an_idle_session_ends_but_a_dispatcher_watching_an_incident_stays_signed_in(
    browser: Browser, web: WebServer
) -> None:
    await web.run(
        lambda session: create_volunteer(
            session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=50)
        )
    )
    incident_id = await _post_incident(web, "idle", "CAD-IDLE-1")
    headers = await web.run(lambda session: create_key(session, role="dispatcher", centre="idle"))
    async with browser_page(browser) as idle, browser_page(browser) as watching:
        idler = await web.staff(role="dispatcher", centre="idle")
        await sign_in(idle, web, idler, path="/console/account")
        await sign_in(watching, web, await web.staff(role="dispatcher", centre="idle"))
        await expect(idle.get_by_role("heading", name="Your account")).to_be_visible()
        await watching.goto(web.url(f"/console/incidents/{incident_id}"))
        async with httpx.AsyncClient(base_url=web.base_url, headers=headers) as client:
            for minute in (10, 20, 30, 40):
                web.clock.advance(timedelta(minutes=10))
                notes = f"after {minute} minutes"
                patched = await client.patch(
                    f"/v1/incidents/{incident_id}", json={"access_notes": notes}
                )
                assert patched.status_code == 200
                await expect(watching.get_by_text("Incident updated")).to_have_count(minute // 10)
        await watching.goto(web.url(f"/console/incidents/{incident_id}"))
        await expect(watching.get_by_label("Access notes")).to_have_value("after 40 minutes")

        await idle.reload()
        await expect(idle).to_have_url(re.compile(r"/console/login\?next=/console/account$"))
        await expect(idle.get_by_role("button", name="Sign in")).to_be_visible()


async def test_html_in_a_volunteers_name_is_shown_as_text(page: Page, web: WebServer) -> None:
    name = '<img src=x onerror="window.pwned=1"><b>Eve</b>'
    volunteer = await web.run(
        lambda session: create_volunteer(
            session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=40), name=name, language="en"
        )
    )
    incident_id = await _post_incident(web, "html", "CAD-HTML-1")
    await sign_in(page, web, await web.staff(role="dispatcher", centre="html"))
    await page.goto(web.url(f"/console/incidents/{incident_id}"))
    assert volunteer.phone is not None
    await _reply(web, volunteer.phone, "YES")
    await expect(page.get_by_role("cell", name=name)).to_be_visible()
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("#summary img, #summary b").count() == 0
