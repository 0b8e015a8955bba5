"""API keys: random, shown once, stored as SHA-256, revocable, one role each.

A key is 256 bits of randomness, so a plain SHA-256 (not a slow password hash) is
the right tool: nobody can brute-force the preimage, and lookup stays one index
probe on the alert path. Revocation takes effect at the next request: no cache.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import bindparam, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import func
from sqlalchemy.types import Interval

from app.core.errors import Unauthorized
from app.core.models import ApiKey

Role = Literal["admin", "dispatcher", "locator", "volunteer"]
KEY_PREFIX = "rsp_"
LAST_USED_GRAIN = timedelta(minutes=1)

# One round trip: the lookup, plus the throttled ``last_used_at`` touch as a
# data-modifying CTE (PostgreSQL runs it whether or not the outer query reads it).
# SKIP LOCKED: concurrent requests with one key never queue on its row; a key whose
# row is locked simply keeps its previous last_used_at for this request.
_AUTHENTICATE = (
    text(
        """
    WITH found AS (
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
    SELECT id, name, role, centre, volunteer_id FROM found
    """
    )
    .bindparams(bindparam("grain", type_=Interval()))
    .columns(
        ApiKey.__table__.c.id,
        ApiKey.__table__.c.name,
        ApiKey.__table__.c.role,
        ApiKey.__table__.c.centre,
        ApiKey.__table__.c.volunteer_id,
    )
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


async def authenticate(session: AsyncSession, authorization: str | None) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send Authorization: Bearer <key>")
    token = authorization[7:].strip()
    if not token:
        raise Unauthorized("send Authorization: Bearer <key>")
    record = (
        await session.execute(
            _AUTHENTICATE, {"key_hash": hash_key(token), "grain": LAST_USED_GRAIN}
        )
    ).one_or_none()
    if record is None:
        raise Unauthorized("unknown or revoked key")
    role: Role = record.role
    return Principal(
        key_id=record.id,
        name=record.name,
        role=role,
        centre=record.centre,
        volunteer_id=record.volunteer_id,
    )


async def revoke_key(session: AsyncSession, *, key_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    )
    return result.scalar_one_or_none() is not None
