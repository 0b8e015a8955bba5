"""AEDs: where the defibrillators are, when they can be reached, whether they work.

Opening hours are in the ``TIMEZONE`` setting and stored like place schedules (JSON
echoed, ``int4multirange`` tested); ``"always"`` stores no ranges. Imports accept a
CSV file (``lat,lon,address,description,access,status``) or a GeoJSON
FeatureCollection of points; each bad line or feature is reported, the rest kept.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict

from sqlalchemy import Select, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import InvalidInput, NotFound
from app.core.models import Aed
from app.core.paging import Paged, fetch_page
from app.core.schedule import DAYS, schedule_json, week_ranges
from app.registry.audit import record_audit
from app.registry.keys import Principal
from app.registry.uploads import (
    NUL_MESSAGE,
    ImportOutcome,
    LineErrors,
    csv_rows,
    decode_utf8,
    holds_nul,
)
from geo.points import LatLon, geography_point, latitude, longitude

CSV_HEADER = ("lat", "lon", "address", "description", "access", "status")
IMPORT_CHUNK = 1000
_WINDOW = re.compile(
    r"^\s*(?P<days>[a-z,\-\s]+?)\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})\s*$"
)
_COLUMNS = (
    Aed.id,
    latitude(Aed.location).label("lat"),
    longitude(Aed.location).label("lon"),
    Aed.address,
    Aed.description,
    Aed.access,
    Aed.status,
    Aed.created_at,
    Aed.updated_at,
)
Access = Literal["always"] | list[dict[str, Any]]
"""``"always"``, or weekly windows ``{"days", "start", "end"}`` in the ``TIMEZONE``."""


@dataclass(frozen=True, slots=True)
class NewAed:
    location: LatLon
    address: str
    description: str | None
    access: Access
    status: str


class AedChanges(TypedDict, total=False):
    """The fields to change; ``None`` is refused where the field is required."""

    location: LatLon | None
    address: str | None
    description: str | None
    access: Access | None
    status: str | None


@dataclass(frozen=True, slots=True)
class StoredAed:
    id: uuid.UUID
    location: LatLon
    address: str
    description: str | None
    access: Access
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AedFile:
    """A readable import file: its entries (still to validate) by line, and bad lines."""

    entries: list[tuple[int, dict[str, Any]]]
    errors: LineErrors


def _stored(row: Any) -> StoredAed:
    return StoredAed(
        id=row.id,
        location=LatLon(row.lat, row.lon),
        address=row.address,
        description=row.description,
        access=row.access,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _access_columns(access: Access) -> dict[str, Any]:
    if isinstance(access, str):
        return {"access": "always", "open_minutes": None}
    windows = schedule_json(access)
    return {"access": windows, "open_minutes": week_ranges(windows)}


def _row_values(data: NewAed) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "location": f"SRID=4326;POINT({data.location.lon!r} {data.location.lat!r})",
        "address": data.address,
        "description": data.description,
        "status": data.status,
        **_access_columns(data.access),
    }


async def create_aed(session: AsyncSession, *, data: NewAed, actor: Principal) -> StoredAed:
    row = (await session.execute(insert(Aed).values(_row_values(data)).returning(*_COLUMNS))).one()
    await record_audit(
        session, actor=actor, action="aed.create", target_type="aed", target_id=row.id
    )
    return _stored(row)


async def get_aed(session: AsyncSession, aed_id: uuid.UUID) -> StoredAed:
    row = (await session.execute(select(*_COLUMNS).where(Aed.id == aed_id))).one_or_none()
    if row is None:
        raise NotFound(f"no AED {aed_id}")
    return _stored(row)


async def list_aeds(
    session: AsyncSession, *, status: str | None, cursor: str | None, limit: int
) -> Paged[StoredAed]:
    statement: Select[Any] = select(*_COLUMNS)
    if status is not None:
        statement = statement.where(Aed.status == status)
    page = await fetch_page(session, statement, model=Aed, cursor=cursor, limit=limit)
    return page.map(_stored)


async def update_aed(
    session: AsyncSession, *, aed_id: uuid.UUID, changes: AedChanges, actor: Principal
) -> StoredAed:
    given = set(changes)
    for required in ("location", "address", "access", "status"):
        if required in given and changes.get(required) is None:
            raise InvalidInput(required, "may not be null")
    values: dict[str, Any] = {}
    location = changes.get("location")
    if location is not None:
        values["location"] = geography_point(location)
    access = changes.get("access")
    if access is not None:
        values.update(_access_columns(access))
    for name in ("address", "description", "status"):
        if name in given:
            values[name] = changes.get(name)
    statement = update(Aed).where(Aed.id == aed_id).returning(*_COLUMNS)
    row = (await session.execute(statement.values(values or {"id": Aed.id}))).one_or_none()
    if row is None:
        raise NotFound(f"no AED {aed_id}")
    await record_audit(
        session,
        actor=actor,
        action="aed.update",
        target_type="aed",
        target_id=aed_id,
        details={"fields": sorted(given)},
    )
    return _stored(row)


def parse_access(cell: str) -> Any:
    """``always``, a JSON list of windows, or ``mon-fri 06:00-22:00; sat 10:00-16:00``.

    The syntax of an import's CSV cell, and of the console's opening-hours field.
    """
    text = cell.strip()
    if not text or text.lower() == "always":
        return "always"
    if text.startswith("["):
        return _json(text)
    windows = []
    for part in text.lower().split(";"):
        match = _WINDOW.match(part)
        if match is None:
            raise ValueError(f"cannot read opening hours {part.strip()!r}")
        days: list[str] = []
        for item in match["days"].replace(" ", "").split(","):
            first, _, last = item.partition("-")
            if first not in DAYS or (last and last not in DAYS):
                raise ValueError(f"unknown day in {item!r}")
            begin, end = DAYS.index(first), DAYS.index(last or first)
            days.extend(
                DAYS[index % 7] for index in range(begin, end + 1 if end >= begin else end + 8)
            )
        windows.append({"days": days, "start": match["start"], "end": match["end"]})
    return windows


def _json(text: str) -> Any:
    """``json.loads``, with nesting past the parser's depth a ``ValueError`` like any
    other malformed JSON (it raises ``RecursionError``, which would answer 500)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _csv_entries(text: str, errors: LineErrors) -> list[tuple[int, dict[str, Any]]]:
    entries: list[tuple[int, dict[str, Any]]] = []
    for line, cells in csv_rows(text, header=CSV_HEADER, errors=errors):
        lat, lon, address, description, access, status = (cells[name] for name in CSV_HEADER)
        try:
            coordinates = {"lat": float(lat), "lon": float(lon)}
        except ValueError:
            errors.add(line, "location", "lat and lon must be numbers")
            continue
        try:
            parsed_access = parse_access(access)
        except ValueError as exc:
            errors.add(line, "access", str(exc))
            continue
        entry = {
            "location": coordinates,
            "address": address,
            "description": description or None,
            "access": parsed_access,
            "status": status or "active",
        }
        entries.append((line, entry))
    return entries


