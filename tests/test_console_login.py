"""Signing in to the console, as a person does it, in a real browser."""

from __future__ import annotations

import re

import pyotp
from playwright.async_api import Browser, Page, expect

from tests.console_harness import PASSWORD, WebServer, browser_page, sign_in, snap


async def test_a_coordinator_signs_in_and_out(page: Page, web: WebServer) -> None:
    coordinator = await web.staff(name="Cora Ordinator")
    await page.goto(web.url("/console/account"))
    await expect(page).to_have_url(re.compile(r"/console/login\?next=/console/account$"))
    await snap(page, "login")
    await expect(page.get_by_role("link", name="Sign in with single sign-on")).to_have_count(0)
    await page.get_by_label("Email").fill(coordinator.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    await expect(page.get_by_text("Cora Ordinator").first).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await page.goto(web.url("/console/account"))
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()


async def test_a_wrong_password_is_refused_and_the_email_is_kept(
    page: Page, web: WebServer
) -> None:
    coordinator = await web.staff()
    await page.goto(web.url("/console/login"))
    await page.get_by_label("Email").fill(coordinator.email)
    await page.get_by_label("Password").fill("not the password at all")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await expect(page.get_by_label("Email")).to_have_value(coordinator.email)


async def test_the_sign_in_page_is_swedish_when_the_browser_prefers_it(
    browser: Browser, web: WebServer
) -> None:
    async with browser_page(browser, locale="sv-SE") as page:
        await page.goto(web.url("/console/login"))
        await expect(page.get_by_label("E-post")).to_be_visible()
        await expect(page.get_by_label("Lösenord")).to_be_visible()
        await expect(page.get_by_role("button", name="Logga in")).to_be_visible()


async def test_totp_sign_in_asks_for_the_code_and_refuses_a_replayed_one(
    browser: Browser, web: WebServer
) -> None:
    dispatcher = await web.staff(role="dispatcher", centre="north", name="Dee", totp=True)
    assert dispatcher.totp_secret is not None
    code = pyotp.TOTP(dispatcher.totp_secret).at(web.clock.now())
    async with browser_page(browser) as page:
        await sign_in(page, web, dispatcher, path="/console/account")
        await page.get_by_label("Code").fill("000000" if code != "000000" else "111111")
        await page.get_by_role("button", name="Verify").click()
        await expect(page.get_by_text("Wrong or already used code.")).to_be_visible()
        await page.get_by_label("Code").fill(code)
        await page.get_by_role("button", name="Verify").click()
        await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    async with browser_page(browser) as page:
        await sign_in(page, web, dispatcher, path="/console/account")
        await page.get_by_label("Code").fill(code)
        await page.get_by_role("button", name="Verify").click()
        await expect(page.get_by_text("Wrong or already used code.")).to_be_visible()
