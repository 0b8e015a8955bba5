"""CSV import: consent is never assumed, a NUL refuses only its line, reports are capped."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Aed, Message, Volunteer
from app.core.settings import Settings
from app.registry.eligibility import ineligibility_reason
from app.registry.uploads import REPORTED_ERRORS
from tests.factories import create_key, create_volunteer, make_settings
from tests.test_webhooks_sms import reply
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, MESSAGING_SERVICE_SID

CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def settings() -> Settings:
    return make_settings(
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_messaging_service_sid=MESSAGING_SERVICE_SID,
        public_base_url="https://responder.example.org",
    )


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


async def upload(client: httpx.AsyncClient, admin: dict[str, str], body: bytes) -> httpx.Response:
    return await client.post("/v1/volunteers/import", content=body, headers={**admin, **CSV})


async def by_phone(session: AsyncSession, phone: str) -> Volunteer:
    volunteer = await session.scalar(select(Volunteer).where(Volunteer.phone == phone))
    assert volunteer is not None
    return volunteer


async def test_without_a_consent_cell_a_volunteer_is_asked_by_sms_and_not_alertable(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession, clock: FrozenClock
) -> None:
    body = (
        b"name,phone,language,email,contact_preference,consent\n"
        b"Anna,0701234567,sv,,voice,yes\n"
        b"Bo,0701234568,en,,,\n"
    )

    report = (await upload(client, admin, body)).json()

    assert (report["created"], report["rejected"]) == (2, 0)
    anna, bo = await by_phone(session, "+46701234567"), await by_phone(session, "+46701234568")
    assert (anna.consent_at, anna.consent_requested_at) == (clock.now(), None)
    assert anna.contact_preference == "voice"
    assert (bo.consent_at, bo.consent_requested_at) == (None, clock.now())
    asked = (await session.scalars(select(Message).where(Message.purpose == "consent"))).all()
    assert [(message.volunteer_id, message.phone) for message in asked] == [(bo.id, bo.phone)]
    assert "Reply YES" in (asked[0].body or "")
    reason = await session.scalar(
        select(ineligibility_reason(Volunteer, now=clock.now(), today=clock.now().date())).where(
            Volunteer.id == bo.id
        )
    )
    assert reason == "no_consent"


async def test_yes_to_the_consent_text_records_consent(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession, clock: FrozenClock
) -> None:
    await upload(client, admin, b"name,phone,language,email\nBo,0701234568,en,\n")

    answer = await reply(client, "+46701234568", "yes")

    assert "consent is recorded" in answer
    bo = await by_phone(session, "+46701234568")
    await session.refresh(bo)
    assert bo.consent_at == clock.now()


async def test_the_coordinator_lists_those_without_recorded_consent(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    earlier = await create_volunteer(session)  # registered before: consent recorded
    await upload(client, admin, b"name,phone,language,email\nBo,0701234568,en,\n")

    missing = await client.get("/v1/volunteers", params={"consent": "missing"}, headers=admin)
    recorded = await client.get("/v1/volunteers", params={"consent": "recorded"}, headers=admin)

    assert [item["phone"] for item in missing.json()["items"]] == ["+46701234568"]
    assert str(earlier.id) in {item["id"] for item in recorded.json()["items"]}
    assert earlier.consent_at == datetime(2026, 1, 1, tzinfo=UTC)


async def test_a_nul_refuses_only_its_line_and_a_bad_consent_cell_is_a_line_error(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    body = (
        b"name,phone,language,email,consent\n"
        b"Anna,0701234567,sv,,yes\n"
        b"B\x00o,0701234568,sv,,yes\n"
        b"Cid,0701234569,sv,,maybe\n"
        b"Dan,0701234570,sv,,\n"
    )

    report = (await upload(client, admin, body)).json()

    assert (report["created"], report["rejected"]) == (2, 2)
    assert [(error["line"], error["field"]) for error in report["errors"]] == [
        (3, None),
        (4, "consent"),
    ]


async def test_an_error_report_names_the_first_lines_and_counts_them_all(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    bad = "".join(f"Person {number},not a phone,sv,\n" for number in range(1000))
    body = ("name,phone,language,email\nAnna,0701234567,sv,\n" + bad).encode()

    report = (await upload(client, admin, body)).json()

    assert (report["created"], report["rejected"]) == (1, 1000)
    assert len(report["errors"]) == REPORTED_ERRORS
    assert report["errors"][0]["line"] == 3


async def test_an_aed_file_with_a_nul_refuses_only_that_line_or_feature(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    csv_body = (
        b"lat,lon,address,description,access,status\n"
        b"59.3303,18.0588,Centralstationen,,always,active\n"
        b"59.3326,18.0649,Drottning\x00gatan 1,,always,active\n"
    )
    geojson = (
        '{"type": "FeatureCollection", "features": ['
        '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [18.06, 59.33]},'
        ' "properties": {"address": "Hötorget"}},'
        '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [18.07, 59.34]},'
        ' "properties": {"address": "Slussen\\u0000"}}]}'
    ).encode()

    from_csv = await client.post(
        "/v1/aeds/import", content=csv_body, headers={**admin, "Content-Type": "text/csv"}
    )
    from_geojson = await client.post(
        "/v1/aeds/import",
        content=geojson,
        headers={**admin, "Content-Type": "application/geo+json"},
    )

    assert from_csv.status_code == from_geojson.status_code == 200
    assert [(e["line"], e["field"]) for e in from_csv.json()["errors"]] == [(3, None)]
    assert [(e["line"], e["field"]) for e in from_geojson.json()["errors"]] == [(1, "properties")]
    assert set(await session.scalars(select(Aed.address))) == {"Centralstationen", "Hötorget"}


async def test_an_export_neutralises_formulas_and_the_registry_keeps_them_as_given(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    names = ['=HYPERLINK("http://evil.example","x")', "+1 Anna", "-Bo", "@Cid", "Dan"]
    lines = "".join(
        f'"{name.replace(chr(34), chr(34) * 2)}",070123456{n},sv,\n' for n, name in enumerate(names)
    )
    await upload(client, admin, ("name,phone,language,email\n" + lines).encode())

    exported = await client.get(
        "/v1/volunteers/export", params={"consent": "missing"}, headers=admin
    )

    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["name", "phone", "language", "email", "consent", "contact_preference"]
    cells = [cell for row in rows[1:] for cell in row]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@"))]
    assert sorted(row[0] for row in rows[1:]) == sorted(
        "'" + name if name[0] in "=+-@" else name for name in names
    )
    assert set(await session.scalars(select(Volunteer.name))) >= set(names)
    await session.execute(delete(Message))
    await session.execute(delete(Volunteer))
    again = (await upload(client, admin, exported.content)).json()
    assert (again["created"], again["rejected"]) == (5, 0)
