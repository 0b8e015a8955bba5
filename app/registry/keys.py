"""API keys: random, shown once, stored as SHA-256, revocable, one role each.

A key is 256 bits of randomness, so a plain SHA-256 (not a slow password hash) is
the right tool: nobody can brute-force the preimage, and lookup stays one index
probe on the alert path. Revocation takes effect at the next request: no cache.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import func
from sqlalchemy.types import Interval

from app.core.buckets import COUNT_CONFLICT, MINUTE_S, WindowCount, window_of
from app.core.db import DriverConnection, DriverStatement
from app.core.errors import Unauthorized
from app.core.models import ApiKey

Role = Literal["admin", "dispatcher", "locator", "volunteer"]
KEY_PREFIX = "rsp_"
LAST_USED_GRAIN = timedelta(minutes=1)

# One round trip: the lookup, plus the throttled ``last_used_at`` touch as a
# data-modifying CTE (PostgreSQL runs it whether or not the outer query reads it).
# SKIP LOCKED: concurrent requests with one key never queue on its row; a key whose
# row is locked simply keeps its previous last_used_at for this request.
_FOUND_AND_TOUCHED = """
    found AS (
        SELECT id, name, role, centre, volunteer_id, last_used_at FROM api_key
        WHERE key_hash = :key_hash AND revoked_at IS NULL
    ), touched AS (
        UPDATE api_key SET last_used_at = now()
        WHERE id = (
            SELECT api_key.id FROM api_key JOIN found ON found.id = api_key.id
            WHERE found.last_used_at IS NULL OR found.last_used_at < now() - :grain
            FOR UPDATE OF api_key SKIP LOCKED
        )
    )
"""
_PRINCIPAL_COLUMNS = (
    ApiKey.__table__.c.id,
    ApiKey.__table__.c.name,
    ApiKey.__table__.c.role,
    ApiKey.__table__.c.centre,
    ApiKey.__table__.c.volunteer_id,
)
_AUTHENTICATE = (
    text(f"WITH {_FOUND_AND_TOUCHED} SELECT id, name, role, centre, volunteer_id FROM found")
    .bindparams(bindparam("grain", type_=Interval()))
    .columns(*_PRINCIPAL_COLUMNS)
)
# The same lookup with the key's hit in its rate-limit window (``app.core.buckets``),
# for a route that runs on a driver connection: one round trip instead of the
# limiter's count and the lookup. Only a key of ``counted_role`` is counted.
_AUTHENTICATE_COUNTED = DriverStatement(
    text(
        f"""
    WITH {_FOUND_AND_TOUCHED}, hit AS (
        INSERT INTO rate_limit_bucket AS bucket (key, window_start, count, window_s)
        SELECT 'key:' || found.id, CAST(:window_start AS timestamptz), 1,
               CAST(:window_s AS integer)
        FROM found
        WHERE found.role = :counted_role
        {COUNT_CONFLICT}
    )
    SELECT found.id, found.name, found.role, found.centre, found.volunteer_id,
           (SELECT hit.count FROM hit) AS current,
           coalesce((SELECT earlier.count FROM rate_limit_bucket AS earlier
                     WHERE earlier.key = 'key:' || found.id
                       AND earlier.window_start = CAST(:previous_start AS timestamptz)), 0)
               AS previous
    FROM found
    """
    ).bindparams(bindparam("grain", type_=Interval()))
)


@dataclass(frozen=True)
class Principal:
    """Who is acting: an API key, or a person signed in to the console.

    ``key_id`` is the credential's id: the API key's, or for ``kind="staff_user"``
    the staff user's (a coordinator acts with the ``admin`` role).
    """

    key_id: uuid.UUID
    name: str
    role: Role
    centre: str | None
    volunteer_id: uuid.UUID | None
    kind: Literal["api_key", "staff_user"] = "api_key"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def issue_key(
    session: AsyncSession,
    *,
    role: Role,
    name: str,
    centre: str | None = None,
    volunteer_id: uuid.UUID | None = None,
) -> tuple[str, ApiKey]:
    """Create a key; the plaintext is returned here and never again.

    A dispatcher key always names its dispatch centre, explicitly: keys of one centre
    share its incidents (rotating a key never re-creates one), so a default taken
    from the key's name would silently join whichever centre is named like it.
    """
    if role == "dispatcher" and not centre:
        raise ValueError("a dispatcher key needs its dispatch centre")
    plaintext = new_key()
    record = ApiKey(
        name=name,
        role=role,
        centre=centre if role == "dispatcher" else None,
        volunteer_id=volunteer_id,
        key_hash=hash_key(plaintext),
        prefix=plaintext[: len(KEY_PREFIX) + 6],
    )
    session.add(record)
    await session.flush()
    return plaintext, record


def _bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send Authorization: Bearer <key>")
    token = authorization[7:].strip()
    if not token:
        raise Unauthorized("send Authorization: Bearer <key>")
    return token


UNKNOWN_KEY = "unknown or revoked key"


def _principal(record: Mapping[Any, Any]) -> Principal:
    role: Role = record["role"]
    return Principal(
        key_id=record["id"],
        name=record["name"],
        role=role,
        centre=record["centre"],
        volunteer_id=record["volunteer_id"],
    )


async def authenticate(session: AsyncSession, authorization: str | None) -> Principal:
    token = _bearer_token(authorization)
    record = (
        await session.execute(
            _AUTHENTICATE, {"key_hash": hash_key(token), "grain": LAST_USED_GRAIN}
        )
    ).one_or_none()
    if record is None:
        raise Unauthorized(UNKNOWN_KEY)
    return _principal(record._mapping)


async def authenticate_counted(
    connection: AsyncConnection | DriverConnection,
    authorization: str | None,
    *,
    counted_role: Role,
    moment: datetime,
) -> tuple[Principal, WindowCount | None]:
    """Authenticate and, for a key of ``counted_role``, count its hit in one statement.

    The count is the limiter's (bucket ``key:<id>``, one-minute windows, the refused
    requests counted too): the upsert returns the window's count after this hit, so
    judging it against the limit is exact however many requests run at once. The
    caller judges; ``None`` when the key has another role (nothing was counted).
    Revocation takes effect at once: the key is looked up every time.
    """
    token = _bearer_token(authorization)
    window_start, elapsed = window_of(moment)
    record = await _AUTHENTICATE_COUNTED.fetchrow(
        connection,
        {
            "key_hash": hash_key(token),
            "grain": LAST_USED_GRAIN,
            "counted_role": counted_role,
            "window_start": window_start,
            "previous_start": window_start - timedelta(seconds=MINUTE_S),
            "window_s": MINUTE_S,
        },
    )
    if record is None:
        raise Unauthorized(UNKNOWN_KEY)
    principal = _principal(record)
    if record["current"] is None:
        return principal, None
    counted = WindowCount(
        previous=record["previous"], current=record["current"], elapsed=elapsed, window_s=MINUTE_S
    )
    return principal, counted


async def revoke_key(session: AsyncSession, *, key_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    )
    return result.scalar_one_or_none() is not None
