"""A volunteer's own pages in a real browser, against a real server, worker and the
fake Twilio: sign up, certificate, verification in the console, an alert, a pause."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Volunteer
from app.embedded import EmbeddedPostgres
from tests.conftest import TEMPLATE
from tests.console_harness import WebServer, browser_page, serve, sign_in, snap
from tests.factories import STOCKHOLM, create_key, create_volunteer, next_phone, offset

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
SMS_NUMBER = "+46766860000"
FOLLOW_UP = "+46101234567"


@pytest.fixture(scope="module")
async def web(pg: EmbeddedPostgres) -> AsyncIterator[WebServer]:
    """One server for the module; every browser here is 127.0.0.1, so the per-IP
    limit of code requests is raised (its own tests are at the service level)."""
    async with serve(
        pg,
        template=TEMPLATE,
        signup_codes_per_ip_per_hour=1000,
        sms_number=SMS_NUMBER,
        follow_up_phone=FOLLOW_UP,
    ) as server:
        yield server


def _text_to(web: WebServer, phone: str, *, containing: str, after: int = 0) -> str:
    """The newest text sent to ``phone`` containing ``containing`` (waiting for the worker)."""
    while True:
        found = [
            sent.form["Body"]
            for sent in web.fake.messages()[after:]
            if sent.form.get("To") == phone and containing in sent.form.get("Body", "")
        ]
        if found:
            return found[-1]
        web.fake.wait_for(len(web.fake.requests) + 1, timeout=10)


async def code_sent_to(web: WebServer, phone: str, *, after: int = 0) -> str:
    body = await asyncio.to_thread(_text_to, web, phone, containing="Responder:", after=after)
    found = re.search(r"\b(\d{6})\b", body)
    assert found is not None, body
    return found.group(1)


async def join(page: Page, web: WebServer, *, phone: str, name: str = "Anna Svensson") -> None:
    await page.goto(web.url("/join"))
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Mobile number").fill(phone)
    await page.get_by_label("Language of your texts").select_option(label="English")
    await page.get_by_label("I agree").check()
    await page.get_by_role("button", name="Send me a code").click()
    await expect(page.get_by_role("heading", name="Enter your code")).to_be_visible()


async def enter(page: Page, code: str) -> None:
    await page.get_by_label("Code").fill(code)
    await page.get_by_role("button", name="Continue").click()


async def post_incident(web: WebServer, *, at: tuple[float, float], ref: str) -> str:
    headers = await web.run(lambda session: create_key(session, role="dispatcher", centre="SOS"))
    async with httpx.AsyncClient(base_url=web.base_url) as client:
        created = await client.post(
            "/v1/incidents",
            headers=headers,
            json={
                "external_ref": ref,
                "kind": "cardiac_arrest",
                "location": {"lat": at[0], "lon": at[1]},
                "address": "Drottninggatan 1, Stockholm",
            },
        )
    assert created.status_code == 201, created.text
    incident_id: str = created.json()["id"]
    return incident_id


async def volunteer_id_of(web: WebServer, phone: str) -> uuid.UUID:
    async def find(session: AsyncSession) -> uuid.UUID:
        found = await session.scalar(select(Volunteer.id).where(Volunteer.phone == phone))
        assert found is not None
        return found

    return await web.run(find)


async def test_sign_up_certificate_verified_alerted_then_paused(
    page: Page, browser: Browser, web: WebServer
) -> None:
    phone = next_phone()
    await join(page, web, phone=phone)
    await snap(page, "volunteer-code")
    await enter(page, await code_sent_to(web, phone))

    await expect(page.get_by_role("heading", name="Hello, Anna Svensson")).to_be_visible()
    status = page.get_by_role("status").first
    await expect(status).to_contain_text("You have no valid CPR certificate")
    await expect(status).to_contain_text("You have no place and no current location")

    home = offset(STOCKHOLM, bearing_deg=45, distance_m=150)
    await page.get_by_label("Name of the place").fill("home")
    await page.get_by_label("Latitude").fill(f"{home.lat:.6f}")
    await page.get_by_label("Longitude").fill(f"{home.lon:.6f}")
    await page.get_by_role("button", name="Add place").click()
    await expect(page.get_by_role("button", name="Remove home")).to_be_visible()

    await page.get_by_label("Kind").select_option(label="CPR")
    await page.get_by_label("Issued on").fill("2026-01-15")
    await page.get_by_label("Expires on").fill("2028-01-15")
    await page.get_by_label("Issuer").fill("Svenska HLR-rådet")
    await page.get_by_label("Photo or PDF of the certificate (optional)").set_input_files(
        files=[{"name": "hlr.pdf", "mimeType": "application/pdf", "buffer": PDF}]
    )
    await page.get_by_role("button", name="Send for review").click()
    await expect(page.get_by_role("status").first).to_have_text(
        re.compile("Your certificate is waiting for the coordinator's review.")
    )
    await snap(page, "volunteer-my-page-pending")

    async with browser_page(browser) as console:
        await sign_in(console, web, await web.staff(name="Vera Verifier"))
        row = console.get_by_role("row", name=re.compile("Anna Svensson"))
        await expect(row.get_by_role("link", name="Attached file")).to_be_visible()
        await row.get_by_role(
            "button", name="Verify the CPR certification of Anna Svensson"
        ).click()
        await expect(console.get_by_role("row", name=re.compile("Anna Svensson"))).to_have_count(0)

    await page.reload()
    await expect(page.get_by_role("status").first).to_have_text("Yes, you can be alerted now.")
    await snap(page, "volunteer-my-page")

    sent_before = len(web.fake.messages())
    await post_incident(web, at=(STOCKHOLM.lat, STOCKHOLM.lon), ref="CAD-SELF-1")
    alert = await asyncio.to_thread(_text_to, web, phone, containing="CPR ALERT", after=sent_before)
    assert "Drottninggatan 1" in alert
    code = alert.split("YES ")[1].split()[0]
    url = web.url("/webhooks/twilio/sms")
    body, headers = web.fake.inbound_sms(url, from_phone=phone, body=f"YES {code}")
    async with httpx.AsyncClient() as client:
        assert (await client.post(url, content=body, headers=headers)).status_code == 200

    await page.reload()
    await page.get_by_role("group", name="Did you give CPR?").get_by_label("Yes").check()
    await page.get_by_label("I would like someone to contact me to talk about it").check()
    await page.get_by_role("button", name="Send report").click()
    await expect(
        page.get_by_label("I would like someone to contact me to talk about it")
    ).to_be_checked()
    request = await asyncio.to_thread(_text_to, web, FOLLOW_UP, containing="asks to be contacted")
    assert "Anna Svensson" in request
    async with browser_page(browser) as console:
        await sign_in(console, web, await web.staff(), path="/console/reports?contact=true")
        row = console.get_by_role("row", name=re.compile("Anna Svensson"))
        await expect(row).to_contain_text("Wants to be contacted")
        await expect(row.get_by_role("link", name=phone)).to_have_attribute("href", f"tel:{phone}")

    await page.get_by_label("Pause for how many hours?").fill("8")
    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("status").first).to_contain_text("You have paused alerts until")

    web.clock.advance(timedelta(minutes=11))
    elsewhere = offset(STOCKHOLM, bearing_deg=180, distance_m=250)
    second = await post_incident(web, at=(elsewhere.lat, elsewhere.lon), ref="CAD-SELF-2")
    admin = await web.run(lambda session: create_key(session, role="admin"))
    async with httpx.AsyncClient(base_url=web.base_url) as client:
        explained = await client.get(
            f"/v1/incidents/{second}/explain",
            params={"volunteer_id": str(await volunteer_id_of(web, phone))},
            headers=admin,
        )
    assert explained.json()["outcome"] == "paused"


async def test_five_wrong_codes_lock_the_code(page: Page, web: WebServer) -> None:
    phone = next_phone()
    await join(page, web, phone=phone)
    code = await code_sent_to(web, phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        await enter(page, wrong)
        await expect(page.locator("#e-code")).to_have_text(
            f"That code is not right. Tries left: {left}."
        )
    await enter(page, wrong)
    await expect(page.locator("#e-code")).to_contain_text("Too many wrong tries")
    await enter(page, code)
    await expect(page.locator("#e-code")).to_contain_text("Too many wrong tries")


async def test_an_expired_code_is_refused(page: Page, web: WebServer) -> None:
    phone = next_phone()
    await join(page, web, phone=phone)
    code = await code_sent_to(web, phone)
    web.clock.advance(timedelta(minutes=10, seconds=1))
    await enter(page, code)
    await expect(page.locator("#e-code")).to_have_text("This code has expired. Ask for a new code.")


async def test_a_known_number_at_join_reveals_nothing(page: Page, web: WebServer) -> None:
    known = await web.run(
        lambda session: create_volunteer(session, name="Kim Known", language="en")
    )
    assert known.phone is not None
    seen = []
    for phone in (known.phone, next_phone()):
        await join(page, web, phone=phone, name="Someone Else")
        text = await page.locator("main").inner_text()
        seen.append(text.replace(phone, "<number>"))
    assert seen[0] == seen[1]
    login = await asyncio.to_thread(_text_to, web, known.phone, containing="login code")
    assert "login code" in login


async def test_a_fake_pdf_is_refused_and_html_in_a_name_is_text_in_the_console(
    page: Page, browser: Browser, web: WebServer
) -> None:
    phone = next_phone()
    name = "<b>Eve</b><script>document.title='owned'</script>"
    await join(page, web, phone=phone, name=name)
    await enter(page, await code_sent_to(web, phone))
    await page.get_by_label("Issued on").fill("2026-01-15")
    await page.get_by_label("Expires on").fill("2028-01-15")
    await page.get_by_label("Issuer").fill("HLR-rådet")
    await page.get_by_label("Photo or PDF of the certificate (optional)").set_input_files(
        files=[{"name": "hlr.pdf", "mimeType": "application/pdf", "buffer": b"just text"}]
    )
    await page.get_by_role("button", name="Send for review").click()
    await expect(page.locator("#e-attachment")).to_have_text(
        "The file is not a PDF or a photo (JPEG, PNG, WebP, HEIC)."
    )
    await expect(page.get_by_label("Issuer")).to_have_value("HLR-rådet")
    await page.get_by_label("Photo or PDF of the certificate (optional)").set_input_files([])
    await page.get_by_role("button", name="Send for review").click()
    await expect(page.get_by_role("status").first).to_contain_text("waiting for the coordinator")

    async with browser_page(browser) as console:
        await sign_in(console, web, await web.staff())
        await expect(console.get_by_role("row", name=re.compile("Eve"))).to_contain_text(
            "<b>Eve</b><script>"
        )
        assert await console.title() != "owned"


async def test_my_page_in_swedish_says_how_to_undo_stop(browser: Browser, web: WebServer) -> None:
    phone = next_phone()
    async with browser_page(browser, locale="sv-SE") as page:
        await page.goto(web.url("/join"))
        await page.get_by_label("Namn").fill("Sven")
        await page.get_by_label("Mobilnummer").fill(phone)
        await page.get_by_label("Jag godkänner").check()
        await page.get_by_role("button", name="Skicka en kod till mig").click()
        await page.get_by_label("Kod").fill(await code_sent_to(web, phone))
        await page.get_by_role("button", name="Fortsätt").click()
        await page.get_by_role("button", name="Stoppa alla SMS").click()
        await expect(page.get_by_role("status").first).to_contain_text(
            f"skickar START till {SMS_NUMBER}"
        )
        await snap(page, "volunteer-my-page-sv")


async def test_a_volunteer_asks_for_calls_and_a_coordinator_changes_it_back(
    page: Page, browser: Browser, web: WebServer
) -> None:
    phone = next_phone()
    await join(page, web, phone=phone)
    await enter(page, await code_sent_to(web, phone))
    await page.get_by_label("How alerts reach you").select_option(
        label="By a phone call instead of the SMS (a landline, say)"
    )
    await page.get_by_role("button", name="Save how alerts reach you").click()
    await expect(page.get_by_label("How alerts reach you")).to_have_value("voice")
    volunteer_id = await volunteer_id_of(web, phone)

    async with browser_page(browser) as console:
        await sign_in(console, web, await web.staff(), path=f"/console/volunteers/{volunteer_id}")
        choice = console.get_by_label("How alerts reach them")
        await expect(choice).to_have_value("voice")
        await choice.select_option(label="By SMS, and a phone call if I have not answered")
        await console.get_by_role("button", name="Save how alerts reach them").click()
        await expect(console.get_by_label("How alerts reach them")).to_have_value("sms_then_voice")

    async def preference(session: AsyncSession) -> str:
        volunteer = await session.get_one(Volunteer, volunteer_id)
        return volunteer.contact_preference

    assert await web.run(preference) == "sms_then_voice"
