"""The volunteer pages over HTTP (the browser tests are in test_me_browser.py):
sign-up by code, my page, bad input answered on the page with nothing stored."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Certification, Message, Volunteer
from tests.factories import create_volunteer, next_phone


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:500]
    return found.group(1)


async def last_code(session: AsyncSession, phone: str) -> str:
    body = await session.scalar(
        select(Message.body).where(Message.phone == phone).order_by(Message.created_at.desc())
    )
    found = re.search(r"\b(\d{6})\b", body or "")
    assert found is not None
    return found.group(1)


async def sign_up(client: httpx.AsyncClient, session: AsyncSession, phone: str) -> httpx.Response:
    join = await client.get("/join")
    token = csrf_of(join)
    sent = await client.post(
        "/join",
        data={
            "csrf_token": token,
            "name": "Anna",
            "phone": phone,
            "language": "en",
            "consent": "yes",
        },
    )
    assert sent.status_code == 200, sent.text
    code = await last_code(session, phone)
    return await client.post(
        "/me/code", data={"csrf_token": csrf_of(sent), "phone": phone, "code": code}
    )


async def test_a_sign_up_ends_on_my_page_which_says_what_is_missing(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    phone = next_phone()
    entered = await sign_up(client, session, phone)
    assert entered.status_code == 303
    assert entered.headers["location"] == "/me/"

    mine = await client.get("/me/")

    assert mine.status_code == 200
    assert "No, you cannot be alerted now" in mine.text
    assert "You have no valid CPR certificate" in mine.text
    assert "content-security-policy" in mine.headers


async def test_a_known_number_at_join_gets_the_same_page(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    known = await create_volunteer(session, name="Bo")
    assert known.phone is not None
    pages = []
    for phone in (known.phone, next_phone()):
        join = await client.get("/join")
        sent = await client.post(
            "/join",
            data={
                "csrf_token": csrf_of(join),
                "name": "X",
                "phone": phone,
                "language": "en",
                "consent": "yes",
            },
        )
        pages.append(sent.text.replace(phone, "PHONE"))
    pages = [re.sub(r'value="[^"]{20,}"', "", page) for page in pages]
    assert pages[0] == pages[1]


async def test_join_without_consent_or_with_a_bad_number_stores_nothing(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    join = await client.get("/join")
    token = csrf_of(join)
    before = await session.scalar(select(func.count()).select_from(Message))

    no_consent = await client.post(
        "/join", data={"csrf_token": token, "name": "<b>Eve</b>", "phone": next_phone()}
    )
    bad_phone = await client.post(
        "/join",
        data={"csrf_token": token, "name": "Eve", "phone": "12", "consent": "yes"},
    )

    assert no_consent.status_code == bad_phone.status_code == 422
    assert "You must agree to sign up." in no_consent.text
    assert "&lt;b&gt;Eve&lt;/b&gt;" in no_consent.text
    assert "Traceback" not in bad_phone.text
    assert await session.scalar(select(func.count()).select_from(Message)) == before


async def test_a_form_without_its_csrf_token_is_refused(client: httpx.AsyncClient) -> None:
    refused = await client.post("/join", data={"name": "Eve", "phone": next_phone()})
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]


async def test_my_page_needs_a_session(client: httpx.AsyncClient) -> None:
    answer = await client.get("/me/")
    assert (answer.status_code, answer.headers["location"]) == (303, "/me/login")


async def test_a_fake_pdf_is_refused_on_the_page_and_nothing_is_stored(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    phone = next_phone()
    await sign_up(client, session, phone)
    mine = await client.get("/me/")
    refused = await client.post(
        "/me/certificates",
        data={
            "csrf_token": csrf_of(mine),
            "kind": "cpr",
            "issued_on": "2026-01-01",
            "expires_on": "2028-01-01",
            "issuer": "HLR-rådet",
        },
        files={"attachment": ("certificate.pdf", b"not a pdf at all", "application/pdf")},
    )
    assert refused.status_code == 422
    assert "The file is not a PDF or a photo" in refused.text
    assert 'value="HLR-rådet"' in refused.text
    volunteer_id = await session.scalar(select(Volunteer.id).where(Volunteer.phone == phone))
    count = select(func.count()).select_from(Certification)
    assert await session.scalar(count.where(Certification.volunteer_id == volunteer_id)) == 0


async def test_metrics_stay_plain_text(client: httpx.AsyncClient) -> None:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert "content-security-policy" not in answer.headers
