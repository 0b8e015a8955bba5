"""Browser sessions, stored in PostgreSQL: revocable, with idle and absolute timeouts.

The cookie carries 256 random bits; the table keeps only their SHA-256, so a copy
of the database opens no session. A new id is issued at every sign-in step (the
password, then the second factor), so an id planted before sign-in is worthless.
Each session has its own CSRF token, checked on every state-changing request.

``last_seen_at`` is written at most once a minute per session: the idle timeout is
counted in minutes, and a busy page must not write on every request. A live page
(the dispatcher's incident) keeps its session alive through its event stream.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.core.models import StaffUser, Volunteer, WebSession
from app.core.settings import Settings
from app.registry.staff import hash_secret

TOUCH_GRAIN = timedelta(minutes=1)


@dataclass(frozen=True)
class SignedInUser:
    """A snapshot of the person, valid after the request's transaction has ended."""

    id: uuid.UUID
    email: str
    name: str
    role: str
    centre: str | None
    language: str | None
    totp_enabled: bool

    @classmethod
    def of(cls, user: StaffUser) -> SignedInUser:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            role=user.role,
            centre=user.centre,
            language=user.language,
            totp_enabled=user.totp_enabled_at is not None,
        )


@dataclass(frozen=True)
class StaffSession:
    token_hash: str
    csrf_token: str
    second_factor_pending: bool
    user: SignedInUser


async def open_session(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    now: datetime,
    settings: Settings,
    second_factor_pending: bool = False,
    replaces: str | None = None,
) -> str:
    """A new session for the user; the token is for the cookie and is not stored.

    ``replaces`` (a token) is revoked in the same transaction: the id rotates.
    """
    if replaces is not None:
        await revoke_session(session, token=replaces, now=now)
    return await _add_session(
        session,
        now=now,
        settings=settings,
        staff_user_id=user_id,
        second_factor_pending=second_factor_pending,
    )


async def _add_session(
    session: AsyncSession, *, now: datetime, settings: Settings, **subject: Any
) -> str:
    """Store a new session of ``subject`` (a staff user or a volunteer); its cookie token."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=hash_secret(token),
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + settings.session_max_age,
            **subject,
        )
    )
    await session.flush()
    return token


def _live(token: str, *, now: datetime, settings: Settings) -> list[ColumnElement[bool]]:
    """The session of this token, unless revoked, past its absolute or idle timeout."""
    return [
        WebSession.token_hash == hash_secret(token),
        WebSession.revoked_at.is_(None),
        WebSession.expires_at > now,
        WebSession.last_seen_at > now - settings.session_idle_timeout,
    ]


async def _keep_alive(session: AsyncSession, web_session: WebSession, *, now: datetime) -> None:
    if web_session.last_seen_at <= now - TOUCH_GRAIN:
        await touch_session(session, token_hash=web_session.token_hash, now=now)


async def find_session(
    session: AsyncSession, *, token: str, now: datetime, settings: Settings
) -> StaffSession | None:
    """The live session of this token (touched), or None when it ended for any reason."""
    row = (
        await session.execute(
            select(WebSession, StaffUser)
            .join(StaffUser, StaffUser.id == WebSession.staff_user_id)
            .where(*_live(token, now=now, settings=settings), StaffUser.disabled_at.is_(None))
        )
    ).one_or_none()
    if row is None:
        return None
    web_session: WebSession = row.WebSession
    await _keep_alive(session, web_session, now=now)
    return StaffSession(
        token_hash=web_session.token_hash,
        csrf_token=web_session.csrf_token,
        second_factor_pending=web_session.second_factor_pending,
        user=SignedInUser.of(row.StaffUser),
    )


async def touch_session(session: AsyncSession, *, token_hash: str, now: datetime) -> None:
    """The person is still there (a request, or a live page's open stream)."""
    await session.execute(
        update(WebSession)
        .where(WebSession.token_hash == token_hash, WebSession.revoked_at.is_(None))
        .values(last_seen_at=now)
    )


async def revoke_session(session: AsyncSession, *, token: str, now: datetime) -> None:
    await session.execute(
        update(WebSession)
        .where(WebSession.token_hash == hash_secret(token), WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


@dataclass(frozen=True)
class VolunteerSession:
    """A volunteer signed in to their own pages."""

    token_hash: str
    csrf_token: str
    volunteer_id: uuid.UUID
    language: str


async def open_volunteer_session(
    session: AsyncSession, *, volunteer_id: uuid.UUID, now: datetime, settings: Settings
) -> str:
    """A session for a volunteer who entered their SMS code; the token is for the cookie.

    The same table, timeouts and hashing as the console's; a volunteer's session
    never opens a console page (those look sessions up through the staff user).
    """
    return await _add_session(session, now=now, settings=settings, volunteer_id=volunteer_id)


async def find_volunteer_session(
    session: AsyncSession, *, token: str, now: datetime, settings: Settings
) -> VolunteerSession | None:
    row = (
        await session.execute(
            select(WebSession, Volunteer.id.label("volunteer_id"), Volunteer.language)
            .join(Volunteer, Volunteer.id == WebSession.volunteer_id)
            .where(*_live(token, now=now, settings=settings), Volunteer.status != "erased")
        )
    ).one_or_none()
    if row is None:
        return None
    web_session: WebSession = row.WebSession
    await _keep_alive(session, web_session, now=now)
    return VolunteerSession(
        token_hash=web_session.token_hash,
        csrf_token=web_session.csrf_token,
        volunteer_id=row.volunteer_id,
        language=row.language,
    )
