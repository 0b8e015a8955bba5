"""Staff users: the people who sign in to the console, their passwords and second factor.

Passwords are hashed with Argon2id (argon2-cffi, whose defaults follow RFC 9106's
recommendation); a new user gets no password but a one-time link to set one,
whose secret is stored only as a SHA-256 (it is 256 random bits, like an API key).
A TOTP second factor (pyotp, RFC 6238) is optional per user; a setting makes it
mandatory for coordinators. A code's time step is remembered, so one code opens
one session, never two.

Failed sign-ins are slowed down, never locked out: past a threshold, per account
and per address, each further attempt waits a doubling delay (capped at a minute)
after the last failure. Anyone who knows a dispatcher's e-mail can make that
dispatcher wait a minute, but never keep them out during an emergency.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import Conflict, InvalidInput, NotFound, RateLimited, Unauthorized
from app.core.models import LoginFailure, StaffUser, WebSession
from app.core.paging import Paged, fetch_page
from app.core.settings import Settings
from app.registry.audit import record_audit
from app.registry.keys import Principal

StaffRole = Literal["coordinator", "dispatcher"]
STAFF_ROLES: tuple[StaffRole, ...] = ("coordinator", "dispatcher")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 256
THROTTLE_MAX_DELAY_S = 60
TOTP_ISSUER = "Responder"

_hasher = PasswordHasher()
# Verified against when the account does not exist, so a wrong e-mail costs the same
# time as a wrong password and the answer does not reveal which accounts exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class PasswordLink:
    user: StaffUser
    token: str
    expires_at: datetime


def normalise_email(raw: str, *, field: str = "email") -> str:
    email = raw.strip().lower()
    if not email or len(email) > 320 or not EMAIL.match(email):
        raise InvalidInput(field, "not an e-mail address")
    return email


def check_role_and_centre(role: str, centre: str | None) -> str | None:
    """The centre a user of this role keeps: a dispatcher needs one, a coordinator has none."""
    if role not in STAFF_ROLES:
        raise InvalidInput("role", "role must be coordinator or dispatcher")
    centre = (centre or "").strip() or None
    if role == "dispatcher" and centre is None:
        raise InvalidInput("centre", "a dispatcher needs a dispatch centre")
    if centre is not None and len(centre) > 200:
        raise InvalidInput("centre", "at most 200 characters")
    return centre if role == "dispatcher" else None


class StaffIdentity(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def centre(self) -> str | None: ...


def principal_of(user: StaffIdentity) -> Principal:
    """The user as the domain services see a caller: a coordinator has the admin powers."""
    return Principal(
        key_id=user.id,
        name=f"{user.name} <{user.email}>",
        role="admin" if user.role == "coordinator" else "dispatcher",
        centre=user.centre,
        volunteer_id=None,
        kind="staff_user",
    )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_link(user: StaffUser, *, now: datetime, ttl: timedelta) -> PasswordLink:
    token = secrets.token_urlsafe(32)
    user.password_token_hash = hash_secret(token)
    user.password_token_expires_at = now + ttl
    return PasswordLink(user=user, token=token, expires_at=now + ttl)


async def create_staff_user(
    session: AsyncSession,
    *,
    email: str,
    name: str,
    role: str,
    centre: str | None,
    actor: Principal | None,
    now: datetime,
    settings: Settings,
) -> PasswordLink:
    """A new person without a password, and the one-time link with which they set it."""
    email = normalise_email(email)
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name", "name is required (at most 200 characters)")
    centre = check_role_and_centre(role, centre)
    user_id = (
        await session.execute(
            pg_insert(StaffUser)
            .values(id=uuid.uuid4(), email=email, name=name, role=role, centre=centre)
            .on_conflict_do_nothing(index_elements=[StaffUser.email])
            .returning(StaffUser.id)
        )
    ).scalar_one_or_none()
    if user_id is None:
        raise Conflict(f"a staff user with e-mail {email} already exists")
    user = await get_staff_user(session, user_id)
    link = _new_link(user, now=now, ttl=settings.staff_invite_ttl)
    await session.flush()
    if actor is not None:
        await record_audit(
            session,
            actor=actor,
            action="staff.create",
            target_type="staff_user",
            target_id=user.id,
            details={"role": role, "centre": centre},
        )
    return link


async def get_staff_user(session: AsyncSession, user_id: uuid.UUID) -> StaffUser:
    user = await session.get(StaffUser, user_id, populate_existing=True)
    if user is None:
        raise NotFound(f"no staff user {user_id}")
    return user


async def find_staff_user(session: AsyncSession, email: str) -> StaffUser:
    user = (
        await session.execute(select(StaffUser).where(StaffUser.email == email.strip().lower()))
    ).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no staff user {email}")
    return user


async def list_staff_users(
    session: AsyncSession, *, cursor: str | None, limit: int
) -> Paged[StaffUser]:
    """Newest first."""
    return await fetch_page(session, select(StaffUser), model=StaffUser, cursor=cursor, limit=limit)


async def reissue_password_link(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    actor: Principal,
    now: datetime,
    settings: Settings,
) -> PasswordLink:
    """A new one-time link (forgotten password, expired invitation); the old one stops working."""
    user = await get_staff_user(session, user_id)
    link = _new_link(user, now=now, ttl=settings.staff_invite_ttl)
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="staff.password_link",
        target_type="staff_user",
        target_id=user.id,
    )
    return link


async def user_of_password_link(session: AsyncSession, *, token: str, now: datetime) -> StaffUser:
    user = (
        await session.execute(
            select(StaffUser).where(
                StaffUser.password_token_hash == hash_secret(token),
                StaffUser.password_token_expires_at > now,
                StaffUser.disabled_at.is_(None),
            )
        )
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("this link is unknown, used or expired")
    return user


def check_password_strength(password: str, *, field: str = "password") -> None:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidInput(field, f"at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidInput(field, f"at most {PASSWORD_MAX_LENGTH} characters")


async def set_password(
    session: AsyncSession, *, token: str, password: str, now: datetime
) -> StaffUser:
    """Use a one-time link: the password is set, the link is spent, old sessions end."""
    user = await user_of_password_link(session, token=token, now=now)
    check_password_strength(password)
    user.password_hash = _hasher.hash(password)
    user.password_token_hash = None
    user.password_token_expires_at = None
    await session.flush()
    await revoke_user_sessions(session, user_id=user.id, now=now)
    return user


async def _throttle(
    session: AsyncSession,
    *,
    column: InstrumentedAttribute[str],
    value: str,
    threshold: int,
    now: datetime,
    window: timedelta,
) -> None:
    count, last = (
        await session.execute(
            select(func.count(), func.max(LoginFailure.failed_at)).where(
                column == value,
                LoginFailure.failed_at > now - window,
            )
        )
    ).one()
    if count < threshold or last is None:
        return
    delay = min(THROTTLE_MAX_DELAY_S, 2 ** (count - threshold + 1))
    wait = (last + timedelta(seconds=delay) - now).total_seconds()
    if wait > 0:
        seconds = max(1, round(wait + 0.49))
        raise RateLimited(
            f"too many failed sign-ins; wait {seconds} seconds and try again",
            retry_after=seconds,
        )


async def check_login_throttle(
    session: AsyncSession, *, email: str, ip: str, now: datetime, settings: Settings
) -> None:
    """Raises ``RateLimited`` while this account or this address must wait."""
    window = settings.login_throttle_window
    await _throttle(
        session,
        column=LoginFailure.email,
        value=email.strip().lower(),
        threshold=settings.login_failures_per_account,
        now=now,
        window=window,
    )
    await _throttle(
        session,
        column=LoginFailure.ip,
        value=ip,
        threshold=settings.login_failures_per_ip,
        now=now,
        window=window,
    )


async def _record_failure(
    session: AsyncSession, *, email: str, ip: str, now: datetime, window: timedelta
) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= now - window))
    await session.execute(
        insert(LoginFailure).values(email=email.strip().lower()[:320], ip=ip[:64], failed_at=now)
    )


async def verify_password_login(
    session: AsyncSession, *, email: str, password: str, ip: str, now: datetime, settings: Settings
) -> StaffUser:
    """The user whose e-mail and password these are, or ``Unauthorized`` (failure recorded).

    Run in its own transaction by the caller, which commits it even when this raises,
    so that the failure counts.
    """
    await check_login_throttle(session, email=email, ip=ip, now=now, settings=settings)
    user = (
        await session.execute(select(StaffUser).where(StaffUser.email == email.strip().lower()))
    ).scalar_one_or_none()
    stored = user.password_hash if user is not None and user.disabled_at is None else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
        accepted = stored is not None
    except (VerificationError, InvalidHashError):
        accepted = False
    if not accepted or user is None:
        await _record_failure(
            session, email=email, ip=ip, now=now, window=settings.login_throttle_window
        )
        raise Unauthorized("wrong e-mail or password")
    if _hasher.check_needs_rehash(user.password_hash or ""):
        user.password_hash = _hasher.hash(password)
    return user


def needs_second_factor(user: StaffUser) -> bool:
    return user.totp_enabled_at is not None


def must_enrol_second_factor(*, role: str, totp_enabled: bool, settings: Settings) -> bool:
    return settings.require_totp_for_coordinators and role == "coordinator" and not totp_enabled


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret)


def totp_uri(user: StaffUser) -> str:
    assert user.totp_secret is not None
    return _totp(user.totp_secret).provisioning_uri(name=user.email, issuer_name=TOTP_ISSUER)


async def start_totp_enrolment(session: AsyncSession, *, user_id: uuid.UUID) -> StaffUser:
    """A fresh secret, not yet in force: it counts once a code from it is confirmed."""
    user = await get_staff_user(session, user_id)
    if user.totp_enabled_at is None:
        user.totp_secret = pyotp.random_base32()
        await session.flush()
    return user


def _accepted_step(user: StaffUser, code: str, now: datetime) -> int | None:
    """The time step the code belongs to (one step of clock drift either way), if any."""
    if user.totp_secret is None:
        return None
    code = code.strip().replace(" ", "")
    totp = _totp(user.totp_secret)
    step = int(now.timestamp()) // totp.interval
    for candidate in (step, step - 1, step + 1):
        if secrets.compare_digest(totp.at(candidate * totp.interval), code):
            return candidate
    return None


async def check_totp(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    code: str,
    now: datetime,
    settings: Settings,
    ip: str,
) -> StaffUser:
    """Accept a code once (a replayed code is refused); a wrong code counts as a failure."""
    user = await get_staff_user(session, user_id)
    await check_login_throttle(session, email=user.email, ip=ip, now=now, settings=settings)
    step = _accepted_step(user, code, now)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        await _record_failure(
            session, email=user.email, ip=ip, now=now, window=settings.login_throttle_window
        )
        raise InvalidInput("code", "wrong or already used code")
    user.totp_last_step = step
    if user.totp_enabled_at is None:
        user.totp_enabled_at = now
    await session.flush()
    return user


async def record_login(
    session: AsyncSession, *, user: StaffUser, now: datetime, method: str = "password"
) -> None:
    user.last_login_at = now
    await session.flush()
    await record_audit(
        session,
        actor=principal_of(user),
        action="staff.login",
        target_type="staff_user",
        target_id=user.id,
        details={"method": method},
    )


async def staff_user_of_sso(
    session: AsyncSession, *, email: str, name: str, role: str, centre: str | None, now: datetime
) -> StaffUser:
    """The person a verified identity provider vouches for, created or brought up to date.

    The provider is the source of truth for role and centre of whoever signs in through
    it: a changed role or centre ends the person's other sessions, as a coordinator's
    change on the Staff page does. A disabled account stays disabled (``Unauthorized``).
    ``InvalidInput`` when the claims give no valid role, or a dispatcher no centre.
    """
    email = normalise_email(email)
    centre = check_role_and_centre(role, centre)
    name = name.strip()[:200] or email
    await session.execute(
        pg_insert(StaffUser)
        .values(id=uuid.uuid4(), email=email, name=name, role=role, centre=centre)
        .on_conflict_do_nothing(index_elements=[StaffUser.email])
    )
    user = await find_staff_user(session, email)
    if user.disabled_at is not None:
        raise Unauthorized("this account is disabled")
    if (user.role, user.centre) != (role, centre):
        user.role, user.centre = role, centre
        await session.flush()
        await revoke_user_sessions(session, user_id=user.id, now=now)
        await record_audit(
            session,
            actor=principal_of(user),
            action="staff.role",
            target_type="staff_user",
            target_id=user.id,
            details={"role": role, "centre": centre, "method": "sso"},
        )
    return user


async def disable_staff_user(
    session: AsyncSession, *, user_id: uuid.UUID, actor: Principal | None, now: datetime
) -> StaffUser:
    """The person can no longer sign in; every session of theirs ends now."""
    user = await get_staff_user(session, user_id)
    if user.disabled_at is None:
        user.disabled_at = now
    user.password_token_hash = None
    await session.flush()
    await revoke_user_sessions(session, user_id=user.id, now=now)
    if actor is not None:
        await record_audit(
            session,
            actor=actor,
            action="staff.disable",
            target_type="staff_user",
            target_id=user.id,
        )
    return user


async def change_staff_role(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    role: str,
    centre: str | None,
    actor: Principal,
    now: datetime,
) -> StaffUser:
    """New powers take effect at once: the person's sessions end and they sign in again."""
    centre = check_role_and_centre(role, centre)
    user = await get_staff_user(session, user_id)
    user.role = role
    user.centre = centre
    await session.flush()
    await revoke_user_sessions(session, user_id=user.id, now=now)
    await record_audit(
        session,
        actor=actor,
        action="staff.role",
        target_type="staff_user",
        target_id=user.id,
        details={"role": role, "centre": centre},
    )
    return user


async def set_language(session: AsyncSession, *, user_id: uuid.UUID, language: str | None) -> None:
    if language not in (None, "sv", "en"):
        raise InvalidInput("language", "language must be sv or en")
    await session.execute(
        update(StaffUser).where(StaffUser.id == user_id).values(language=language)
    )


async def revoke_user_sessions(session: AsyncSession, *, user_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(WebSession)
        .where(
            WebSession.staff_user_id == user_id,
            or_(WebSession.revoked_at.is_(None), WebSession.revoked_at > now),
        )
        .values(revoked_at=now)
    )
