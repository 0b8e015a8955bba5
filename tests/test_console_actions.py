"""The console's other actions, as a person does them: a dispatcher updates, moves and
closes an incident; a coordinator edits an AED and manages staff."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.console_harness import WebServer, sign_in
from tests.factories import STOCKHOLM, create_aed, create_volunteer, offset
from tests.test_console_dispatcher import _post_incident, _reply


async def test_a_dispatcher_updates_moves_and_closes_an_incident(
    page: Page, web: WebServer
) -> None:
    volunteer = await web.run(
        lambda session: create_volunteer(
            session, near=offset(STOCKHOLM, bearing_deg=0, distance_m=80), name="Rut", language="en"
        )
    )
    incident_id = await _post_incident(web, "north", "CAD-ACT-1")
    assert volunteer.phone is not None
    await _reply(web, volunteer.phone, "YES")
    await sign_in(page, web, await web.staff(role="dispatcher", centre="north"))
    await page.goto(web.url(f"/console/incidents/{incident_id}"))
    await expect(page.get_by_role("row", name=re.compile("Rut"))).to_be_visible()

    await page.get_by_label("Address").fill("")
    await page.get_by_role("button", name="Save and tell the responders").click()
    await expect(page.locator("#e-address")).to_have_text("Required.")
    await page.get_by_label("Address").fill("Drottninggatan 3, Stockholm")
    await page.get_by_label("Access notes").fill("Gate code 9876, 2nd floor")
    await page.get_by_role("button", name="Save and tell the responders").click()
    await expect(page.get_by_text("Incident updated")).to_be_visible()
    sent = [m.form["Body"] for m in web.fake.messages() if m.form.get("To") == volunteer.phone]
    await expect(page.get_by_label("Access notes")).to_have_value("Gate code 9876, 2nd floor")

    await page.get_by_label("Latitude").fill("91")
    await page.get_by_role("button", name="Move the incident here").click()
    await expect(page.locator("#e-lat")).to_have_text("Too large.")
    moved = offset(STOCKHOLM, bearing_deg=90, distance_m=40)
    await page.get_by_label("Latitude").fill(f"{moved.lat:.6f}")
    await page.get_by_label("Longitude").fill(f"{moved.lon:.6f}")
    await page.get_by_role("button", name="Move the incident here").click()
    await expect(page.get_by_label("Latitude")).to_have_value(re.compile(f"^{moved.lat:.4f}"))

    await page.get_by_label("Outcome").fill("ROSC on scene")
    await page.get_by_role("button", name="Close the incident").click()
    await expect(page.get_by_role("status")).to_have_text("Status: Closed")
    await expect(page.get_by_role("button", name="Close the incident")).to_have_count(0)
    assert sent  # the alert reached the volunteer before the update


async def test_a_coordinator_edits_an_aeds_hours_status_and_notes(
    page: Page, web: WebServer
) -> None:
    await web.run(lambda session: create_aed(session, at=STOCKHOLM, address="Sergels torg 1"))
    await sign_in(page, web, await web.staff(), path="/console/aeds")
    await page.get_by_role("link", name="Edit Sergels torg 1").click()
    await page.get_by_label("Opening hours").fill("someday 25:00")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#e-access")).to_contain_text("someday")
    await expect(page.get_by_label("Opening hours")).to_have_value("someday 25:00")
    await page.get_by_label("Opening hours").fill("sat-sun 10:00-16:00")
    await page.get_by_label("Status").select_option(label="Out of service")
    await page.get_by_label("Where exactly, cabinet code").fill("Moved to the kiosk")
    await page.get_by_role("button", name="Save").click()
    row = page.get_by_role("row", name=re.compile("Sergels torg 1"))
    await expect(row).to_contain_text("sat,sun 10:00-16:00")
    await expect(row).to_contain_text("Out of service")
    await expect(row).to_contain_text("Moved to the kiosk")


async def test_a_coordinator_invites_a_dispatcher_who_sets_a_password_and_signs_in(
    page: Page, web: WebServer
) -> None:
    await sign_in(page, web, await web.staff(), path="/console/staff")
    await page.get_by_label("Name").fill("Nils Nyman")
    await page.get_by_label("Email").fill("nils@example.org")
    await page.get_by_label("Role", exact=True).select_option(label="Dispatcher")
    await page.get_by_role("button", name="Invite").click()
    await expect(page.locator("#e-centre")).to_have_text("a dispatcher needs a dispatch centre")
    await page.get_by_label("Dispatch centre", exact=True).fill("south")
    await page.get_by_role("button", name="Invite").click()
    link = (await page.get_by_label("Password link").text_content() or "").strip()
    assert "/console/password/" in link

    await page.get_by_role("button", name="Sign out").click()
    await page.goto(web.url(link[link.index("/console/") :]))
    await page.get_by_label("New password").fill("short")
    await page.get_by_label("Repeat the password").fill("short")
    await page.get_by_role("button", name="Save password").click()
    await expect(page.locator("#e-password")).to_have_text(
        "At least 12 and at most 256 characters."
    )
    await page.get_by_label("New password").fill("a long enough passphrase")
    await page.get_by_label("Repeat the password").fill("a long enough passphrase")
    await page.get_by_role("button", name="Save password").click()
    await page.get_by_label("Email").fill("nils@example.org")
    await page.get_by_label("Password").fill("a long enough passphrase")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Incidents of south")).to_be_visible()
