"""A volunteer's own data: the JSON export, erasure from their side, and the report
after an alert (with a debrief request that reaches the follow-up contact)."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.certifications import CertificationCreate
from app.core.clock import FrozenClock
from app.core.errors import Conflict, NotFound
from app.core.models import (
    Alert,
    AlertReport,
    ApiKey,
    Certification,
    Message,
    OneTimeCode,
    Place,
    Volunteer,
)
from app.core.settings import Settings
from app.registry.certifications import submit_certification
from app.registry.reports import ReportAnswers, recent_reports, submit_report
from app.registry.signup import request_code
from tests.factories import (
    STOCKHOLM,
    create_alert,
    create_incident,
    create_key,
    create_volunteer,
    make_settings,
)

PDF = b"%PDF-1.7\n%%EOF\n"
SHAKEN = ReportAnswers(gave_cpr=True, aed_used=False, arrived_before_ems=True, wants_contact=True)


async def report_on(
    alert: Alert,
    answers: ReportAnswers,
    *,
    volunteer: Volunteer,
    session: AsyncSession,
    clock: FrozenClock,
    settings: Settings,
) -> AlertReport:
    return await submit_report(
        session,
        volunteer_id=volunteer.id,
        alert_id=alert.id,
        answers=answers,
        now=clock.now(),
        settings=settings,
    )


async def _accepted_alert(session: AsyncSession, volunteer: Volunteer, now: datetime) -> Alert:
    incident = await create_incident(session, created_at=now)
    alert = await create_alert(session, incident=incident, volunteer=volunteer, now=now)
    alert.response, alert.role, alert.accepted_at = "accepted", "cpr", now
    await session.flush()
    return alert


async def test_the_export_holds_everything_and_who_looked(
    session: AsyncSession, client: httpx.AsyncClient, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, near=STOCKHOLM, name="Anna Svensson")
    volunteer.consent_version = "v7"
    await submit_certification(
        session,
        volunteer_id=volunteer.id,
        data=CertificationCreate(
            kind="cpr",
            issued_on=clock.now().date(),
            expires_on=clock.now().date() + timedelta(days=700),
            issuer="Röda Korset",
        ),
        attachment=PDF,
        now=clock.now(),
        settings=settings,
    )
    alert = await _accepted_alert(session, volunteer, clock.now())
    await report_on(
        alert, SHAKEN, volunteer=volunteer, session=session, clock=clock, settings=settings
    )
    admin = await create_key(session, role="admin", name="Coordinator Kim")
    await client.get(f"/v1/volunteers/{volunteer.id}", headers=admin)
    token = await create_key(session, role="volunteer", volunteer=volunteer)

    answer = await client.get("/v1/me/export", headers=token)

    assert answer.status_code == 200
    data = answer.json()
    assert data["profile"]["name"] == "Anna Svensson"
    assert data["consent"]["version"] == "v7"
    assert len(data["places"]) == 1
    assert {item["attachment"] for item in data["certifications"]} == {None, "application/pdf"}
    [exported] = data["alerts"]
    assert (exported["id"], exported["response"], exported["report_gave_cpr"]) == (
        str(alert.id),
        "accepted",
        True,
    )
    assert [text["purpose"] for text in data["messages"]] == ["alert"]
    assert [read["by"] for read in data["accessed_by"]] == ["Coordinator Kim"]
    assert {change["action"] for change in data["changes"]} >= {"certification.add"}
    assert len(data["app_tokens"]) == 1


async def test_deleting_my_account_is_the_administrators_erasure(
    session: AsyncSession, client: httpx.AsyncClient, clock: FrozenClock, settings: Settings
) -> None:
    mine = await create_volunteer(session, near=STOCKHOLM)
    theirs = await create_volunteer(session, near=STOCKHOLM)
    assert mine.phone is not None
    await request_code(
        session,
        phone=mine.phone,
        signup=None,
        client_ip="192.0.2.1",
        now=clock.now(),
        settings=settings,
    )
    token = await create_key(session, role="volunteer", volunteer=mine)
    admin = await create_key(session, role="admin")

    assert (await client.delete("/v1/me", headers=token)).status_code == 204
    assert (await client.delete(f"/v1/volunteers/{theirs.id}", headers=admin)).status_code == 204

    def state(volunteer: Volunteer) -> tuple[object, ...]:
        return (volunteer.name, volunteer.phone, volunteer.email, volunteer.status)

    for volunteer in (mine, theirs):
        await session.refresh(volunteer)
    assert state(mine) == state(theirs) == (None, None, None, "erased")
    for table in (Place, Certification, ApiKey, OneTimeCode):
        count = select(func.count()).select_from(table)
        ours = table.volunteer_id.in_([mine.id, theirs.id])
        assert await session.scalar(count.where(ours)) == 0, table
    assert (await client.get("/v1/me", headers=token)).status_code == 401


async def test_a_debrief_request_reaches_the_follow_up_contact_once(
    session: AsyncSession, clock: FrozenClock
) -> None:
    settings = make_settings(follow_up_phone="+46101234567")
    volunteer = await create_volunteer(session, name="Bo Ek")
    alert = await _accepted_alert(session, volunteer, clock.now())

    for _ in range(2):
        await report_on(
            alert, SHAKEN, volunteer=volunteer, session=session, clock=clock, settings=settings
        )

    texts = (
        await session.scalars(select(Message.body).where(Message.phone == "+46101234567"))
    ).all()
    assert len(texts) == 1
    assert "Bo Ek" in (texts[0] or "")
    assert volunteer.phone in (texts[0] or "")
    [request] = await recent_reports(session, wants_contact_only=True)
    assert (request.alert_id, request.name, request.gave_cpr) == (alert.id, "Bo Ek", True)
    assert (request.aed_used, request.arrived_before_ems) == (False, True)


async def test_a_report_changed_later_keeps_the_request_for_contact(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session)
    alert = await _accepted_alert(session, volunteer, clock.now())
    await report_on(
        alert, SHAKEN, volunteer=volunteer, session=session, clock=clock, settings=settings
    )
    calmer = ReportAnswers(
        gave_cpr=True, aed_used=True, arrived_before_ems=None, wants_contact=False
    )
    report = await report_on(
        alert, calmer, volunteer=volunteer, session=session, clock=clock, settings=settings
    )
    assert (report.aed_used, report.wants_contact) == (True, True)


async def test_only_an_alert_i_accepted_can_be_reported(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session)
    other = await create_volunteer(session)
    incident = await create_incident(session, created_at=clock.now())
    pending = await create_alert(session, incident=incident, volunteer=volunteer, now=clock.now())
    theirs = await _accepted_alert(session, other, clock.now())

    with pytest.raises(Conflict):
        await report_on(
            pending, SHAKEN, volunteer=volunteer, session=session, clock=clock, settings=settings
        )
    with pytest.raises(NotFound):
        await report_on(
            theirs, SHAKEN, volunteer=volunteer, session=session, clock=clock, settings=settings
        )


async def test_the_report_api_answers_4xx_for_bad_input(
    session: AsyncSession, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    volunteer = await create_volunteer(session)
    alert = await _accepted_alert(session, volunteer, clock.now())
    token = await create_key(session, role="volunteer", volunteer=volunteer)
    url = f"/v1/me/alerts/{alert.id}/report"

    assert (await client.put(url, headers=token, json={"gave_cpr": "maybe"})).status_code == 422
    assert (await client.put(url, headers=token, json={"extra": 1})).status_code == 422
    done = await client.put(url, headers=token, json={"gave_cpr": True})
    assert done.status_code == 200
    assert done.json()["wants_contact"] is False
