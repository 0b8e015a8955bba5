"""Sign-up and login by a six-digit SMS code, without revealing who is registered.

A code request always gets the same answer. What differs is only the text the
phone receives: an unknown number asking at ``/join`` gets a sign-up code (the
details typed wait with the code; the volunteer exists once it is entered), a
registered number gets a login code instead, and an unknown number asking to log
in gets no text at all, but a code row all the same, so that entering codes for it
behaves exactly like entering wrong codes for a real one.

Guarantees:

- codes are stored as a salted SHA-256 only (the salt is the row's random id); a
  code is valid for ``SIGNUP_CODE_TTL`` and ``SIGNUP_CODE_ATTEMPTS`` tries, and
  only the newest code of a number counts (a new one supersedes the others, so
  asking again never adds tries to an old code);
- every wrong try is counted, under the row's lock, in a transaction that commits
  (checking returns an outcome rather than raising, so the count is never rolled
  back with an error);
- requests are limited per number and per client IP, and all code texts share a
  global hourly budget, counted in the request's transaction (a refused or failed
  request leaves no count); only numbers of ``SIGNUP_COUNTRIES`` are served, so the
  pages cannot be used to pump paid SMS abroad;
- the code text is queued in the same transaction with the code's expiry as its
  deadline: a code is never sent after it stopped working.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import texts
from app.core.buckets import count_hit, retry_after_s
from app.core.errors import Conflict, InvalidInput, RateLimited
from app.core.models import OneTimeCode, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from app.registry.audit import VolunteerSelf, record_audit
from app.registry.phones import normalise_phone, phone_region

HOUR_S = 3600
CODE_DIGITS = 6
_CODE = re.compile(r"^\d{6}$")

CodeOutcome = Literal["accepted", "wrong", "locked", "expired", "used", "no_code"]


@dataclass(frozen=True)
class SignupDetails:
    """What ``/join`` asks for, already validated by the volunteer schema."""

    name: str
    language: str
    email: str | None
    consent_version: str


@dataclass(frozen=True)
class CodeCheck:
    """The outcome of entering a code; ``volunteer_id`` is set only when accepted."""

    outcome: CodeOutcome
    tries_left: int = 0
    volunteer_id: uuid.UUID | None = None
    signed_up: bool = False


def _hash(code_id: uuid.UUID, code: str) -> str:
    return hashlib.sha256(f"{code_id}:{code}".encode()).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def signup_phone(raw: str, *, settings: Settings) -> str:
    """The number in E.164 form, if it is valid and of a country that may sign up."""
    try:
        phone = normalise_phone(raw, region=settings.default_region)
    except ValueError as exc:
        raise InvalidInput("phone", str(exc)) from None
    if phone_region(phone) not in settings.signup_countries:
        allowed = ", ".join(settings.signup_countries)
        raise InvalidInput("phone", f"only mobile numbers from {allowed} can be used here")
    return phone


async def _within_limit(
    session: AsyncSession, *, key: str, limit: int, now: datetime, what: str
) -> None:
    counted = await count_hit(session, key=key, moment=now, window_s=HOUR_S)
    if counted.estimate > limit:
        wait = retry_after_s(
            previous=counted.previous,
            current=counted.current,
            limit=limit,
            elapsed=counted.elapsed,
            window_s=HOUR_S,
        )
        raise RateLimited(
            f"too many codes {what}; try again in {wait // 60 + 1} min", retry_after=wait
        )


async def request_code(
    session: AsyncSession,
    *,
    phone: str,
    signup: SignupDetails | None,
    client_ip: str,
    now: datetime,
    settings: Settings,
) -> str:
    """Create and text a code for the number; the normalised number, for the next page.

    ``signup`` None asks to log in. The limits are checked before anything is
    looked up, so a refusal says nothing about the number either.
    """
    number = signup_phone(phone, settings=settings)
    await _within_limit(
        session,
        key=f"code:phone:{number}",
        limit=settings.signup_codes_per_phone_per_hour,
        now=now,
        what="for this number",
    )
    await _within_limit(
        session,
        key=f"code:ip:{client_ip}",
        limit=settings.signup_codes_per_ip_per_hour,
        now=now,
        what="from this network",
    )
    await _within_limit(
        session,
        key="code:budget",
        limit=settings.signup_sms_per_hour,
        now=now,
        what="are being sent right now",
    )
    holder = (
        await session.execute(
            select(Volunteer.id, Volunteer.language).where(
                Volunteer.phone == number, Volunteer.status != "erased"
            )
        )
    ).one_or_none()
    # Serialised per number: the count above holds that number's counter row.
    await session.execute(
        update(OneTimeCode)
        .where(OneTimeCode.phone == number, OneTimeCode.superseded_at.is_(None))
        .values(superseded_at=now)
    )
    code = new_code()
    row = OneTimeCode(
        id=uuid.uuid4(),
        phone=number,
        purpose="login" if holder is not None or signup is None else "signup",
        volunteer_id=holder.id if holder is not None else None,
        signup=asdict(signup) if holder is None and signup is not None else None,
        attempts=0,
        created_at=now,
        expires_at=now + settings.signup_code_ttl,
    )
    row.code_hash = _hash(row.id, code)
    session.add(row)
    await session.flush()
    minutes = int(settings.signup_code_ttl.total_seconds() // 60)
    if holder is not None:
        body = texts.login_code_text(holder.language, code=code, minutes=minutes)
    elif signup is not None:
        body = texts.signup_code_text(signup.language, code=code, minutes=minutes)
    else:
        return number
    await queue_sms(
        session,
        [
            OutboundSms(
                phone=number,
                body=body,
                purpose=f"{row.purpose}_code",
                volunteer_id=row.volunteer_id,
                deadline_at=row.expires_at,
            )
        ],
        now=now,
    )
    return number


async def check_code(
    session: AsyncSession, *, phone: str, code: str, now: datetime, settings: Settings
) -> CodeCheck:
    """Judge an entered code against the number's newest one; count a wrong try.

    Returns the outcome instead of raising, so that the caller commits the count.
    An accepted sign-up code creates the volunteer (consent and its version
    recorded now); if the number was registered meanwhile, it logs that one in.
    """
    number = signup_phone(phone, settings=settings)
    if not _CODE.match(code.strip()):
        raise InvalidInput("code", f"enter the {CODE_DIGITS} digits of the code")
    row = (
        await session.execute(
            select(OneTimeCode)
            .where(OneTimeCode.phone == number, OneTimeCode.superseded_at.is_(None))
            .order_by(OneTimeCode.created_at.desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        return CodeCheck("no_code")
    if row.used_at is not None:
        return CodeCheck("used")
    if now >= row.expires_at:
        return CodeCheck("expired")
    if row.attempts >= settings.signup_code_attempts:
        return CodeCheck("locked")
    matches = hmac.compare_digest(row.code_hash, _hash(row.id, code.strip()))
    if not matches or (row.purpose == "login" and row.volunteer_id is None):
        row.attempts += 1
        await session.flush()
        left = settings.signup_code_attempts - row.attempts
        return CodeCheck("wrong", tries_left=left) if left > 0 else CodeCheck("locked")
    row.used_at = now
    await session.flush()
    if row.volunteer_id is not None:
        return CodeCheck("accepted", volunteer_id=row.volunteer_id)
    volunteer_id, created = await _register(session, code=row, now=now)
    return CodeCheck("accepted", volunteer_id=volunteer_id, signed_up=created)


async def _register(
    session: AsyncSession, *, code: OneTimeCode, now: datetime
) -> tuple[uuid.UUID, bool]:
    details = SignupDetails(**(code.signup or {}))
    created = (
        await session.execute(
            pg_insert(Volunteer)
            .values(
                id=uuid.uuid4(),
                name=details.name,
                phone=code.phone,
                email=details.email,
                language=details.language,
                status="active",
                opted_out=False,
                consent_at=now,
                consent_version=details.consent_version,
            )
            .on_conflict_do_nothing(index_elements=[Volunteer.phone])
            .returning(Volunteer.id)
        )
    ).scalar_one_or_none()
    if created is None:
        existing = await session.scalar(select(Volunteer.id).where(Volunteer.phone == code.phone))
        if existing is None:
            raise Conflict("the number was registered and erased while signing up; try again")
        return existing, False
    await record_audit(
        session,
        actor=VolunteerSelf(created),
        action="volunteer.signup",
        target_type="volunteer",
        target_id=created,
        details={"consent_version": details.consent_version},
    )
    return created, True
