"""Certifications: pending → verified | rejected, verified → revoked; expiry by date.

Each decision is one conditional UPDATE on the current status, so two
administrators deciding at once cannot both win: the second gets a 409 naming the
status it found.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.certifications import CertificationCreate, CertificationOut
from app.api.schemas.common import Cursor, Page, keyset, page_of
from app.core.errors import Conflict, NotFound
from app.core.models import Certification
from app.core.settings import Settings
from app.registry.attachments import attach, check_attachment
from app.registry.audit import Actor, VolunteerSelf, record_audit
from app.registry.keys import Principal
from app.registry.volunteers import lock_volunteer

Decision = Literal["verify", "reject", "revoke"]
TRANSITIONS: dict[Decision, tuple[str, str]] = {
    "verify": ("pending", "verified"),
    "reject": ("pending", "rejected"),
    "revoke": ("verified", "revoked"),
}


def render(certification: Certification) -> CertificationOut:
    return CertificationOut.model_validate(certification, from_attributes=True)


async def add_certification(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    data: CertificationCreate,
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
    data: CertificationCreate,
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
) -> Page[CertificationOut]:
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
    rows = (
        await session.scalars(
            keyset(
                statement,
                created_at=Certification.created_at,
                id_column=Certification.id,
                cursor=cursor,
                limit=limit,
            )
        )
    ).all()
    return page_of(
        rows, limit=limit, position=lambda row: Cursor(row.created_at, row.id), render=render
    )


async def certifications_of(
    session: AsyncSession, volunteer_id: uuid.UUID
) -> list[CertificationOut]:
    rows = await session.scalars(
        select(Certification)
        .where(Certification.volunteer_id == volunteer_id)
        .order_by(Certification.expires_on.desc(), Certification.id)
    )
    return [render(row) for row in rows]
