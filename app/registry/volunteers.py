"""Volunteers: registration, changes, suspension, erasure, app tokens, CSV import.

Phone numbers are stored in E.164 and are unique: a second registration of a
number is a 409, decided by the unique index (``ON CONFLICT``), not by a racy
look-up first. Erasure keeps the row as an anonymous ``erased`` stub so that alert
statistics still count the volunteer, and removes everything that identifies them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypedDict

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import texts
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.models import (
    ApiKey,
    Certification,
    LiveLocation,
    Message,
    OneTimeCode,
    Place,
    Volunteer,
    WebSession,
)
from app.core.outbox import OutboundSms, queue_sms
from app.core.paging import Paged, fetch_page
from app.registry.audit import Actor, record_audit
from app.registry.eligibility import is_eligible
from app.registry.keys import Principal, issue_key
from app.registry.phones import normalise_phone
from app.registry.uploads import ImportOutcome, LineErrors, csv_rows, csv_text, decode_utf8

CSV_HEADER = ("name", "phone", "language", "email")
CSV_OPTIONAL = ("consent", "contact_preference")
CONTACT_PREFERENCES = ("sms", "voice", "sms_then_voice")
IMPORT_CHUNK = 1000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class NewVolunteer:
    """A registration the volunteer consented to; ``phone`` in any format of the region."""

    name: str
    phone: str
    language: str
    email: str | None
    contact_preference: str = "sms"


class VolunteerChanges(TypedDict, total=False):
    """The fields to change; a field absent is left alone, ``None`` clears it."""

    name: str | None
    phone: str | None
    language: str | None
    email: str | None
    paused_until: datetime | None
    contact_preference: str | None


def _phone(raw: str, *, region: str, field: str = "phone") -> str:
    try:
        return normalise_phone(raw, region=region)
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from None


async def get_volunteer(session: AsyncSession, volunteer_id: uuid.UUID) -> Volunteer:
    """The volunteer, or 404; an erased volunteer no longer exists for the API."""
    volunteer = await session.get(Volunteer, volunteer_id)
    if volunteer is None or volunteer.status == "erased":
        raise NotFound(f"no volunteer {volunteer_id}")
    return volunteer


async def lock_volunteer(session: AsyncSession, volunteer_id: uuid.UUID) -> Volunteer:
    """The volunteer row locked for this transaction (changes to it serialise), or 404."""
    volunteer = (
        await session.execute(
            select(Volunteer)
            .where(Volunteer.id == volunteer_id, Volunteer.status != "erased")
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if volunteer is None:
        raise NotFound(f"no volunteer {volunteer_id}")
    return volunteer


async def is_volunteer_eligible(
    session: AsyncSession, volunteer_id: uuid.UUID, *, now: datetime, today: date
) -> bool:
    eligible = await session.scalar(
        select(is_eligible(Volunteer, now=now, today=today)).where(Volunteer.id == volunteer_id)
    )
    return bool(eligible)


async def create_volunteer(
    session: AsyncSession,
    *,
    data: NewVolunteer,
    actor: Principal,
    now: datetime,
    region: str,
) -> Volunteer:
    phone = _phone(data.phone, region=region)
    volunteer = (
        await session.execute(
            pg_insert(Volunteer)
            .values(
                id=uuid.uuid4(),
                name=data.name,
                phone=phone,
                email=data.email,
                language=data.language,
                contact_preference=data.contact_preference,
                status="active",
                opted_out=False,
                consent_at=now,
            )
            .on_conflict_do_nothing(index_elements=[Volunteer.phone])
            .returning(Volunteer)
        )
    ).scalar_one_or_none()
    if volunteer is None:
        raise Conflict(f"a volunteer with phone {phone} is already registered")
    await record_audit(
        session,
        actor=actor,
        action="volunteer.create",
        target_type="volunteer",
        target_id=volunteer.id,
    )
    return volunteer


async def list_volunteers(
    session: AsyncSession,
    *,
    status: str | None,
    phone: str | None,
    region: str,
    cursor: str | None,
    limit: int,
    consent: str | None = None,
) -> Paged[Volunteer]:
    """``consent="missing"``: those without recorded consent (the coordinator's list
    of people to reach); ``"recorded"``: those with it."""
    statement: Select[Any] = select(Volunteer).where(Volunteer.status != "erased")
    if status is not None:
        statement = statement.where(Volunteer.status == status)
    if consent is not None:
        recorded = Volunteer.consent_at.is_not(None)
        statement = statement.where(recorded if consent == "recorded" else ~recorded)
    if phone is not None:
        statement = statement.where(Volunteer.phone == _phone(phone, region=region))
    return await fetch_page(session, statement, model=Volunteer, cursor=cursor, limit=limit)


EXPORT_HEADER = (*CSV_HEADER, *CSV_OPTIONAL)


def export_csv(volunteers: Sequence[Volunteer]) -> str:
    """Volunteers in the import's own format (so an edited export imports again),
    every cell safe to open in a spreadsheet."""
    return csv_text(
        EXPORT_HEADER,
        (
            (
                volunteer.name or "",
                volunteer.phone or "",
                volunteer.language,
                volunteer.email or "",
                "yes" if volunteer.consent_at else "",
                volunteer.contact_preference,
            )
            for volunteer in volunteers
        ),
    )


async def update_volunteer(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    changes: VolunteerChanges,
    actor: Actor,
    region: str,
) -> Volunteer:
    volunteer = await lock_volunteer(session, volunteer_id)
    values: dict[str, Any] = dict(changes)
    for required in ("name", "phone", "language", "contact_preference"):
        if required in values and values[required] is None:
            raise InvalidInput(required, "may not be null")
    if "phone" in values:
        values["phone"] = _phone(values["phone"], region=region)
    for name, value in values.items():
        setattr(volunteer, name, value)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a volunteer with phone {values['phone']} is already registered") from None
    await record_audit(
        session,
        actor=actor,
        action="volunteer.update",
        target_type="volunteer",
        target_id=volunteer_id,
        details={"fields": sorted(values)},
    )
    await session.refresh(volunteer)
    return volunteer


async def set_status(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    status: str,
    reason: str | None,
    actor: Principal,
) -> Volunteer:
    """Suspend or reinstate; repeating either is harmless (and audited once more).

    Suspension revokes the volunteer's app tokens at once: a suspended volunteer
    must not change their availability or location. Reinstating does not revive
    them (a suspension may be about a lost phone); issue a new token.
    """
    volunteer = await lock_volunteer(session, volunteer_id)
    volunteer.status = status
    volunteer.suspended_reason = reason if status == "suspended" else None
    if status == "suspended":
        await session.execute(
            update(ApiKey)
            .where(ApiKey.volunteer_id == volunteer_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="volunteer.suspend" if status == "suspended" else "volunteer.reinstate",
        target_type="volunteer",
        target_id=volunteer_id,
        details={"reason": reason} if reason else None,
    )
    await session.refresh(volunteer)
    return volunteer


async def erase_volunteer(
    session: AsyncSession, *, volunteer_id: uuid.UUID, actor: Actor, now: datetime
) -> None:
    """Remove everything that identifies the volunteer; keep an anonymous stub.

    Alerts and selection records keep pointing at the stub (statistics: how many
    were alerted, accepted, arrived), but no name, number, e-mail, place, position,
    certificate reference or attachment, token, session, login code or free text of theirs
    remains. Texts still queued for them are abandoned rather than sent to a number
    we no longer hold. The same erasure whether an administrator or the volunteer
    (from their own page) asks.
    """
    volunteer = await lock_volunteer(session, volunteer_id)
    await session.execute(
        delete(OneTimeCode).where(
            (OneTimeCode.volunteer_id == volunteer_id) | (OneTimeCode.phone == volunteer.phone)
        )
    )
    for table in (Place, LiveLocation, ApiKey, Certification, WebSession):
        await session.execute(delete(table).where(table.volunteer_id == volunteer_id))
    await session.execute(
        update(Message)
        .where(Message.volunteer_id == volunteer_id, Message.direction == "out")
        .where(Message.status == "queued")
        .values(status="failed", updated_at=now)
    )
    await session.execute(
        update(Message).where(Message.volunteer_id == volunteer_id).values(phone=None)
    )
    await session.execute(
        update(Message)
        .where(Message.volunteer_id == volunteer_id, Message.direction == "in")
        .values(body=None)
    )
    await session.execute(
        update(Volunteer)
        .where(Volunteer.id == volunteer_id)
        .values(
            name=None,
            phone=None,
            email=None,
            status="erased",
            suspended_reason=None,
            paused_until=None,
            consent_at=None,
            erased_at=now,
        )
    )
    await record_audit(
        session,
        actor=actor,
        action="volunteer.erase",
        target_type="volunteer",
        target_id=volunteer_id,
    )


async def issue_volunteer_token(
    session: AsyncSession, *, volunteer_id: uuid.UUID, actor: Principal
) -> tuple[str, ApiKey]:
    """A new token (the plaintext, returned here and never again) and its record.

    Earlier tokens stay valid (one per device) until revoked; list them with
    ``volunteer_tokens``.
    """
    volunteer = await get_volunteer(session, volunteer_id)
    if volunteer.status != "active":
        raise Conflict(f"volunteer {volunteer_id} is {volunteer.status}")
    plaintext, record = await issue_key(
        session, role="volunteer", name=f"app token of {volunteer_id}", volunteer_id=volunteer_id
    )
    await record_audit(
        session,
        actor=actor,
        action="volunteer.token",
        target_type="volunteer",
        target_id=volunteer_id,
        details={"key_id": str(record.id)},
    )
    return plaintext, record


async def volunteer_tokens(session: AsyncSession, *, volunteer_id: uuid.UUID) -> list[ApiKey]:
    """Every app token of the volunteer, revoked ones too, newest first (no secret:
    only the hash and a short prefix are stored)."""
    await get_volunteer(session, volunteer_id)
    return list(
        await session.scalars(
            select(ApiKey)
            .where(ApiKey.volunteer_id == volunteer_id, ApiKey.role == "volunteer")
            .order_by(ApiKey.created_at.desc(), ApiKey.id)
        )
    )


async def revoke_volunteer_token(
    session: AsyncSession, *, volunteer_id: uuid.UUID, token_id: uuid.UUID, actor: Principal
) -> None:
    """Revoke one token of this volunteer, effective at its next request; repeating
    it is harmless. Another volunteer's token, or none: ``NotFound``."""
    revoked = await session.scalar(
        update(ApiKey)
        .where(ApiKey.id == token_id, ApiKey.volunteer_id == volunteer_id)
        .values(revoked_at=func.coalesce(ApiKey.revoked_at, func.now()))
        .returning(ApiKey.id)
    )
    if revoked is None:
        raise NotFound(f"no token {token_id} of volunteer {volunteer_id}")
    await record_audit(
        session,
        actor=actor,
        action="volunteer.token_revoke",
        target_type="volunteer",
        target_id=volunteer_id,
        details={"key_id": str(token_id)},
    )


