"""After an alert: the responder's short report, and a request to be contacted.

Responders can be shaken by what they saw (Denmark found 1–2 % severely affected),
so a responder who asks to be contacted reaches the follow-up contact at once: an
SMS to ``FOLLOW_UP_PHONE`` when one is configured, and always the coordinators'
list (:func:`recent_reports`). Submitting again updates the report; the request
goes out once, the first time it is asked for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import texts
from app.core.errors import Conflict, NotFound
from app.core.models import Alert, AlertReport, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from app.registry.audit import VolunteerSelf, record_audit


@dataclass(frozen=True)
class ReportAnswers:
    """Each question may be left unanswered (None), except whether to be contacted."""

    gave_cpr: bool | None
    aed_used: bool | None
    arrived_before_ems: bool | None
    wants_contact: bool


@dataclass(frozen=True)
class ReportRow:
    """A report as coordinators see it, with who sent it and when they were alerted."""

    alert_id: uuid.UUID
    incident_id: uuid.UUID
    volunteer_id: uuid.UUID
    name: str | None
    phone: str | None
    alerted_at: datetime
    submitted_at: datetime
    gave_cpr: bool | None
    aed_used: bool | None
    arrived_before_ems: bool | None
    wants_contact: bool


async def submit_report(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    alert_id: uuid.UUID,
    answers: ReportAnswers,
    now: datetime,
    settings: Settings,
) -> AlertReport:
    """Store (or update) the report on an alert this volunteer accepted."""
    alert = (
        await session.execute(
            select(Alert).where(Alert.id == alert_id, Alert.volunteer_id == volunteer_id)
        )
    ).scalar_one_or_none()
    if alert is None:
        raise NotFound(f"no alert {alert_id} of yours")
    if alert.accepted_at is None:
        raise Conflict("a report is for an alert you accepted")
    earlier = (
        await session.execute(
            select(AlertReport.wants_contact)
            .where(AlertReport.alert_id == alert_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    values = {
        "gave_cpr": answers.gave_cpr,
        "aed_used": answers.aed_used,
        "arrived_before_ems": answers.arrived_before_ems,
        "wants_contact": answers.wants_contact or bool(earlier),
        "updated_at": now,
    }
    report = (
        await session.execute(
            pg_insert(AlertReport)
            .values(alert_id=alert_id, submitted_at=now, **values)
            .on_conflict_do_update(index_elements=[AlertReport.alert_id], set_=values)
            .returning(AlertReport)
        )
    ).scalar_one()
    await record_audit(
        session,
        actor=VolunteerSelf(volunteer_id),
        action="alert.report",
        target_type="alert",
        target_id=alert_id,
        details={"wants_contact": report.wants_contact},
    )
    if answers.wants_contact and not earlier:
        await _ask_for_debrief(session, alert=alert, now=now, settings=settings)
    return report


async def _ask_for_debrief(
    session: AsyncSession, *, alert: Alert, now: datetime, settings: Settings
) -> None:
    if settings.follow_up_phone is None:
        return
    volunteer = await session.get(Volunteer, alert.volunteer_id)
    if volunteer is None or volunteer.phone is None:
        return
    await queue_sms(
        session,
        [
            OutboundSms(
                phone=settings.follow_up_phone,
                body=texts.debrief_request_text(
                    name=volunteer.name or "",
                    phone=volunteer.phone,
                    at=alert.created_at,
                    zone=settings.zone,
                ),
                purpose="debrief_request",
                incident_id=alert.incident_id,
            )
        ],
        now=now,
    )


async def recent_reports(
    session: AsyncSession, *, wants_contact_only: bool = False, limit: int = 100
) -> list[ReportRow]:
    """Reports, newest first (for coordinators); ``wants_contact_only``: the debrief
    requests, responders who asked to be contacted."""
    statement = (
        select(
            AlertReport,
            Alert.incident_id,
            Alert.volunteer_id,
            Alert.created_at,
            Volunteer.name,
            Volunteer.phone,
        )
        .join(Alert, Alert.id == AlertReport.alert_id)
        .join(Volunteer, Volunteer.id == Alert.volunteer_id)
        .order_by(AlertReport.submitted_at.desc(), AlertReport.alert_id)
        .limit(limit)
    )
    if wants_contact_only:
        statement = statement.where(AlertReport.wants_contact.is_(True))
    return [
        ReportRow(
            alert_id=row.AlertReport.alert_id,
            incident_id=row.incident_id,
            volunteer_id=row.volunteer_id,
            name=row.name,
            phone=row.phone,
            alerted_at=row.created_at,
            submitted_at=row.AlertReport.submitted_at,
            gave_cpr=row.AlertReport.gave_cpr,
            aed_used=row.AlertReport.aed_used,
            arrived_before_ems=row.AlertReport.arrived_before_ems,
            wants_contact=row.AlertReport.wants_contact,
        )
        for row in await session.execute(statement)
    ]