def _geojson_entries(text: str, errors: LineErrors) -> list[tuple[int, dict[str, Any]]]:
    try:
        document = _json(text)
    except ValueError as exc:
        raise InvalidInput("body", f"not GeoJSON: {exc}") from None
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise InvalidInput("type", "expected a GeoJSON FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise InvalidInput("features", "expected a list of features")
    entries: list[tuple[int, dict[str, Any]]] = []
    for index, feature in enumerate(features):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if (
            not isinstance(geometry, dict)
            or geometry.get("type") != "Point"
            or not isinstance(coordinates, list)
            or len(coordinates) < 2
        ):
            errors.add(index, "geometry", "expected a Point geometry")
            continue
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            errors.add(index, "properties", "expected an object")
            continue
        if holds_nul(properties):
            errors.add(index, "properties", NUL_MESSAGE)
            continue
        lon, lat = coordinates[0], coordinates[1]
        entry = {
            "location": {"lat": lat, "lon": lon},
            "address": properties.get("address"),
            "description": properties.get("description"),
            "access": properties.get("access", "always"),
            "status": properties.get("status", "active"),
        }
        entries.append((index, entry))
    return entries


def read_aed_file(data: bytes, *, geojson: bool) -> AedFile:
    """The entries of a CSV or GeoJSON import, each still to be validated as an AED
    (by the same schema as a single AED), and the lines that are not even entries."""
    errors = LineErrors()
    text = decode_utf8(data)
    entries = _geojson_entries(text, errors) if geojson else _csv_entries(text, errors)
    return AedFile(entries=entries, errors=errors)


async def import_aeds(
    session: AsyncSession, *, aeds: Sequence[NewAed], refused: LineErrors, actor: Principal
) -> ImportOutcome:
    """Insert every valid AED of a file; ``refused`` are its other lines (or features)."""
    for start in range(0, len(aeds), IMPORT_CHUNK):
        chunk = aeds[start : start + IMPORT_CHUNK]
        await session.execute(insert(Aed), [_row_values(aed) for aed in chunk])
    await record_audit(
        session,
        actor=actor,
        action="aed.import",
        target_type="aed",
        target_id=None,
        details={"created": len(aeds), "rejected": refused.count},
    )
    return refused.outcome(created=len(aeds))