async def import_volunteers(
    session: AsyncSession, *, data: bytes, actor: Principal, now: datetime, region: str
) -> ImportOutcome:
    """Register every valid line of a ``name,phone,language,email`` CSV file, with the
    optional columns ``consent`` and ``contact_preference``.

    Bad lines (invalid phone, unknown language, a number already registered or
    repeated in the file) are reported by line number; the others are inserted
    with set-based statements. The file says nothing about consent unless its
    ``consent`` cell is ``yes`` (recorded outside the system): everyone else is
    *consent to be collected*, asked by SMS, and not alerted until they reply YES.
    """
    errors = LineErrors()
    rows: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    text = decode_utf8(data)
    for line, cells in csv_rows(text, header=CSV_HEADER, optional=CSV_OPTIONAL, errors=errors):
        name, raw_phone, language, email = (cells[column] for column in CSV_HEADER)
        language = language.lower() or "sv"
        consent = cells.get("consent", "").lower()
        preference = cells.get("contact_preference", "").lower() or "sms"
        if consent not in ("", "yes"):
            errors.add(line, "consent", "consent must be yes (recorded elsewhere) or empty")
            continue
        if preference not in CONTACT_PREFERENCES:
            errors.add(line, "contact_preference", f"one of {', '.join(CONTACT_PREFERENCES)}")
            continue
        if not name or len(name) > 200:
            errors.add(line, "name", "name is required (at most 200 characters)")
            continue
        try:
            phone = normalise_phone(raw_phone, region=region)
        except ValueError as exc:
            errors.add(line, "phone", str(exc))
            continue
        if language not in ("sv", "en"):
            errors.add(line, "language", "language must be sv or en")
            continue
        if email and (len(email) > 320 or not _EMAIL.match(email)):
            errors.add(line, "email", "not an e-mail address")
            continue
        if phone in lines:
            errors.add(line, "phone", f"{phone} already appears on line {lines[phone]}")
            continue
        lines[phone] = line
        rows[phone] = {
            "id": uuid.uuid4(),
            "name": name,
            "phone": phone,
            "email": email or None,
            "language": language,
            "status": "active",
            "opted_out": False,
            "consent_at": now if consent else None,
            "consent_requested_at": None if consent else now,
            "contact_preference": preference,
        }
    created: set[str] = set()
    values = list(rows.values())
    for start in range(0, len(values), IMPORT_CHUNK):
        inserted = (
            await session.execute(
                pg_insert(Volunteer)
                .values(values[start : start + IMPORT_CHUNK])
                .on_conflict_do_nothing(index_elements=[Volunteer.phone])
                .returning(Volunteer.id, Volunteer.phone, Volunteer.language, Volunteer.consent_at)
            )
        ).all()
        created.update(row.phone for row in inserted)
        await queue_sms(
            session,
            [
                OutboundSms(
                    phone=row.phone,
                    body=texts.consent_request_text(row.language),
                    purpose="consent",
                    volunteer_id=row.id,
                )
                for row in inserted
                if row.consent_at is None
            ],
            now=now,
        )
    for phone in rows.keys() - created:
        errors.add(lines[phone], "phone", f"{phone} is already registered")
    await record_audit(
        session,
        actor=actor,
        action="volunteer.import",
        target_type="volunteer",
        target_id=None,
        details={"created": len(created), "rejected": errors.count},
    )
    return errors.outcome(created=len(created))


