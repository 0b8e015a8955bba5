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
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Select, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.aeds import AedCreate, AedOut, AedUpdate
from app.api.schemas.common import (
    Coordinates,
    Cursor,
    Page,
    ScheduleWindow,
    keyset,
    page_of,
    schedule_json,
)
from app.api.schemas.volunteers import ImportLineError, ImportReport
from app.core.errors import InvalidInput, NotFound
from app.core.models import Aed
from app.core.schedule import DAYS, week_ranges
from app.registry.audit import record_audit
from app.registry.keys import Principal
from app.registry.uploads import LineErrors, csv_rows, decode_utf8
from geo.points import geography_point, latitude, longitude

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
_aed_input = TypeAdapter(AedCreate)


def _render(row: Any) -> AedOut:
    return AedOut(
        id=row.id,
        location=Coordinates(lat=row.lat, lon=row.lon),
        address=row.address,
        description=row.description,
        access=row.access,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _access_columns(access: str | list[ScheduleWindow]) -> dict[str, Any]:
    if access == "always" or isinstance(access, str):
        return {"access": "always", "open_minutes": None}
    windows = schedule_json(access)
    return {"access": windows, "open_minutes": week_ranges(windows)}


def _row_values(data: AedCreate) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "location": f"SRID=4326;POINT({data.location.lon!r} {data.location.lat!r})",
        "address": data.address,
        "description": data.description,
        "status": data.status,
        **_access_columns(data.access),
    }


async def create_aed(session: AsyncSession, *, data: AedCreate, actor: Principal) -> AedOut:
    row = (await session.execute(insert(Aed).values(_row_values(data)).returning(*_COLUMNS))).one()
    await record_audit(
        session, actor=actor, action="aed.create", target_type="aed", target_id=row.id
    )
    return _render(row)


async def get_aed(session: AsyncSession, aed_id: uuid.UUID) -> AedOut:
    row = (await session.execute(select(*_COLUMNS).where(Aed.id == aed_id))).one_or_none()
    if row is None:
        raise NotFound(f"no AED {aed_id}")
    return _render(row)


async def list_aeds(
    session: AsyncSession, *, status: str | None, cursor: str | None, limit: int
) -> Page[AedOut]:
    statement: Select[Any] = select(*_COLUMNS)
    if status is not None:
        statement = statement.where(Aed.status == status)
    rows = (
        await session.execute(
            keyset(
                statement, created_at=Aed.created_at, id_column=Aed.id, cursor=cursor, limit=limit
            )
        )
    ).all()
    return page_of(
        rows, limit=limit, position=lambda row: Cursor(row.created_at, row.id), render=_render
    )


async def update_aed(
    session: AsyncSession, *, aed_id: uuid.UUID, changes: AedUpdate, actor: Principal
) -> AedOut:
    given = changes.model_fields_set
    for required in ("location", "address", "access", "status"):
        if required in given and getattr(changes, required) is None:
            raise InvalidInput(required, "may not be null")
    values: dict[str, Any] = {}
    if changes.location is not None:
        values["location"] = geography_point(changes.location.to_latlon())
    if changes.access is not None:
        values.update(_access_columns(changes.access))
    for name in ("address", "description", "status"):
        if name in given:
            values[name] = getattr(changes, name)
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
    return _render(row)


def _parse_access(cell: str) -> Any:
    """``always``, a JSON list of windows, or ``mon-fri 06:00-22:00; sat 10:00-16:00``."""
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


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    error = exc.errors()[0]
    # Drop union-member tags such as "literal['always']" from the location.
    field = ".".join(str(part) for part in error["loc"] if "[" not in str(part)) or None
    return field, error["msg"]


def _csv_items(text: str, errors: LineErrors) -> list[tuple[int, AedCreate]]:
    items: list[tuple[int, AedCreate]] = []
    for line, cells in csv_rows(text, header=CSV_HEADER):
        if len(cells) != len(CSV_HEADER):
            errors.add(line, None, f"expected {len(CSV_HEADER)} columns, got {len(cells)}")
            continue
        lat, lon, address, description, access, status = (cell.strip() for cell in cells)
        try:
            coordinates = {"lat": float(lat), "lon": float(lon)}
        except ValueError:
            errors.add(line, "location", "lat and lon must be numbers")
            continue
        try:
            parsed_access = _parse_access(access)
        except ValueError as exc:
            errors.add(line, "access", str(exc))
            continue
        _validate_into(
            items,
            errors,
            line,
            {
                "location": coordinates,
                "address": address,
                "description": description or None,
                "access": parsed_access,
                "status": status or "active",
            },
        )
    return items


def _geojson_items(text: str, errors: LineErrors) -> list[tuple[int, AedCreate]]:
    try:
        document = _json(text)
    except ValueError as exc:
        raise InvalidInput("body", f"not GeoJSON: {exc}") from None
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise InvalidInput("type", "expected a GeoJSON FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise InvalidInput("features", "expected a list of features")
    items: list[tuple[int, AedCreate]] = []
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
        lon, lat = coordinates[0], coordinates[1]
        _validate_into(
            items,
            errors,
            index,
            {
                "location": {"lat": lat, "lon": lon},
                "address": properties.get("address"),
                "description": properties.get("description"),
                "access": properties.get("access", "always"),
                "status": properties.get("status", "active"),
            },
        )
    return items


def _validate_into(
    items: list[tuple[int, AedCreate]], errors: LineErrors, line: int, raw: dict[str, Any]
) -> None:
    try:
        items.append((line, _aed_input.validate_python(raw)))
    except ValidationError as exc:
        errors.add(line, *_first_error(exc))


async def import_aeds(
    session: AsyncSession, *, data: bytes, geojson: bool, actor: Principal
) -> ImportReport:
    """Insert every valid AED of the file; ``line`` is the CSV line or the feature index."""
    errors = LineErrors()
    text = decode_utf8(data)
    items = _geojson_items(text, errors) if geojson else _csv_items(text, errors)
    for start in range(0, len(items), IMPORT_CHUNK):
        chunk = items[start : start + IMPORT_CHUNK]
        await session.execute(insert(Aed), [_row_values(item) for _, item in chunk])
    await record_audit(
        session,
        actor=actor,
        action="aed.import",
        target_type="aed",
        target_id=None,
        details={"created": len(items), "rejected": len(errors.items)},
    )
    return ImportReport(
        created=len(items),
        errors=[
            ImportLineError(line=line, field=field_name, message=message)
            for line, field_name, message in errors.items
        ],
    )
