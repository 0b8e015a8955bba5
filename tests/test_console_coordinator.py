"""The coordinator's console, in a real browser against a real server."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Page, expect

from tests.console_harness import WebServer, sign_in, snap


async def test_a_coordinator_creates_a_key_sees_it_once_and_revokes_it(
    page: Page, web: WebServer
) -> None:
    await sign_in(page, web, await web.staff(), path="/console/keys")
    await page.get_by_label("Name").fill("CAD north")
    await page.get_by_label("Role").select_option(label="Dispatcher")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#e-centre")).to_have_text("a dispatcher key needs a dispatch centre")
    await expect(page.get_by_label("Name")).to_have_value("CAD north")

    await page.get_by_label("Dispatch centre").fill("north")
    await page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New key")
    await expect(secret).to_have_text(re.compile(r"^rsp_"))
    key = (await secret.text_content() or "").strip()
    await snap(page, "coordinator-keys")
    async with httpx.AsyncClient(base_url=web.base_url) as client:
        headers = {"Authorization": f"Bearer {key}"}
        assert (await client.get("/v1/incidents", headers=headers)).status_code == 200

        await page.goto(web.url("/console/keys"))
        await expect(page.get_by_label("New key")).to_have_count(0)
        await page.get_by_role("button", name="Revoke CAD north").click()
        await expect(page.get_by_role("row", name=re.compile("CAD north"))).to_contain_text(
            "Revoked"
        )
        assert (await client.get("/v1/incidents", headers=headers)).status_code == 401

    await page.goto(web.url("/console/audit?action=key."))
    await expect(page.get_by_role("row", name=re.compile("key.revoke"))).to_contain_text(
        "Test Coordinator"
    )