async def opt_out(session: AsyncSession, *, volunteer_id: uuid.UUID, now: datetime) -> None:
    """No SMS to the volunteer until they send START: they replied STOP, or the carrier
    says they opted out there (error 21610)."""
    await _set_opted_out(session, volunteer_id=volunteer_id, opted_out=True, now=now)


async def opt_in(session: AsyncSession, *, volunteer_id: uuid.UUID, now: datetime) -> None:
    """The volunteer replied START: texts (and alerts) reach them again."""
    await _set_opted_out(session, volunteer_id=volunteer_id, opted_out=False, now=now)


async def _set_opted_out(
    session: AsyncSession, *, volunteer_id: uuid.UUID, opted_out: bool, now: datetime
) -> None:
    await session.execute(
        update(Volunteer)
        .where(Volunteer.id == volunteer_id, Volunteer.opted_out.is_not(opted_out))
        .values(opted_out=opted_out, updated_at=now)
    )


async def set_sms_opt_out(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    opted_out: bool,
    actor: Actor,
    now: datetime,
) -> None:
    """The volunteer's own choice on their page, as STOP and START set it by SMS.

    Opting back in here does not lift the provider's own block after a STOP: only
    the volunteer's START text does that (their page says so).
    """
    await lock_volunteer(session, volunteer_id)
    await _set_opted_out(session, volunteer_id=volunteer_id, opted_out=opted_out, now=now)
    await record_audit(
        session,
        actor=actor,
        action="volunteer.opt_out" if opted_out else "volunteer.opt_in",
        target_type="volunteer",
        target_id=volunteer_id,
    )
