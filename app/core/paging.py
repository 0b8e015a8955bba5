"""Keyset paging over ``(created_at, id)``, newest first, with an opaque cursor.

A page never skips or repeats rows while others insert (an OFFSET would). The
pager is domain-neutral: a statement, a cursor and a limit in; the page's rows and
the cursor of the next page out. How a page is rendered is the caller's business.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidInput

RowT = TypeVar("RowT")
OtherT = TypeVar("OtherT")
PositionedT = TypeVar("PositionedT", bound="Positioned")


class Positioned(Protocol):
    """A row that knows its place in the order: ORM rows and result rows alike."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after the last row of a page: its ``(created_at, id)``."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), str(self.id)]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            created_at, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
            moment = datetime.fromisoformat(created_at)
            if moment.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(created_at=moment, id=uuid.UUID(row_id))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput("cursor", "not a cursor returned by this list") from exc


@dataclass(frozen=True, slots=True)
class Paged(Generic[RowT]):
    """The rows of one page; ``next_cursor`` is ``None`` on the last page."""

    rows: Sequence[RowT]
    next_cursor: str | None

    def map(self, convert: Callable[[RowT], OtherT]) -> Paged[OtherT]:
        return Paged(rows=[convert(row) for row in self.rows], next_cursor=self.next_cursor)


async def fetch_page(
    session: AsyncSession, statement: Select[Any], *, model: Any, cursor: str | None, limit: int
) -> Paged[Any]:
    """The page of ``statement`` after ``cursor``, newest ``model`` row first.

    ``model`` is the ORM class whose ``created_at`` and ``id`` order the page. A
    statement that selects that one entity pages ORM objects; one that selects
    columns pages result rows (which must include ``created_at`` and ``id``).
    """
    ordered = _keyset(
        statement, created_at=model.created_at, id_column=model.id, cursor=cursor, limit=limit
    )
    result = await session.execute(ordered)
    selected = statement.column_descriptions
    entities = len(selected) == 1 and selected[0]["expr"] is model
    rows = result.scalars().all() if entities else result.all()
    return _paged(rows, limit=limit)


def _keyset(
    statement: Select[Any],
    *,
    created_at: Any,
    id_column: Any,
    cursor: str | None,
    limit: int,
) -> Select[Any]:
    """Newest first, starting after ``cursor``; fetches one extra row to detect more."""
    if cursor is not None:
        position = Cursor.decode(cursor)
        statement = statement.where(
            tuple_(created_at, id_column) < tuple_(position.created_at, position.id)
        )
    return statement.order_by(created_at.desc(), id_column.desc()).limit(limit + 1)


def _paged(rows: Sequence[PositionedT], *, limit: int) -> Paged[PositionedT]:
    """Turn the ``limit + 1`` rows of :func:`_keyset` into a page and its next cursor."""
    shown = rows[:limit]
    more = len(rows) > limit
    next_cursor = Cursor(shown[-1].created_at, shown[-1].id).encode() if more and shown else None
    return Paged(rows=shown, next_cursor=next_cursor)
