"""Periodic registry jobs the dispatch worker runs: location purge, renewal reminders.

Both are safe to run from any number of workers at once and as often as wanted:
the purge is an idempotent DELETE, and each reminder is claimed by a conditional
UPDATE of ``reminder_sent_at`` (rows locked by another worker are skipped), so a
certification is reminded once, and only once its text is queued in the same
transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.models import Certification, LiveLocation, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from app.registry.eligibility import QUALIFYING_KINDS
from dispatch.alerting import within_hours

REMINDER_BATCH = 500
REMINDER_LIFETIME = timedelta(days=2)
"""A reminder not sent by then (a long provider outage) is given up, visibly."""
KIND_NAMES = {
    "en": {"cpr": "CPR", "cpr_aed": "CPR/AED", "healthcare_professional": "healthcare"},
    "sv": {"cpr": "HLR", "cpr_aed": "HLR/AED", "healthcare_professional": "vårdpersonal"},
}


def certification_reminder_text(language: str, *, kind: str, expires_on: str) -> str:
    """One SMS segment: what expires, when, and that alerts stop without renewal."""
    if language == "sv":
        return (
            f"Ditt {KIND_NAMES['sv'][kind]}-certifikat går ut {expires_on}. "
            "Förnya det för att fortsätta få larm som SMS-livräddare."
        )
    return (
        f"Your {KIND_NAMES['en'][kind]} certificate expires on {expires_on}. "
        "Renew it to keep receiving volunteer alerts."
    )


async def purge_live_locations(
    session: AsyncSession, *, now: datetime, retention: timedelta
) -> int:
    """Delete every live location recorded more than ``retention`` ago; how many went."""
    result = await session.execute(
        delete(LiveLocation)
        .where(LiveLocation.recorded_at < now - retention)
        .returning(LiveLocation.volunteer_id)
    )
    return len(result.all())


async def queue_certification_reminders(
    session: AsyncSession, *, now: datetime, settings: Settings
) -> int:
    """Queue one renewal SMS per certification ``CERT_REMINDER_DAYS`` before expiry.

    Reminded: verified certifications of a qualifying kind expiring within the
    window (today in the ``TIMEZONE`` included), not reminded before, whose holder
    is active, reachable (not opted out) and has not already renewed (no other
    verified certification of the same kind expiring later). Returns how many
    were queued; at most ``REMINDER_BATCH`` per call, and none outside
    ``REMINDER_HOURS`` (the worker also sends them only then): a renewal
    reminder never wakes anyone.
    """
    if not within_hours(settings.reminder_hours, now=now, settings=settings):
        return 0
    today = now.astimezone(settings.zone).date()
    horizon = today + timedelta(days=settings.cert_reminder_days)
    renewal = aliased(Certification)
    due = (
        select(Certification.id)
        .join(Volunteer, Volunteer.id == Certification.volunteer_id)
        .where(
            Certification.status == "verified",
            Certification.kind.in_(QUALIFYING_KINDS),
            Certification.reminder_sent_at.is_(None),
            Certification.expires_on >= today,
            Certification.expires_on <= horizon,
            Volunteer.status == "active",
            Volunteer.opted_out.is_(False),
            Volunteer.phone.is_not(None),
            ~exists().where(
                and_(
                    renewal.volunteer_id == Certification.volunteer_id,
                    renewal.kind == Certification.kind,
                    renewal.status == "verified",
                    renewal.expires_on > Certification.expires_on,
                )
            ),
        )
        .order_by(Certification.expires_on, Certification.id)
        .limit(REMINDER_BATCH)
        .with_for_update(of=Certification, skip_locked=True)
    )
    claimed = (
        await session.execute(
            update(Certification)
            .where(Certification.id.in_(due.scalar_subquery()))
            .where(Certification.reminder_sent_at.is_(None))
            .values(reminder_sent_at=now)
            .returning(Certification.volunteer_id, Certification.kind, Certification.expires_on)
        )
    ).all()
    if not claimed:
        return 0
    holders = {
        row.id: row
        for row in await session.execute(
            select(Volunteer.id, Volunteer.phone, Volunteer.language).where(
                Volunteer.id.in_({volunteer_id for volunteer_id, _, _ in claimed})
            )
        )
    }
    messages = []
    for volunteer_id, kind, expires_on in claimed:
        holder = holders[volunteer_id]
        messages.append(
            OutboundSms(
                phone=holder.phone,
                body=certification_reminder_text(
                    holder.language, kind=kind, expires_on=expires_on.isoformat()
                ),
                purpose="cert_reminder",
                volunteer_id=volunteer_id,
                deadline_at=now + REMINDER_LIFETIME,
            )
        )
    await queue_sms(session, messages, now=now)
    return len(messages)
