"""Retention: every personal datum is purged or anonymised after its period.

The periods are settings (``*_RETENTION``); what each covers, why, and who can see
it meanwhile is the table in ``docs/privacy.md``. What statistics need stays: the
incident (kind, times, status, a location rounded to about a kilometre), its
alerts (distances, responses, roles, times), reports, and message rows without
their bodies and numbers.

Each rule keeps a watermark in ``retention_run``: every row created before
``purged_before`` has been dealt with. A pass purges the rows between the watermark
and ``now - period`` (a range scan on a BRIN index, so only the newly expired
rows are visited, however long the table) and moves the watermark, in the same
transaction. A rule runs once its window has grown by its grain (a day for the
long periods, so the job is daily; at once for the texts that carry a code), so
running the pass on every timer tick of every worker costs one small locked
SELECT. Rows of a rule locked by another worker's pass are skipped (``SKIP
LOCKED``): two workers never purge the same window. Shortening a period purges
the gap at the next pass; lengthening one cannot bring back what is gone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import (
    AccessLog,
    AuditLog,
    CallStep,
    Certification,
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

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAILY = timedelta(days=1)
HOURLY = timedelta(hours=1)
AT_ONCE = timedelta(0)
CODE_PURPOSES = ("signup_code", "login_code")
UNSENT = ("queued", "sending")
# About 1.1 km north-south: enough for statistics of where arrests happen, not a home.
INCIDENT_GRID_DEG = 0.01

Purge = Callable[[AsyncSession, datetime, datetime], Awaitable[int]]


@dataclass(frozen=True)
class RetentionRule:
    name: str
    period: Callable[[Settings], timedelta]
    grain: timedelta
    purge: Purge


def _count(result: object) -> int:
    rowcount: int = getattr(result, "rowcount", 0) or 0
    return rowcount


async def _message_contents(session: AsyncSession, since: datetime, before: datetime) -> int:
    """Bodies and numbers of texts and calls in and out, and what each call said (its
    ``call_step`` rows: a 1 is answered with the patient's address); the message row
    (purpose, status, call status, times) stays."""
    result = await session.execute(
        update(Message)
        .where(Message.created_at >= since, Message.created_at < before)
        .where(Message.status.not_in(UNSENT))
        .where(Message.body.is_not(None) | Message.phone.is_not(None))
        .values(body=None, phone=None, reply_body=None)
    )
    said = await session.execute(
        delete(CallStep).where(CallStep.created_at >= since, CallStep.created_at < before)
    )
    return _count(result) + _count(said)


async def _code_texts(session: AsyncSession, since: datetime, before: datetime) -> int:
    """The plaintext of a sign-up or login code lives in its text until the code expires."""
    result = await session.execute(
        update(Message)
        .where(Message.created_at >= since, Message.created_at < before)
        .where(Message.purpose.in_(CODE_PURPOSES), Message.body.is_not(None))
        .values(body=None)
    )
    return _count(result)


async def _incident_details(session: AsyncSession, since: datetime, before: datetime) -> int:
    """Address, access notes and free text go; the location is rounded to the grid."""
    result = await session.execute(
        update(Incident)
        .where(Incident.created_at >= since, Incident.created_at < before)
        .where(Incident.status != "alerting")
        .values(
            address="",
            access_notes=None,
            cancel_reason=None,
            close_outcome=None,
            location=func.geography(
                func.ST_SnapToGrid(func.geometry(Incident.location), INCIDENT_GRID_DEG)
            ),
        )
    )
    return _count(result)


async def _events(session: AsyncSession, since: datetime, before: datetime) -> int:
    result = await session.execute(
        delete(IncidentEvent).where(
            IncidentEvent.created_at >= since, IncidentEvent.created_at < before
        )
    )
    return _count(result)


async def _selection_records(session: AsyncSession, since: datetime, before: datetime) -> int:
    result = await session.execute(
        delete(SelectionRecord).where(
            SelectionRecord.created_at >= since, SelectionRecord.created_at < before
        )
    )
    return _count(result)


async def _codes(session: AsyncSession, since: datetime, before: datetime) -> int:
    """Codes, and the details of sign-ups that were never completed."""
    result = await session.execute(
        delete(OneTimeCode).where(OneTimeCode.created_at >= since, OneTimeCode.created_at < before)
    )
    return _count(result)


async def _attachments(session: AsyncSession, since: datetime, before: datetime) -> int:
    """A certificate's file, once a coordinator has decided on it; the decision stays."""
    decided = select(Certification.id).where(
        Certification.status != "pending",
        Certification.decided_at >= since,
        Certification.decided_at < before,
    )
    result = await session.execute(
        delete(CertificationAttachment).where(
            CertificationAttachment.certification_id.in_(decided.scalar_subquery())
        )
    )
    return _count(result)


async def _audit(session: AsyncSession, since: datetime, before: datetime) -> int:
    changes = await session.execute(
        delete(AuditLog).where(AuditLog.created_at >= since, AuditLog.created_at < before)
    )
    reads = await session.execute(
        delete(AccessLog).where(AccessLog.first_at >= since, AccessLog.first_at < before)
    )
    return _count(changes) + _count(reads)


async def _sessions(session: AsyncSession, since: datetime, before: datetime) -> int:
    """Browser sessions (staff and volunteers), once past their absolute timeout."""
    result = await session.execute(
        delete(WebSession).where(WebSession.created_at >= since, WebSession.created_at < before)
    )
    return _count(result)


RULES = (
    RetentionRule("message", lambda s: s.message_retention, DAILY, _message_contents),
    RetentionRule("code_text", lambda s: s.signup_code_ttl, AT_ONCE, _code_texts),
    RetentionRule("incident", lambda s: s.incident_retention, DAILY, _incident_details),
    RetentionRule("event", lambda s: s.event_retention, DAILY, _events),
    RetentionRule(
        "selection_record", lambda s: s.selection_record_retention, DAILY, _selection_records
    ),
    RetentionRule("one_time_code", lambda s: s.signup_code_retention, HOURLY, _codes),
    RetentionRule("attachment", lambda s: s.attachment_retention, DAILY, _attachments),
    RetentionRule("web_session", lambda s: s.session_max_age, HOURLY, _sessions),
    RetentionRule("audit", lambda s: s.audit_retention, DAILY, _audit),
)


async def enforce_retention(
    session: AsyncSession, *, now: datetime, settings: Settings
) -> dict[str, int]:
    """One pass of every rule that is due; rows purged per rule (for the log)."""
    await session.execute(
        pg_insert(RetentionRun)
        .values([{"rule": rule.name, "purged_before": EPOCH} for rule in RULES])
        .on_conflict_do_nothing()
    )
    rows = await session.execute(
        select(RetentionRun.rule, RetentionRun.purged_before)
        .where(RetentionRun.rule.in_([rule.name for rule in RULES]))
        .with_for_update(skip_locked=True)
    )
    marks: dict[str, datetime] = {row.rule: row.purged_before for row in rows}
    purged: dict[str, int] = {}
    for rule in RULES:
        since = marks.get(rule.name)
        before = now - rule.period(settings)
        if since is None or before <= since or before - since < rule.grain:
            continue
        purged[rule.name] = await rule.purge(session, since, before)
        await session.execute(
            update(RetentionRun).where(RetentionRun.rule == rule.name).values(purged_before=before)
        )
    return purged


async def purged_before(session: AsyncSession, rule: str, moment: datetime) -> bool:
    """Whether ``rule`` has already purged what was created at ``moment``."""
    watermark = await session.scalar(
        select(RetentionRun.purged_before).where(RetentionRun.rule == rule)
    )
    return watermark is not None and moment < watermark
