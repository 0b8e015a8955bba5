"""Schema pieces every resource shares: coordinates, cursor paging.

Coordinates are strict: a string, NaN or infinity, or a value out of range is a
422 naming the field, never coerced. Paging is keyset over ``(created_at, id)``
with an opaque cursor, so a page never skips or repeats rows while others insert.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Select, tuple_

from app.core.errors import InvalidInput
from app.core.schedule import DAYS
from geo.points import LatLon

T = TypeVar("T")
RowT = TypeVar("RowT")

Latitude = Annotated[float, Field(strict=True, ge=-90.0, le=90.0, allow_inf_nan=False)]
Longitude = Annotated[float, Field(strict=True, ge=-180.0, le=180.0, allow_inf_nan=False)]

EmsEta = Annotated[
    int,
    Field(
        strict=True,
        ge=0,
        le=7200,
        description="seconds from now until the first ambulance is expected (the EMS rule)",
        examples=[480],
    ),
]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["17:00"])]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class StrictInput(BaseModel):
    """Base for request bodies: unknown fields are refused, not silently dropped, and
    no string may hold a NUL character (PostgreSQL text cannot store one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class Coordinates(StrictInput):
    """WGS84 degrees, as ``{"lat": …, "lon": …}``."""

    lat: Latitude
    lon: Longitude

    def to_latlon(self) -> LatLon:
        return LatLon(self.lat, self.lon)

    @classmethod
    def from_latlon(cls, point: LatLon) -> Coordinates:
        return cls(lat=point.lat, lon=point.lon)


class ScheduleWindow(StrictInput):
    """Open from ``start`` to ``end`` on each day; an end at or before the start
    crosses midnight (so ``start == end`` is a whole day)."""

    days: list[Day] = Field(min_length=1, max_length=7)
    start: ClockTime
    end: ClockTime


Schedule = Annotated[list[ScheduleWindow], Field(min_length=1, max_length=50)]


def schedule_json(windows: list[ScheduleWindow]) -> list[dict[str, Any]]:
    """The stored (and echoed) form; days de-duplicated, in week order."""
    order = {day: index for index, day in enumerate(DAYS)}
    return [
        {
            "days": sorted(set(window.days), key=order.__getitem__),
            "start": window.start,
            "end": window.end,
        }
        for window in windows
    ]


def time_zone_name(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


TimeZoneName = Annotated[str, Field(max_length=64), AfterValidator(time_zone_name)]


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[T]
    next_cursor: str | None = None


LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size (1..500)")]
CursorQuery = Annotated[
    str | None, Query(max_length=200, description="next_cursor from the previous page")
]


@dataclass(frozen=True)
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


def keyset(
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


def page_of(
    rows: Sequence[RowT],
    *,
    limit: int,
    position: Callable[[RowT], Cursor],
    render: Callable[[RowT], T],
) -> Page[T]:
    """Turn the ``limit + 1`` rows of :func:`keyset` into a page and its next cursor."""
    more = len(rows) > limit
    shown = rows[:limit]
    next_cursor = position(shown[-1]).encode() if more and shown else None
    return Page[T](items=[render(row) for row in shown], next_cursor=next_cursor)
