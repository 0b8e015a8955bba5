"""Weekly schedules (volunteer places, AED opening hours) as minutes of the week.

A schedule is a list of windows ``{"days": [...], "start": "HH:MM", "end": "HH:MM"}``
in a named time zone; an end at or before the start crosses midnight into the next
day (and Sunday night wraps to Monday morning). It is stored as an
``int4multirange`` over [0, 10080), Monday 00:00 = 0, so "is it covered now?" is a
single ``@>`` against the current minute of the week in that zone, evaluated in SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, cast, func, literal
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.sql.elements import ColumnElement

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


def schedule_json(windows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stored (and echoed) form; days de-duplicated, in week order."""
    order = {day: index for index, day in enumerate(DAYS)}
    return [
        {
            "days": sorted(set(window["days"]), key=order.__getitem__),
            "start": window["start"],
            "end": window["end"],
        }
        for window in windows
    ]


def _minutes(value: str) -> int:
    parsed = time.fromisoformat(value)
    return parsed.hour * 60 + parsed.minute


def week_ranges(windows: list[dict[str, Any]]) -> list[Range[int]]:
    """Normalised, merged half-open ranges covering every window of the schedule."""
    spans: list[tuple[int, int]] = []
    for window in windows:
        start, end = _minutes(window["start"]), _minutes(window["end"])
        length = end - start if end > start else MINUTES_PER_DAY - start + end
        for day in window["days"]:
            begin = DAYS.index(day) * MINUTES_PER_DAY + start
            finish = begin + length
            if finish <= MINUTES_PER_WEEK:
                spans.append((begin, finish))
            else:
                spans.append((begin, MINUTES_PER_WEEK))
                spans.append((0, finish - MINUTES_PER_WEEK))
    spans.sort()
    merged: list[list[int]] = []
    for begin, finish in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], finish)
        else:
            merged.append([begin, finish])
    return [Range(begin, finish, bounds="[)") for begin, finish in merged]


def minute_of_week(moment: datetime, zone: ZoneInfo) -> int:
    local = moment.astimezone(zone)
    return local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute


def minute_of_week_sql(
    moment: datetime | ColumnElement[datetime], zone_column: Any
) -> ColumnElement[int]:
    """The same as :func:`minute_of_week`, in SQL, for a time zone stored per row.

    ``moment`` may be a bound parameter, for statements built once and reused.
    """
    instant = moment if isinstance(moment, ColumnElement) else literal(moment)
    local = func.timezone(zone_column, instant)
    return cast(
        (cast(func.extract("isodow", local), Integer) - 1) * MINUTES_PER_DAY
        + cast(func.extract("hour", local), Integer) * 60
        + cast(func.extract("minute", local), Integer),
        Integer,
    )


def covers(ranges_column: Any, minute: ColumnElement[int] | int) -> ColumnElement[bool]:
    """True when the schedule is NULL (always) or contains the given minute."""
    covered: ColumnElement[bool] = ranges_column.is_(None) | ranges_column.contains(minute)
    return covered


def within_hours(window: str | None, *, now: datetime, zone: ZoneInfo) -> bool:
    """``now`` lies in the daily window ``HH:MM-HH:MM`` in ``zone``: start inclusive,
    end exclusive; an end before the start crosses midnight. No window covers nothing.

    Used for ``QUIET_HOURS`` (no alerts) and ``REMINDER_HOURS`` (renewal reminders).
    """
    if not window:
        return False
    start_text, end_text = window.split("-")
    start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
    local = now.astimezone(zone).time().replace(tzinfo=None)
    if start <= end:
        return start <= local < end
    return local >= start or local < end
