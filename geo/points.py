"""Points: WGS84 coordinates in and out of ``geography(Point, 4326)``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from geoalchemy2 import Geography, WKBElement
from geoalchemy2.shape import to_shape
from sqlalchemy import cast, func
from sqlalchemy.sql.elements import ColumnElement


@dataclass(frozen=True)
class LatLon:
    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and math.isfinite(self.lon)):
            raise ValueError("coordinates must be finite numbers")
        if not (-90.0 <= self.lat <= 90.0 and -180.0 <= self.lon <= 180.0):
            raise ValueError("latitude must be within ±90 and longitude within ±180")


GEOGRAPHY = Geography(geometry_type="POINT", srid=4326)


def geography_point(point: LatLon) -> ColumnElement[Any]:
    """A bound point cast to geography with an explicit SRID (asyncpg needs the cast)."""
    return cast(
        func.ST_SetSRID(func.ST_MakePoint(point.lon, point.lat), 4326),
        GEOGRAPHY,
    )


def lat_lon_of(point: WKBElement) -> LatLon:
    """The coordinates of a point as loaded from a ``geography(Point)`` column, read
    from its WKB in process: no round trip for what the row already holds."""
    shape = to_shape(point)
    return LatLon(lat=shape.y, lon=shape.x)


def latitude(column: Any) -> ColumnElement[float]:
    return func.ST_Y(cast(column, _geometry()))


def longitude(column: Any) -> ColumnElement[float]:
    return func.ST_X(cast(column, _geometry()))


def _geometry() -> Any:
    from geoalchemy2 import Geometry

    return Geometry(geometry_type="POINT", srid=4326)
