"""The volunteer registry over HTTP: registration, changes, erasure, tokens, CSV import."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.uploads import MAX_IMPORT_BYTES
from app.core.clock import FrozenClock
from app.core.models import (
    Alert,
    ApiKey,
    AuditLog,
    Certification,
    LiveLocation,
    Message,
    Place,
    Volunteer,
)
from tests.factories import (
    STOCKHOLM,
    create_alert,
    create_incident,
    create_key,
    create_volunteer,
)

ANNA = {
    "name": "Anna Svensson",
    "phone": "+46701234567",
    "language": "sv",
    "email": "anna@example.se",
    "consent": True,
}


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


async def register(
    client: httpx.AsyncClient, admin: dict[str, str], **changes: object
) -> httpx.Response:
    return await client.post("/v1/volunteers", json={**ANNA, **changes}, headers=admin)


def error_fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [error["field"] for error in response.json().get("errors", [])]


async def test_registration_stores_consent_and_echoes_the_volunteer(
    client: httpx.AsyncClient, admin: dict[str, str], clock: FrozenClock
) -> None:
    response = await register(client, admin)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["phone"] == "+46701234567"
    assert body["status"] == "active"
    assert body["opted_out"] is False
    assert body["consent_at"] == clock.now().isoformat().replace("+00:00", "Z")
    uuid.UUID(body["id"])


async def test_a_national_number_is_normalised_to_e164(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await register(client, admin, phone="070-123 45 67")
    assert response.status_code == 201, response.text
    assert response.json()["phone"] == "+46701234567"


async def test_second_volunteer_with_the_same_number_gets_409(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    assert (await register(client, admin)).status_code == 201
    again = await register(client, admin, name="Someone Else", phone="0701234567")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    count = await session.scalar(select(func.count()).select_from(Volunteer))
    assert count == 1


@pytest.mark.parametrize("phone", ["12", "+46 70 12", "not a number", "+999123456789"])
async def test_a_malformed_phone_is_422_naming_the_field(
    client: httpx.AsyncClient, admin: dict[str, str], phone: str
) -> None:
    response = await register(client, admin, phone=phone)
    assert response.status_code == 422
    assert error_fields(response) == ["phone"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"consent": False}, "consent"),
        ({"language": "de"}, "language"),
        ({"nickname": "Anna"}, "nickname"),
        ({"name": ""}, "name"),
        ({"email": "not-an-address"}, "email"),
    ],
)
async def test_invalid_registrations_name_the_field_and_store_nothing(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    session: AsyncSession,
    changes: dict[str, object],
    field: str,
) -> None:
    response = await register(client, admin, **changes)
    assert response.status_code == 422
    assert field in error_fields(response)
    assert await session.scalar(select(func.count()).select_from(Volunteer)) == 0


async def test_the_list_pages_with_an_opaque_cursor(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    created = {str((await create_volunteer(session)).id) for _ in range(5)}
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await client.get("/v1/volunteers", params=params, headers=admin)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(created)
    assert len(seen) == 5


async def test_a_forged_cursor_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get("/v1/volunteers", params={"cursor": "garbage"}, headers=admin)
    assert response.status_code == 422
    assert error_fields(response) == ["cursor"]


async def test_a_limit_above_500_is_422(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get("/v1/volunteers", params={"limit": 501}, headers=admin)
    assert response.status_code == 422


async def test_find_a_volunteer_by_phone_in_any_format(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, phone="+46701234567")
    await create_volunteer(session)
    page = await client.get("/v1/volunteers", params={"phone": "070-1234567"}, headers=admin)
    assert [item["id"] for item in page.json()["items"]] == [str(volunteer.id)]


async def test_detail_shows_certifications_places_and_eligibility(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM)
    response = await client.get(f"/v1/volunteers/{volunteer.id}", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["eligible"] is True
    assert [cert["kind"] for cert in body["certifications"]] == ["cpr"]
    assert body["places"][0]["location"] == {"lat": STOCKHOLM.lat, "lon": STOCKHOLM.lon}


async def test_patch_changes_the_number_and_refuses_one_already_taken(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session)
    other = await create_volunteer(session)
    url = f"/v1/volunteers/{volunteer.id}"
    changed = await client.patch(url, json={"phone": "0739876543", "language": "en"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert changed.json()["phone"] == "+46739876543"
    assert changed.json()["language"] == "en"
    taken = await client.patch(url, json={"phone": other.phone}, headers=admin)
    assert taken.status_code == 409
    unchanged = await client.get(url, headers=admin)
    assert unchanged.json()["phone"] == "+46739876543"


async def test_the_contact_preference_is_set_at_registration_and_changed_by_patch(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    assert (await register(client, admin)).json()["contact_preference"] == "sms"
    landline = await register(client, admin, phone="0701112233", contact_preference="voice")
    assert landline.status_code == 201, landline.text
    assert landline.json()["contact_preference"] == "voice"
    url = f"/v1/volunteers/{landline.json()['id']}"
    changed = await client.patch(url, json={"contact_preference": "sms_then_voice"}, headers=admin)
    assert changed.json()["contact_preference"] == "sms_then_voice"
    for wrong in ("fax", None):
        refused = await client.patch(url, json={"contact_preference": wrong}, headers=admin)
        assert refused.status_code == 422
        assert error_fields(refused) == ["contact_preference"]
    assert (await client.get(url, headers=admin)).json()["contact_preference"] == "sms_then_voice"


async def test_patch_refuses_status_changes_and_nulls_of_required_fields(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session)
    url = f"/v1/volunteers/{volunteer.id}"
    assert (await client.patch(url, json={"status": "active"}, headers=admin)).status_code == 422
    nulled = await client.patch(url, json={"name": None}, headers=admin)
    assert nulled.status_code == 422
    assert error_fields(nulled) == ["name"]


async def test_suspended_volunteer_is_not_eligible_until_reinstated(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session)
    url = f"/v1/volunteers/{volunteer.id}"
    suspended = await client.post(f"{url}/suspend", json={"reason": "complaint"}, headers=admin)
    assert suspended.json()["status"] == "suspended"
    assert suspended.json()["suspended_reason"] == "complaint"
    assert (await client.get(url, headers=admin)).json()["eligible"] is False
    reinstated = await client.post(f"{url}/reinstate", headers=admin)
    assert reinstated.json()["status"] == "active"
    assert reinstated.json()["suspended_reason"] is None
    assert (await client.get(url, headers=admin)).json()["eligible"] is True


async def test_every_admin_change_is_audited_with_the_actor(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer_id = (await register(client, admin)).json()["id"]
    url = f"/v1/volunteers/{volunteer_id}"
    await client.patch(url, json={"name": "Anna S"}, headers=admin)
    await client.post(f"{url}/suspend", headers=admin)
    await client.post(f"{url}/reinstate", headers=admin)
    await client.post(f"{url}/tokens", headers=admin)
    await client.delete(url, headers=admin)
    rows = (
        await session.execute(
            select(AuditLog.action, AuditLog.actor_name, AuditLog.target_id).order_by(AuditLog.id)
        )
    ).all()
    assert [row.action for row in rows] == [
        "volunteer.create",
        "volunteer.update",
        "volunteer.suspend",
        "volunteer.reinstate",
        "volunteer.token",
        "volunteer.erase",
    ]
    assert {row.actor_name for row in rows} == {"coordinator"}
    assert {row.target_id for row in rows} == {volunteer_id}


async def test_a_volunteer_token_reaches_me_and_nothing_else(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session)
    issued = await client.post(f"/v1/volunteers/{volunteer.id}/tokens", headers=admin)
    assert issued.status_code == 201
    token = {"Authorization": f"Bearer {issued.json()['token']}"}
    me = await client.get("/v1/me", headers=token)
    assert me.status_code == 200
    assert me.json()["id"] == str(volunteer.id)
    assert (await client.get("/v1/volunteers", headers=token)).status_code == 403
    stored = await session.scalar(
        select(ApiKey.key_hash).where(ApiKey.volunteer_id == volunteer.id)
    )
    assert stored is not None
    assert issued.json()["token"] not in stored


async def test_erasure_removes_personal_data_and_keeps_anonymous_alerts(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    session: AsyncSession,
    clock: FrozenClock,
) -> None:
    volunteer = await create_volunteer(
        session, near=STOCKHOLM, live_at=STOCKHOLM, live_recorded_at=clock.now()
    )
    token = await create_key(session, role="volunteer", volunteer=volunteer)
    incident = await create_incident(session, created_at=clock.now())
    alert = await create_alert(session, incident=incident, volunteer=volunteer, now=clock.now())
    url = f"/v1/volunteers/{volunteer.id}"

    erased = await client.delete(url, headers=admin)

    assert erased.status_code == 204
    assert (await client.get(url, headers=admin)).status_code == 404
    assert (await client.delete(url, headers=admin)).status_code == 404
    assert (await client.get("/v1/me", headers=token)).status_code == 401
    stub = (
        await session.execute(
            select(Volunteer.name, Volunteer.phone, Volunteer.email, Volunteer.status).where(
                Volunteer.id == volunteer.id
            )
        )
    ).one()
    assert tuple(stub) == (None, None, None, "erased")
    for table in (Place, LiveLocation, ApiKey, Certification):
        remaining = await session.scalar(
            select(func.count()).select_from(table).where(table.volunteer_id == volunteer.id)
        )
        assert remaining == 0, table.__tablename__
    assert await session.scalar(select(Alert.id).where(Alert.id == alert.id)) == alert.id
    message = (
        await session.execute(
            select(Message.phone, Message.status).where(Message.alert_id == alert.id)
        )
    ).one()
    assert message.phone is None
    assert message.status == "failed"
    listed = await client.get("/v1/volunteers", headers=admin)
    assert str(volunteer.id) not in [item["id"] for item in listed.json()["items"]]


async def test_a_number_freed_by_erasure_can_register_again(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    first = (await register(client, admin)).json()["id"]
    await client.delete(f"/v1/volunteers/{first}", headers=admin)
    assert (await register(client, admin)).status_code == 201


async def test_unknown_volunteer_is_404(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await client.get(f"/v1/volunteers/{uuid.uuid4()}", headers=admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/volunteers", content=b"name=Anna", headers={**admin, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415


CSV_HEADERS = {"Content-Type": "text/csv; charset=utf-8"}


async def import_csv(
    client: httpx.AsyncClient, admin: dict[str, str], body: bytes, **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/volunteers/import", content=body, headers={**admin, **CSV_HEADERS, **headers}
    )


async def test_csv_import_keeps_valid_lines_and_reports_bad_ones_by_line(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    await create_volunteer(session, phone="+46705550000")
    body = (
        b"name,phone,language,email\n"
        b"Anna Svensson,070-123 45 67,sv,anna@example.se\n"
        b"Bo Ek,+46 70 12,sv,\n"
        b'"Ek, Cecilia",0731112233,en,\n'
        b"Dan,0701234567,sv,\n"
        b"Eva,0705550000,sv,\n"
        b"Fia,0709998877,fi,\n"
        b"\n"
        b"Gun,0708887766,,gun@example.se\n"
    )
    response = await import_csv(client, admin, body)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 3
    assert [(error["line"], error["field"]) for error in report["errors"]] == [
        (3, "phone"),
        (5, "phone"),
        (6, "phone"),
        (7, "language"),
    ]
    names = set(await session.scalars(select(Volunteer.name)))
    assert {"Anna Svensson", "Ek, Cecilia", "Gun"} <= names
    gun = await session.scalar(select(Volunteer).where(Volunteer.name == "Gun"))
    assert gun is not None
    assert gun.language == "sv"


async def test_csv_with_invalid_utf8_is_refused_whole_naming_the_line(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    body = b"name,phone,language,email\nAnna,0701234567,sv,\nB\xe5,0701234568,sv,\n"
    response = await import_csv(client, admin, body)
    assert response.status_code == 422
    assert error_fields(response) == ["line 3"]
    assert await session.scalar(select(func.count()).select_from(Volunteer)) == 0


async def test_csv_with_the_wrong_header_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await import_csv(client, admin, b"phone,name\n0701234567,Anna\n")
    assert response.status_code == 422
    assert error_fields(response) == ["line 1"]


async def test_an_import_that_is_not_csv_is_415(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await import_csv(
        client, admin, b'{"name": "Anna"}', **{"Content-Type": "application/json"}
    )
    assert response.status_code == 415


async def test_an_oversized_import_is_413_and_stores_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    line = b"Anna,0701234567,sv,\n"
    body = b"name,phone,language,email\n" + line * (MAX_IMPORT_BYTES // len(line) + 1)
    response = await import_csv(client, admin, body)
    assert response.status_code == 413
    assert await session.scalar(select(func.count()).select_from(Volunteer)) == 0


async def test_a_nul_character_is_refused_not_a_database_error(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    response = await register(client, admin, name="Anna\x00")
    assert response.status_code == 422
    assert error_fields(response) == ["name"]
    upload = await import_csv(client, admin, b"name,phone,language,email\nA\x00,0701234567,sv,\n")
    assert upload.status_code == 200
    assert [(error["line"], error["field"]) for error in upload.json()["errors"]] == [(2, None)]
    assert await session.scalar(select(func.count()).select_from(Volunteer)) == 0
