"""Certification lifecycle, the review queue, renewals and the reminder SMS."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import FrozenClock
from app.core.models import Certification, Message
from app.core.settings import Settings
from app.core.texts import segments
from app.registry.certifications import queue_certification_reminders
from tests.factories import create_key, create_volunteer

CPR = {
    "kind": "cpr_aed",
    "issued_on": "2026-03-01",
    "expires_on": "2028-03-01",
    "issuer": "Swedish Resuscitation Council",
    "reference": "HLR-12345",
}


@pytest.fixture
async def admin(session: AsyncSession) -> dict[str, str]:
    return await create_key(session, role="admin", name="coordinator")


async def add(
    client: httpx.AsyncClient, admin: dict[str, str], volunteer_id: uuid.UUID, **changes: object
) -> httpx.Response:
    return await client.post(
        f"/v1/volunteers/{volunteer_id}/certifications", json={**CPR, **changes}, headers=admin
    )


async def test_a_new_certification_is_pending_and_does_not_make_anyone_eligible(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    added = await add(client, admin, volunteer.id)
    assert added.status_code == 201, added.text
    assert added.json()["status"] == "pending"
    detail = await client.get(f"/v1/volunteers/{volunteer.id}", headers=admin)
    assert detail.json()["eligible"] is False


async def test_verify_makes_the_volunteer_eligible_and_records_who(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    certification_id = (await add(client, admin, volunteer.id)).json()["id"]
    verified = await client.post(f"/v1/certifications/{certification_id}/verify", headers=admin)
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "verified"
    assert verified.json()["decided_by"] == "coordinator"
    assert verified.json()["decided_at"] == clock.now().isoformat().replace("+00:00", "Z")
    detail = await client.get(f"/v1/volunteers/{volunteer.id}", headers=admin)
    assert detail.json()["eligible"] is True


async def test_revoke_needs_a_reason_and_ends_eligibility(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    certification_id = (await add(client, admin, volunteer.id)).json()["id"]
    await client.post(f"/v1/certifications/{certification_id}/verify", headers=admin)
    url = f"/v1/certifications/{certification_id}/revoke"
    assert (await client.post(url, json={}, headers=admin)).status_code == 422
    revoked = await client.post(url, json={"reason": "forged certificate"}, headers=admin)
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["status_reason"] == "forged certificate"
    detail = await client.get(f"/v1/volunteers/{volunteer.id}", headers=admin)
    assert detail.json()["eligible"] is False


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        (["verify"], "verify"),
        (["reject"], "verify"),
        (["reject"], "revoke"),
        ([], "revoke"),
        (["verify"], "reject"),
    ],
)
async def test_a_decision_out_of_order_is_409(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    session: AsyncSession,
    steps: list[str],
    refused: str,
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    certification_id = (await add(client, admin, volunteer.id)).json()["id"]
    for step in steps:
        body = {"reason": "checked"}
        done = await client.post(
            f"/v1/certifications/{certification_id}/{step}", json=body, headers=admin
        )
        assert done.status_code == 200
    response = await client.post(
        f"/v1/certifications/{certification_id}/{refused}", json={"reason": "x"}, headers=admin
    )
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"


async def test_deciding_an_unknown_certification_is_404(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.post(f"/v1/certifications/{uuid.uuid4()}/verify", headers=admin)
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"expires_on": "2026-02-28"}, "expires_on"),
        ({"kind": "lifeguard"}, "kind"),
        ({"issued_on": "yesterday"}, "issued_on"),
        ({"level": 2}, "level"),
    ],
)
async def test_invalid_certifications_are_422_naming_the_field(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    session: AsyncSession,
    changes: dict[str, object],
    field: str,
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    response = await add(client, admin, volunteer.id, **changes)
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]
    stored = await session.scalar(
        select(Certification.id).where(Certification.volunteer_id == volunteer.id)
    )
    assert stored is None


async def test_the_review_queue_lists_pending_certifications(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    await create_volunteer(session)
    pending = await create_volunteer(session, certification_status="pending")
    response = await client.get("/v1/certifications", params={"status": "pending"}, headers=admin)
    assert [item["volunteer_id"] for item in response.json()["items"]] == [str(pending.id)]


async def test_renewals_list_verified_certifications_expiring_within_n_days(
    client: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession, clock: FrozenClock
) -> None:
    today = clock.now().date()
    soon = await create_volunteer(session, expires_on=today + timedelta(days=30))
    await create_volunteer(session, expires_on=today + timedelta(days=31))
    await create_volunteer(session, expires_on=today - timedelta(days=1))
    await create_volunteer(
        session, expires_on=today + timedelta(days=5), certification_status="pending"
    )
    response = await client.get(
        "/v1/certifications", params={"expiring_within_days": 30}, headers=admin
    )
    assert response.status_code == 200
    assert [item["volunteer_id"] for item in response.json()["items"]] == [str(soon.id)]


async def test_an_unknown_status_filter_is_422(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await client.get("/v1/certifications", params={"status": "lost"}, headers=admin)
    assert response.status_code == 422


async def reminders(session: AsyncSession) -> list[tuple[str | None, str | None]]:
    rows = await session.execute(
        select(Message.phone, Message.body).where(Message.purpose == "cert_reminder")
    )
    return [(row.phone, row.body) for row in rows]


async def test_a_reminder_is_queued_once_per_certification_before_expiry(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    expires_on = clock.now().date() + timedelta(days=settings.cert_reminder_days)
    volunteer = await create_volunteer(session, expires_on=expires_on, language="en")
    await create_volunteer(session, expires_on=expires_on + timedelta(days=1))

    assert await queue_certification_reminders(session, now=clock.now(), settings=settings) == 1
    assert await queue_certification_reminders(session, now=clock.now(), settings=settings) == 0

    [(phone, body)] = await reminders(session)
    assert phone == volunteer.phone
    assert body is not None
    assert expires_on.isoformat() in body
    assert "Renew" in body
    assert f"{settings.console_origin}/me/#certificates" in body
    assert segments(body) <= 2


async def test_a_reminder_is_in_the_volunteers_language(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    await create_volunteer(session, expires_on=clock.now().date(), language="sv")
    await queue_certification_reminders(session, now=clock.now(), settings=settings)
    [(_, body)] = await reminders(session)
    assert body is not None
    assert "Förnya" in body
    assert segments(body) <= 2


@pytest.mark.parametrize(
    "volunteer_state",
    [
        {"opted_out": True},
        {"status": "suspended"},
        {"certification_status": "pending"},
        {"certification": "first_aid"},
    ],
)
async def test_no_reminder_for_volunteers_who_cannot_or_need_not_be_reminded(
    session: AsyncSession,
    clock: FrozenClock,
    settings: Settings,
    volunteer_state: dict[str, object],
) -> None:
    await create_volunteer(
        session,
        expires_on=clock.now().date() + timedelta(days=3),
        **volunteer_state,  # type: ignore[arg-type]
    )
    assert await queue_certification_reminders(session, now=clock.now(), settings=settings) == 0


async def test_no_reminder_once_the_certification_is_renewed(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, expires_on=clock.now().date() + timedelta(days=3))
    session.add(
        Certification(
            volunteer_id=volunteer.id,
            kind="cpr",
            issued_on=date(2026, 11, 1),
            expires_on=date(2028, 11, 1),
            issuer="Swedish Resuscitation Council",
            status="verified",
        )
    )
    await session.flush()
    assert await queue_certification_reminders(session, now=clock.now(), settings=settings) == 0


async def test_no_reminder_for_a_certification_that_already_expired(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    await create_volunteer(session, expires_on=clock.now().date() - timedelta(days=1))
    assert await queue_certification_reminders(session, now=clock.now(), settings=settings) == 0
