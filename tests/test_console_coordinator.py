"""The coordinator's console, in a real browser against a real server."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Page, expect

from tests.console_harness import WebServer, sign_in, snap
from tests.factories import STOCKHOLM, create_volunteer


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


async def test_a_coordinator_verifies_a_pending_certification(page: Page, web: WebServer) -> None:
    await web.run(
        lambda session: create_volunteer(
            session, name="Pia Pending", certification="cpr_aed", certification_status="pending"
        )
    )
    await sign_in(page, web, await web.staff(name="Vera Verifier"))
    await expect(page.get_by_role("heading", name="Certifications")).to_be_visible()
    row = page.get_by_role("row", name=re.compile("Pia Pending"))
    await expect(row).to_contain_text("Waiting for review")
    await snap(page, "coordinator-certifications")
    await row.get_by_role(
        "button", name="Verify the CPR and AED certification of Pia Pending"
    ).click()
    await expect(page.get_by_role("row", name=re.compile("Pia Pending"))).to_have_count(0)

    await page.get_by_role("link", name="Renewals").click()
    await page.get_by_label("Expiring within (days)").fill("3650")
    await page.get_by_role("button", name="Show").click()
    verified = page.get_by_role("row", name=re.compile("Pia Pending"))
    await expect(verified).to_contain_text("Verified")
    await expect(verified).to_contain_text("Vera Verifier")


async def test_a_coordinator_adds_an_aed_by_clicking_the_map(page: Page, web: WebServer) -> None:
    await sign_in(page, web, await web.staff(), path="/console/aeds")
    await page.get_by_label("Address").fill("Centralstationen, Stockholm")
    await page.get_by_role("button", name="Add AED").click()
    await expect(page.locator("#e-lat")).to_have_text("Required.")
    await expect(page.get_by_label("Address")).to_have_value("Centralstationen, Stockholm")

    await page.get_by_role("region", name="Map").click(position={"x": 180, "y": 120})
    await expect(page.get_by_label("Latitude")).not_to_have_value("")
    await page.get_by_label("Where exactly, cabinet code").fill("Main hall, cabinet code 1234")
    await page.get_by_label("Opening hours").fill("mon-fri 06:00-22:00")
    await page.get_by_role("button", name="Add AED").click()
    await expect(page.get_by_role("status")).to_have_text(
        "AED at Centralstationen, Stockholm added."
    )
    row = page.get_by_role("row", name=re.compile("Centralstationen"))
    await expect(row).to_contain_text("mon,tue,wed,thu,fri 06:00-22:00")
    await snap(page, "coordinator-aeds")


async def test_an_aed_import_shows_each_rejected_line(page: Page, web: WebServer) -> None:
    await sign_in(page, web, await web.staff(), path="/console/aeds")
    csv = (
        "lat,lon,address,description,access,status\n"
        "59.33,18.06,Sergels torg,,always,active\n"
        "91,18.06,Nowhere,,always,active\n"
    )
    await page.get_by_label("CSV or GeoJSON file").set_input_files(
        files=[{"name": "aeds.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    await page.get_by_role("button", name="Import").click()
    await expect(page.get_by_text("1 AED imported.")).to_be_visible()
    await expect(page.get_by_role("row", name=re.compile("^3 "))).to_contain_text("location.lat")


async def test_a_coordinator_finds_suspends_and_erases_a_volunteer(
    page: Page, web: WebServer
) -> None:
    name = "<i>Olle</i> Registered"
    volunteer = await web.run(
        lambda session: create_volunteer(session, near=STOCKHOLM, name=name, language="en")
    )
    await sign_in(page, web, await web.staff(), path="/console/volunteers")
    await page.get_by_label("Name or phone").fill("olle")
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"/console/volunteers\?q=olle"))
    await page.get_by_role("link", name=name).click()
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    await expect(page.locator("main i")).to_have_count(0)
    await snap(page, "coordinator-volunteer")

    await page.get_by_label("Reason for suspending").fill("Complaint under review")
    await page.get_by_role("button", name="Suspend").click()
    await expect(page.get_by_text("Suspended: Complaint under review")).to_be_visible()
    await page.get_by_role("button", name="Reinstate").click()
    await expect(page.get_by_role("button", name="Suspend")).to_be_visible()

    assert volunteer.phone is not None
    confirm = page.get_by_label(re.compile("Type the phone number"))
    await confirm.fill("+46 70 000 0000")
    await page.get_by_role("button", name="Erase this volunteer").click()
    await expect(page.locator("#e-confirm")).to_have_text("Type the phone number exactly as shown.")
    await page.get_by_label(re.compile("Type the phone number")).fill(volunteer.phone)
    await page.get_by_role("button", name="Erase this volunteer").click()
    await expect(page.get_by_role("heading", name="Volunteers")).to_be_visible()
    answer = await page.goto(web.url(f"/console/volunteers/{volunteer.id}"))
    assert answer is not None
    assert answer.status == 404
