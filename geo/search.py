"""Radius, nearest-first and distance expressions, the nearest open AED, the service area.

Two measures of distance coexist on purpose. ``<->`` on geography is spherical and
index-assisted: it orders a GiST scan nearest-first, so a query reads only the rows
it returns. ``ST_DWithin`` and ``ST_Distance`` on geography use the WGS84 spheroid:
every yes/no decision about a radius, and every distance shown to a person, uses
them. The sphere can be off by a few metres at 500 m, which must never decide who
is alerted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from shapely import prepared
from shapely.geometry import Point, shape
from shapely.ops import unary_union
from sqlalchemy import Float, bindparam, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.models import Aed
from geo.points import GEOGRAPHY, LatLon, geography_point, latitude, longitude


def bound_point(lat_param: str, lon_param: str) -> ColumnElement[Any]:
    """A geography point from two named bind parameters, for statements built once."""
    return cast(
        func.ST_SetSRID(
            func.ST_MakePoint(
                bindparam(lon_param, type_=Float()), bindparam(lat_param, type_=Float())
            ),
            4326,
        ),
        GEOGRAPHY,
    )


def within_radius(location: Any, centre: Any, radius_m: float) -> ColumnElement[bool]:
    """Spheroid radius test; GiST-indexable (PostGIS adds the ``&&`` box for the index)."""
    within: ColumnElement[bool] = location.ST_DWithin(centre, radius_m)
    return within


def nearest_first(location: Any, centre: Any) -> ColumnElement[float]:
    """KNN ordering key (spherical): only for ``ORDER BY … LIMIT``, never for a decision."""
    ordering: ColumnElement[float] = location.op("<->")(centre)
    return ordering


def distance_m(location: Any, other: Any) -> ColumnElement[float]:
    """Geodesic distance on the WGS84 spheroid, in metres."""
    distance: ColumnElement[float] = location.ST_Distance(other)
    return distance


@dataclass(frozen=True)
class NearestAed:
    id: uuid.UUID
    location: LatLon
    distance_m: float
    address: str
    description: str | None


async def nearest_aed(
    session: AsyncSession, *, point: LatLon, radius_m: float, available: ColumnElement[bool]
) -> NearestAed | None:
    """The nearest AED within the radius among those ``available`` (a dispatch rule)."""
    here = geography_point(point)
    row = (
        await session.execute(
            select(
                Aed.id,
                latitude(Aed.location).label("lat"),
                longitude(Aed.location).label("lon"),
                distance_m(Aed.location, here).label("distance_m"),
                Aed.address,
                Aed.description,
            )
            .where(
                available,
                within_radius(Aed.location, here, radius_m),
            )
            .order_by(nearest_first(Aed.location, here))
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        return None
    return NearestAed(
        id=row.id,
        location=LatLon(row.lat, row.lon),
        distance_m=row.distance_m,
        address=row.address,
        description=row.description,
    )


class ServiceArea:
    """The region the service covers: a GeoJSON polygon (or features) in WGS84.

    Tested in process with a prepared shapely geometry (no round trip on the alert
    path). A point on the boundary is inside (``covers``, not ``contains``).
    """

    def __init__(self, geometry: Any) -> None:
        if geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise ValueError("the service area must be a Polygon or MultiPolygon")
        self._geometry = prepared.prep(geometry)

    def covers(self, point: LatLon) -> bool:
        return bool(self._geometry.covers(Point(point.lon, point.lat)))

    @classmethod
    def from_geojson(cls, document: dict[str, Any]) -> ServiceArea:
        kind = document.get("type")
        if kind == "FeatureCollection":
            geometries = [shape(feature["geometry"]) for feature in document["features"]]
            return cls(unary_union(geometries))
        if kind == "Feature":
            return cls(shape(document["geometry"]))
        return cls(shape(document))


@lru_cache(maxsize=4)
def load_service_area(path: Path) -> ServiceArea:
    """Read and validate the file once per process; a broken file raises ``ValueError``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return ServiceArea.from_geojson(document)
    except (OSError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"service area {path}: not a GeoJSON polygon ({exc})") from exc
