"""Who looked: reads of a volunteer's personal data, once per reader, record and day.

Written by whoever serves the read, in its transaction, with one
``INSERT … ON CONFLICT DO NOTHING``: the first read of the day is recorded with its
time, repeated reads (a CAD polling its incident every second) add nothing. The
volunteer's export lists these rows (``app/registry/export.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import AccessLog
from app.registry.audit import Actor

ReadKind = Literal["contacts", "explain", "profile", "attachment"]


@dataclass(frozen=True)
class PersonalRead:
    """One volunteer's data read: ``contacts`` of an incident's responders (the incident
    id), an ``explain`` answer (the incident id), a ``profile``, an ``attachment``."""

    volunteer_id: uuid.UUID
    what: ReadKind
    target_id: uuid.UUID | str = ""


def reader_of(actor: Actor) -> str:
    """A stable identity for the log: the API key or the console user, by id."""
    if actor.kind == "api_key":
        return f"key:{actor.key_id}"
    if actor.kind == "staff_user":
        return f"user:{actor.key_id}"
    return actor.name[:100]


async def record_reads(
    session: AsyncSession,
    *,
    reader: Actor,
    reads: list[PersonalRead],
    now: datetime,
    zone: ZoneInfo,
) -> None:
    if not reads:
        return
    identity = reader_of(reader)
    day = now.astimezone(zone).date()
    rows = {
        (read.volunteer_id, read.what, str(read.target_id)): {
            "day": day,
            "reader": identity,
            "reader_name": reader.name[:200],
            "volunteer_id": read.volunteer_id,
            "what": read.what,
            "target_id": str(read.target_id),
            "first_at": now,
        }
        for read in reads
    }
    await session.execute(pg_insert(AccessLog).values(list(rows.values())).on_conflict_do_nothing())
