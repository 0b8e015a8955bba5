"""Retention with the controlled clock: each personal datum is kept for its period,
then purged or anonymised by the timers' pass; what statistics need stays."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.certifications import CertificationCreate
from app.core.clock import FrozenClock
from app.core.db import create_engine, create_session_factory
from app.core.models import (
    AccessLog,
    Alert,
    AuditLog,
    CallStep,
    CertificationAttachment,
    Incident,
    IncidentEvent,
    Message,
    OneTimeCode,
    RetentionRun,
    SelectionRecord,
    WebSession,
)
from app.core.settings import Settings
from app.registry.access import PersonalRead, record_reads
from app.registry.certifications import decide, submit_certification
from app.registry.keys import Principal
from app.registry.retention import RULES, enforce_retention
from app.registry.signup import request_code
from app.registry.web_sessions import open_volunteer_session
from dispatch.lifecycle import run_timers
from dispatch.selection import explain_selection
from geo.points import latitude, longitude
from tests.factories import (
    STOCKHOLM,
    create_alert,
    create_incident,
    create_volunteer,
    make_settings,
    next_phone,
)

DAY = timedelta(days=1)
ADMIN = Principal(
    key_id=uuid.uuid4(),
    name="Coordinator",
    role="admin",
    centre=None,
    volunteer_id=None,
)


async def purge_at(session: AsyncSession, settings: Settings, moment: datetime) -> dict[str, int]:
    return await enforce_retention(session, now=moment, settings=settings)


async def _closed_incident_with_texts(session: AsyncSession, now: datetime) -> Incident:
    incident = await create_incident(session, created_at=now, at=STOCKHOLM)
    volunteer = await create_volunteer(session)
    alert = await create_alert(session, incident=incident, volunteer=volunteer, now=now)
    incident.status = "closed"
    incident.close_outcome = "ROSC, patient Anna at home"
    message = await session.scalar(select(Message).where(Message.alert_id == alert.id))
    assert message is not None
    message.status = "delivered"
    await session.flush()
    return incident


async def test_message_bodies_and_numbers_go_after_their_period_and_the_rows_stay(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    incident = await _closed_incident_with_texts(session, clock.now())
    texts = select(Message.body, Message.phone, Message.status).where(
        Message.incident_id == incident.id
    )

    await purge_at(
        session, settings, clock.now() + settings.message_retention - timedelta(minutes=1)
    )
    [(body, phone, _)] = (await session.execute(texts)).all()
    assert body is not None
    assert phone is not None

    await purge_at(session, settings, clock.now() + settings.message_retention + DAY)
    assert (await session.execute(texts)).all() == [(None, None, "delivered")]


async def test_what_a_call_said_goes_with_the_texts(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    session.add(
        CallStep(
            call_sid="CA" + "1" * 32,
            step="digits:1",
            twiml="<Response><Say>Drottninggatan 1</Say></Response>",
            created_at=clock.now(),
        )
    )
    await session.flush()
    steps = select(func.count()).select_from(CallStep)
    await purge_at(
        session, settings, clock.now() + settings.message_retention - timedelta(minutes=1)
    )
    assert await session.scalar(steps) == 1
    await purge_at(session, settings, clock.now() + settings.message_retention + DAY)
    assert await session.scalar(steps) == 0


async def test_a_queued_text_is_never_blanked(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    incident = await create_incident(session, created_at=clock.now())
    await create_alert(
        session, incident=incident, volunteer=await create_volunteer(session), now=clock.now()
    )
    await purge_at(session, settings, clock.now() + settings.message_retention + DAY)
    body = await session.scalar(select(Message.body).where(Message.incident_id == incident.id))
    assert body is not None


async def test_incident_details_are_anonymised_and_the_statistics_stay(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    incident = await _closed_incident_with_texts(session, clock.now())
    where = select(
        Incident.address,
        Incident.access_notes,
        Incident.close_outcome,
        Incident.kind,
        Incident.status,
        latitude(Incident.location),
        longitude(Incident.location),
    ).where(Incident.id == incident.id)

    await purge_at(
        session, settings, clock.now() + settings.incident_retention - timedelta(hours=1)
    )
    assert (await session.execute(where)).one().address == "Drottninggatan 1, Stockholm"

    await purge_at(session, settings, clock.now() + settings.incident_retention + DAY)
    address, notes, outcome, kind, status, lat, lon = (await session.execute(where)).one()
    assert (address, notes, outcome, kind, status) == ("", None, None, "cardiac_arrest", "closed")
    assert (round(lat, 6), round(lon, 6)) == (59.33, 18.06)
    alerts = select(func.count()).select_from(Alert).where(Alert.incident_id == incident.id)
    assert await session.scalar(alerts) == 1


async def test_an_incident_still_alerting_is_left_alone(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    incident = await create_incident(session, created_at=clock.now())
    await purge_at(session, settings, clock.now() + settings.incident_retention + DAY)
    await session.refresh(incident)
    assert incident.address == "Drottninggatan 1, Stockholm"


async def test_events_and_selection_records_are_deleted_after_their_period(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    incident = await create_incident(session, created_at=clock.now())
    volunteer = await create_volunteer(session)
    session.add(
        IncidentEvent(
            incident_id=incident.id,
            seq=1,
            type="incident.created",
            data={"address": "x"},
            created_at=clock.now(),
        )
    )
    session.add(
        SelectionRecord(
            incident_id=incident.id,
            volunteer_id=volunteer.id,
            outcome="alerted",
            distance_m=120.0,
            created_at=clock.now(),
        )
    )
    await session.flush()
    events = (
        select(func.count())
        .select_from(IncidentEvent)
        .where(IncidentEvent.incident_id == incident.id)
    )
    records = (
        select(func.count())
        .select_from(SelectionRecord)
        .where(SelectionRecord.incident_id == incident.id)
    )

    await purge_at(session, settings, clock.now() + timedelta(days=29))
    assert (await session.scalar(events), await session.scalar(records)) == (1, 1)

    await purge_at(session, settings, clock.now() + timedelta(days=31) + DAY)
    assert (await session.scalar(events), await session.scalar(records)) == (0, 0)


async def test_explain_names_a_purged_selection_record(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    incident = await create_incident(session, created_at=clock.now())
    incident.selection_recorded_at = clock.now()
    volunteer = await create_volunteer(session)
    await purge_at(session, settings, clock.now() + settings.selection_record_retention + DAY)

    answer = await explain_selection(
        session, incident=incident, volunteer_id=volunteer.id, settings=settings
    )

    assert answer.outcome == "record_purged"


async def test_code_texts_lose_the_code_once_it_expired_and_codes_go_after_a_day(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    phone = next_phone()
    await request_code(
        session,
        phone=phone,
        signup=None,
        client_ip="192.0.2.1",
        now=clock.now(),
        settings=settings,
    )
    await create_volunteer(session, phone=phone)
    await request_code(
        session,
        phone=phone,
        signup=None,
        client_ip="192.0.2.1",
        now=clock.now(),
        settings=settings,
    )
    body = select(Message.body).where(Message.phone == phone)
    codes = select(func.count()).select_from(OneTimeCode).where(OneTimeCode.phone == phone)

    await purge_at(session, settings, clock.now() + timedelta(minutes=9))
    assert await session.scalar(body) is not None

    await purge_at(session, settings, clock.now() + timedelta(minutes=11))
    assert await session.scalar(body) is None
    assert await session.scalar(codes) == 2

    await purge_at(session, settings, clock.now() + timedelta(hours=26))
    assert await session.scalar(codes) == 0


async def test_an_attachment_goes_a_period_after_the_decision_and_the_decision_stays(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session, certification=None)
    certification = await submit_certification(
        session,
        volunteer_id=volunteer.id,
        data=CertificationCreate(
            kind="cpr",
            issued_on=clock.now().date(),
            expires_on=clock.now().date(),
            issuer="HLR-rådet",
        ),
        attachment=b"%PDF-1.4\n%%EOF",
        now=clock.now(),
        settings=settings,
    )
    files = select(func.count()).select_from(CertificationAttachment)

    await purge_at(session, settings, clock.now() + settings.attachment_retention + DAY)
    assert await session.scalar(files) == 1  # still pending: the coordinator needs it

    decided_at = clock.now() + timedelta(days=2)
    await decide(
        session,
        certification_id=certification.id,
        decision="verify",
        reason=None,
        actor=ADMIN,
        now=decided_at,
    )
    await purge_at(session, settings, decided_at + settings.attachment_retention - DAY)
    assert await session.scalar(files) == 1
    await purge_at(session, settings, decided_at + settings.attachment_retention + DAY)
    assert await session.scalar(files) == 0
    await session.refresh(certification)
    assert (certification.status, certification.decided_by) == ("verified", "Coordinator")


async def test_the_audit_log_and_the_access_log_are_purged_after_their_period(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session)
    session.add(
        AuditLog(
            actor_name="Coordinator",
            action="volunteer.update",
            target_type="volunteer",
            target_id=str(volunteer.id),
            details={},
            created_at=clock.now(),
        )
    )
    await record_reads(
        session,
        reader=ADMIN,
        reads=[PersonalRead(volunteer.id, "profile")],
        now=clock.now(),
        zone=settings.zone,
    )
    await session.flush()
    audits = (
        select(func.count()).select_from(AuditLog).where(AuditLog.target_id == str(volunteer.id))
    )
    reads = (
        select(func.count()).select_from(AccessLog).where(AccessLog.volunteer_id == volunteer.id)
    )

    await purge_at(session, settings, clock.now() + settings.audit_retention - DAY)
    assert (await session.scalar(audits), await session.scalar(reads)) == (1, 1)
    await purge_at(session, settings, clock.now() + settings.audit_retention + DAY)
    assert (await session.scalar(audits), await session.scalar(reads)) == (0, 0)


async def test_sessions_are_deleted_once_past_their_absolute_timeout(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    volunteer = await create_volunteer(session)
    await open_volunteer_session(
        session, volunteer_id=volunteer.id, now=clock.now(), settings=settings
    )
    found = (
        select(func.count()).select_from(WebSession).where(WebSession.volunteer_id == volunteer.id)
    )
    await purge_at(session, settings, clock.now() + settings.session_max_age - timedelta(minutes=1))
    assert await session.scalar(found) == 1
    await purge_at(session, settings, clock.now() + settings.session_max_age + timedelta(hours=2))
    assert await session.scalar(found) == 0


async def test_a_shortened_period_purges_the_gap_at_the_next_pass(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    incident = await _closed_incident_with_texts(session, clock.now())
    later = clock.now() + timedelta(days=40)
    await purge_at(session, settings, later)
    body = select(Message.body).where(Message.incident_id == incident.id)
    assert await session.scalar(body) is not None

    await purge_at(session, make_settings(message_retention=timedelta(days=30)), later)
    assert await session.scalar(body) is None


async def test_a_daily_rule_runs_once_a_day_whatever_the_tick(
    session: AsyncSession, clock: FrozenClock, settings: Settings
) -> None:
    start = clock.now() + timedelta(days=100)
    first = await purge_at(session, settings, start)
    again = await purge_at(session, settings, start + timedelta(hours=5))
    assert "message" in first
    assert "message" not in again
    assert "code_text" in again


async def test_the_workers_timers_run_the_purge(
    committed_db: str, clock: FrozenClock, settings: Settings
) -> None:
    engine = create_engine(committed_db, pool_size=2)
    try:
        factory = create_session_factory(engine)
        await run_timers(factory, now=clock.now(), settings=settings)
        async with factory() as session:
            rules = await session.scalars(select(RetentionRun.rule).order_by(RetentionRun.rule))
            assert list(rules) == sorted(rule.name for rule in RULES)
    finally:
        await engine.dispose()
