"""The dispatcher's console, in a real browser against a real server and worker.

Replies come in as Twilio would send them (signed webhooks), alerts go out to the
fake Twilio: what the page shows is what a dispatcher would see during an incident.
"""

from __future__ import annotations

import asyncio
import re

import httpx
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncSession

from tests.console_harness import Staff, WebServer, sign_in, snap
from tests.factories import STOCKHOLM, create_aed, create_key, create_volunteer, offset


async def _volunteers_near(web: WebServer, names: list[str]) -> list[str]:
    async def create(session: AsyncSession) -> list[str]:
        phones = []
        for index, name in enumerate(names):
            home = offset(STOCKHOLM, bearing_deg=90 * index, distance_m=60 + 120 * index)
            volunteer = await create_volunteer(session, near=home, name=name, language="en")
            assert volunteer.phone is not None
            phones.append(volunteer.phone)
        return phones

    return await web.run(create)


async def _reply(web: WebServer, phone: str, text: str) -> None:
    """The volunteer answers their alert by SMS: a signed webhook, as Twilio posts it."""
    alert = await asyncio.to_thread(_alert_to, web, phone)
    code = alert.split("YES ")[1].split()[0]
    url = web.url("/webhooks/twilio/sms")
    body, headers = web.fake.inbound_sms(url, from_phone=phone, body=f"{text} {code}")
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, content=body, headers=headers)
    assert answer.status_code == 200, answer.text


def _alert_to(web: WebServer, phone: str) -> str:
    """The alert text the worker sent to ``phone`` (waiting for the send to happen)."""
    seen = 0
    while True:
        for sent in web.fake.messages():
            if sent.form.get("To") == phone and "YES " in sent.form.get("Body", ""):
                return sent.form["Body"]
        seen = len(web.fake.requests) + 1
        web.fake.wait_for(seen, timeout=10)


async def _dispatcher(web: WebServer, centre: str = "north") -> Staff:
    return await web.staff(role="dispatcher", centre=centre, name="Dispatcher Dana")


async def _post_incident(web: WebServer, centre: str, ref: str) -> str:
    headers = await web.run(lambda session: create_key(session, role="dispatcher", centre=centre))
    async with httpx.AsyncClient(base_url=web.base_url) as client:
        created = await client.post(
            "/v1/incidents",
            headers=headers,
            json={
                "external_ref": ref,
                "kind": "cardiac_arrest",
                "location": {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon},
                "address": "Drottninggatan 1, Stockholm",
                "access_notes": "Door code 1234",
            },
        )
    assert created.status_code == 201, created.text
    incident_id: str = created.json()["id"]
    return incident_id


async def test_the_board_and_the_incident_page_follow_replies_live(
    page: Page, web: WebServer
) -> None:
    anna, bo = await _volunteers_near(web, ["Anna Responder", "Bo Decliner"])
    aed_at = offset(STOCKHOLM, bearing_deg=200, distance_m=150)
    await web.run(lambda session: create_aed(session, at=aed_at, address="Klarabergsgatan 3"))
    await sign_in(page, web, await _dispatcher(web))
    await expect(page.get_by_role("heading", name="Incidents of north")).to_be_visible()
    await expect(page.get_by_text("No open incidents.")).to_be_visible()

    incident_id = await _post_incident(web, "north", "CAD-LIVE-1")
    row = page.get_by_role("row", name=re.compile("CAD-LIVE-1"))
    await expect(row).to_be_visible()
    await expect(row.locator("[data-count=alerted]")).to_have_text("2")
    await _reply(web, bo, "NO")
    await expect(row.get_by_role("cell").nth(5)).to_have_text("1")
    await snap(page, "dispatcher-board")

    await row.get_by_role("link", name="CAD-LIVE-1").click()
    await expect(page.get_by_role("heading", name="Incident CAD-LIVE-1")).to_be_visible()
    await expect(page.get_by_text("Nobody has accepted yet.")).to_be_visible()
    await _reply(web, anna, "YES")
    responder = page.get_by_role("row", name=re.compile("Anna Responder"))
    await expect(responder).to_be_visible()
    await expect(responder.get_by_role("cell").nth(2)).to_have_text("CPR")
    await expect(responder.get_by_role("link", name=anna)).to_have_attribute("href", f"tel:{anna}")
    await expect(page.locator("#summary [data-count=accepted]")).to_have_text("1")
    await expect(page.get_by_text("A volunteer accepted: CPR")).to_be_visible()
    await expect(page.get_by_text("Bo Decliner")).to_have_count(0)
    await expect(page.get_by_text(re.compile(r"Klarabergsgatan 3, 150 m"))).to_be_visible()
    await snap(page, "dispatcher-incident")

    await page.get_by_label("Reason for cancelling").fill("Patient is breathing")
    await page.get_by_role("button", name="Cancel the incident").click()
    await expect(page.get_by_role("status")).to_have_text("Status: Cancelled")
    await expect(page.get_by_text("Incident cancelled")).to_be_visible()
    assert incident_id in page.url


async def test_a_dispatcher_creates_an_incident_by_placing_the_pin(
    page: Page, web: WebServer
) -> None:
    await sign_in(page, web, await _dispatcher(web, centre="south"))
    await page.get_by_role("link", name="New incident").first.click()
    await page.get_by_label("Address").fill("Sveavägen 10, Stockholm")
    await page.get_by_role("button", name="Create and alert").click()
    await expect(page.locator("#e-lat")).to_have_text("Required.")
    await expect(page.get_by_label("Address")).to_have_value("Sveavägen 10, Stockholm")

    await page.get_by_role("region", name="Map").click(position={"x": 200, "y": 150})
    await expect(page.get_by_label("Latitude")).not_to_have_value("")
    await snap(page, "dispatcher-new-incident")
    await page.get_by_role("button", name="Create and alert").click()
    await expect(page.get_by_role("heading", name=re.compile("^Incident C-"))).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("Not alerted")


async def test_a_dispatcher_cannot_open_another_centres_incident_nor_coordinator_pages(
    page: Page, web: WebServer
) -> None:
    elsewhere = await _post_incident(web, "west", "CAD-WEST-1")
    await sign_in(page, web, await _dispatcher(web, centre="east"))
    await expect(page.get_by_role("heading", name="Incidents of east")).to_be_visible()
    answer = await page.goto(web.url(f"/console/incidents/{elsewhere}"))
    assert answer is not None
    assert answer.status == 404
    await expect(page.get_by_role("heading", name=re.compile("no such page"))).to_be_visible()
    answer = await page.goto(web.url("/console/keys"))
    assert answer is not None
    assert answer.status == 403
    await expect(
        page.get_by_role("heading", name="You do not have access to this page.")
    ).to_be_visible()
