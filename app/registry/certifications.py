"""Certifications: pending → verified | rejected, verified → revoked; expiry by date.

Each decision is one conditional UPDATE on the current status, so two
administrators deciding at once cannot both win: the second gets a 409 naming the
status it found.

Expiry is handled here and nowhere else: a certification counts while
``expires_on`` is today or later (the eligibility rule, ``app.registry.eligibility``,
reads it), and ``CERT_REMINDER_DAYS`` before that its holder gets one renewal SMS
(:func:`queue_certification_reminders`, run by the dispatch worker's timers). The
reminder is safe from any number of workers at once: each certification is claimed
by a conditional UPDATE of ``reminder_sent_at`` (rows locked by another worker are
skipped), so it is reminded once, and only once its text is queued in the same
transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.errors import Conflict, NotFound
from app.core.models import Certification, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.paging import Paged, fetch_page
from app.core.schedule import within_hours
from app.core.settings import Settings
from app.core.texts import certification_reminder_text
from app.registry.attachments import attach, check_attachment
from app.registry.audit import Actor, VolunteerSelf, record_audit
from app.registry.eligibility import QUALIFYING_KINDS
from app.registry.keys import Principal
from app.registry.volunteers import lock_volunteer

Decision = Literal["verify", "reject", "revoke"]
TRANSITIONS: dict[Decision, tuple[str, str]] = {
    "verify": ("pending", "verified"),
    "reject": ("pending", "rejected"),
    "revoke": ("verified", "revoked"),
}
REMINDER_BATCH = 500
REMINDER_LIFETIME = timedelta(days=2)
"""A reminder not sent by then (a long provider outage) is given up, visibly."""


@dataclass(frozen=True, slots=True)
class NewCertification:
    """A certificate as the volunteer presents it, before anyone has checked it."""

    kind: str
    issued_on: date
    expires_on: date
    issuer: str
    reference: str | None


async def add_certification(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    data: NewCertification,
    actor: Actor,
) -> Certification:
    await lock_volunteer(session, volunteer_id)
    certification = Certification(
        volunteer_id=volunteer_id,
        kind=data.kind,
        issued_on=data.issued_on,
        expires_on=data.expires_on,
        issuer=data.issuer,
        reference=data.reference,
        status="pending",
    )
    session.add(certification)
    await session.flush()
    await session.refresh(certification)
    await record_audit(
        session,
        actor=actor,
        action="certification.add",
        target_type="certification",
        target_id=certification.id,
        details={"volunteer_id": str(volunteer_id), "kind": data.kind},
    )
    return certification


async def submit_certification(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    data: NewCertification,
    attachment: bytes | None,
    now: datetime,
    settings: Settings,
) -> Certification:
    """A volunteer's own certificate, with an optional photo or PDF, for review (pending).

    The attachment is checked before anything is written: a refused file leaves no
    certification behind either.
    """
    media_type = (
        None
        if attachment is None
        else check_attachment(attachment, max_bytes=settings.attachment_max_bytes)
    )
    certification = await add_certification(
        session, volunteer_id=volunteer_id, data=data, actor=VolunteerSelf(volunteer_id)
    )
    if attachment is not None and media_type is not None:
        await attach(
            session,
            certification_id=certification.id,
            data=attachment,
            media_type=media_type,
            now=now,
        )
    return certification


async def decide(
    session: AsyncSession,
    *,
    certification_id: uuid.UUID,
    decision: Decision,
    reason: str | None,
    actor: Principal,
    now: datetime,
) -> Certification:
    source, target = TRANSITIONS[decision]
    changed = (
        await session.execute(
            update(Certification)
            .where(Certification.id == certification_id, Certification.status == source)
            .values(
                status=target,
                status_reason=reason,
                decided_by=actor.name,
                decided_at=now,
                updated_at=now,
            )
            .returning(Certification)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if changed is None:
        current = await session.scalar(
            select(Certification.status).where(Certification.id == certification_id)
        )
        if current is None:
            raise NotFound(f"no certification {certification_id}")
        raise Conflict(f"cannot {decision} a certification that is {current}")
    await record_audit(
        session,
        actor=actor,
        action=f"certification.{decision}",
        target_type="certification",
        target_id=certification_id,
        details={"reason": reason} if reason else None,
    )
    return changed


async def list_certifications(
    session: AsyncSession,
    *,
    status: str | None,
    expiring_within_days: int | None,
    volunteer_id: uuid.UUID | None,
    today: date,
    cursor: str | None,
    limit: int,
) -> Paged[Certification]:
    """The review queue (``status=pending``) and renewals (``expiring_within_days``).

    Renewals are verified certifications expiring between today and today + N
    (inclusive), unless another status is asked for explicitly.
    """
    statement: Select[Any] = select(Certification)
    if volunteer_id is not None:
        statement = statement.where(Certification.volunteer_id == volunteer_id)
    if expiring_within_days is not None:
        statement = statement.where(
            Certification.expires_on >= today,
            Certification.expires_on <= today + timedelta(days=expiring_within_days),
            Certification.status == (status or "verified"),
        )
    elif status is not None:
        statement = statement.where(Certification.status == status)
    return await fetch_page(session, statement, model=Certification, cursor=cursor, limit=limit)


async def certifications_of(
    session: AsyncSession, volunteer_id: uuid.UUID
) -> Sequence[Certification]:
    return (
        await session.scalars(
            select(Certification)
            .where(Certification.volunteer_id == volunteer_id)
            .order_by(Certification.expires_on.desc(), Certification.id)
        )
    ).all()


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
    if not within_hours(settings.reminder_hours, now=now, zone=settings.zone):
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
                    holder.language,
                    kind=kind,
                    expires_on=expires_on.isoformat(),
                    renew_link=f"{settings.console_origin}/me/#certificates",
                ),
                purpose="cert_reminder",
                volunteer_id=volunteer_id,
                deadline_at=now + REMINDER_LIFETIME,
            )
        )
    await queue_sms(session, messages, now=now)
    return len(messages)
