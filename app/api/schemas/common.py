"""Schema pieces every resource shares: coordinates, schedules, pages.

Coordinates are strict: a string, NaN or infinity, or a value out of range is a
422 naming the field, never coerced. A page is the response form of the keyset
pager of ``app.core.paging``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.core.paging import Paged, RowT
from geo.points import LatLon

T = TypeVar("T")

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


def schedule_windows(windows: list[ScheduleWindow]) -> list[dict[str, Any]]:
    """The windows as the registry takes them (the stored JSON form, not yet normalised)."""
    return [window.model_dump() for window in windows]


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


def page_of(page: Paged[RowT], render: Callable[[RowT], T]) -> Page[T]:
    """The response form of a page of domain rows."""
    return Page[T](items=[render(row) for row in page.rows], next_cursor=page.next_cursor)
