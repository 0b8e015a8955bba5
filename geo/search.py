"""Radius, nearest-first and distance expressions, the nearest open AED, the service area.

Two measures of distance coexist on purpose. Ordering is index-assisted: ``<->`` on
geography (spherical), or, on the candidate search's hot path, ``<->`` on the point
projected to World Mercator (see ``mercator``), which a GiST index walks about three
times faster. ``ST_DWithin`` and ``ST_Distance`` on geography use the WGS84
spheroid: every yes/no decision about a radius, and every distance shown to a
person, uses them. Neither ordering may ever decide who is alerted.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from shapely import prepared
from shapely.geometry import Point, shape
from shapely.ops import unary_union
from sqlalchemy import Float, Integer, Select, bindparam, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.core.db import session_query
from app.core.models import MERCATOR_SRID, Aed
from geo.points import GEOGRAPHY, LatLon, latitude, longitude


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


# World Mercator (EPSG:3395) is conformal on the WGS84 ellipsoid, so a planar distance
# in it is the true distance times one local scale factor, sec(lat) * sqrt(1 - e2 sin2(lat)).
# Across a disc of radius r it varies by at most 2 tan(lat) r / R: 0.026 % at 59 deg N
# and 0.04 % at 68 deg N for r = 500 m, i.e. 20 cm. Ordering by it is nearest-first
# up to that (geography's spherical <-> errs by up to 0.3 %, 1.7 m at 500 m).
# (Web Mercator, EPSG:3857, is not conformal on the ellipsoid: 0.2-0.7 % anisotropy.)
# Inline, never a bind parameter: the planner matches the index expression literally.
_MERCATOR = literal_column(str(MERCATOR_SRID), Integer())
METRES_PER_DEGREE_MIN = 110_574.0  # the shortest degree of latitude (at the equator)


def mercator(location: Any) -> ColumnElement[Any]:
    """The planar point a GiST expression index is built on (``MERCATOR_KNN_INDEX``).

    The same expression as the index, so that the planner matches it.
    """
    projected: ColumnElement[Any] = func.ST_Transform(func.geometry(location), _MERCATOR)
    return projected


def bound_mercator_point(lat_param: str, lon_param: str) -> ColumnElement[Any]:
    """``bound_point`` projected like ``mercator``: the centre of a Mercator KNN scan."""
    projected: ColumnElement[Any] = func.ST_Transform(
        func.ST_SetSRID(
            func.ST_MakePoint(
                bindparam(lon_param, type_=Float()), bindparam(lat_param, type_=Float())
            ),
            4326,
        ),
        _MERCATOR,
    )
    return projected


def mercator_radius_m(radius_m: float, lat: float) -> float:
    """A Mercator radius whose disc holds the whole spheroid disc of ``radius_m``.

    The scale factor is at most sec(lat) at the disc's latitude farthest from the
    equator; 0.1 % on top covers rounding. Only a pre-filter for the index: the
    spheroid test decides.
    """
    farthest = min(abs(lat) + radius_m / METRES_PER_DEGREE_MIN, 89.0)
    return radius_m / math.cos(math.radians(farthest)) * 1.001


def exactly_within(location: Any, centre: Any, radius_m: Any) -> ColumnElement[bool]:
    """The spheroid radius test, as ``distance <= radius``, without an index hook.

    For scans driven by the Mercator index: with ``ST_DWithin`` the planner could pick
    the geography index for the box and sort instead of walking nearest-first. Public
    PostGIS only (not the internal ``_ST_DWithin``), so an upgrade cannot remove it.
    """
    within: ColumnElement[bool] = distance_m(location, centre) <= radius_m
    return within


def within_radius(
    location: Any, centre: Any, radius_m: float | ColumnElement[float]
) -> ColumnElement[bool]:
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


@lru_cache(maxsize=8)
def nearest_aed_statement(
    available: ColumnElement[bool],
) -> Select[uuid.UUID, float, float, float, str, str | None]:
    """Built once per rule: the point (``lat``, ``lon``) and the radius
    (``aed_radius_m``) are bound parameters; columns ``id``, ``lat``, ``lon``,
    ``distance_m``, ``address``, ``description``.

    Built per call, this statement cost twenty times its execution (4.0 ms against
    0.2 ms for the same SQL through asyncpg, loaded machine, docs/benchmarks.md):
    the expression tree and its cache key were rebuilt on every incident.
    """
    here = bound_point("lat", "lon")
    return (
        select(
            Aed.id,
            latitude(Aed.location).label("lat"),
            longitude(Aed.location).label("lon"),
            distance_m(Aed.location, here).label("distance_m"),
            Aed.address,
            Aed.description,
        )
        .where(
            available, within_radius(Aed.location, here, bindparam("aed_radius_m", type_=Float()))
        )
        .order_by(nearest_first(Aed.location, here))
        .limit(1)
    )


async def nearest_aed(
    session: AsyncSession,
    *,
    point: LatLon,
    radius_m: float,
    available: ColumnElement[bool],
    parameters: Mapping[str, Any],
) -> NearestAed | None:
    """The nearest AED within the radius among those ``available`` (a dispatch rule).

    ``available`` is built once by the caller with bound parameters, whose values
    come in ``parameters``; the statement is cached per rule object.
    """
    rows = await session_query(nearest_aed_statement(available)).fetch(
        session, {"lat": point.lat, "lon": point.lon, "aed_radius_m": radius_m, **parameters}
    )
    return nearest_aed_from(rows[0] if rows else None)


def nearest_aed_from(row: Mapping[Any, Any] | None) -> NearestAed | None:
    """The AED in a row with :func:`nearest_aed_statement`'s columns, by name (none: no
    row, or ``NULL`` ones from an outer join)."""
    if row is None or row["id"] is None:
        return None
    return NearestAed(
        id=row["id"],
        location=LatLon(row["lat"], row["lon"]),
        distance_m=row["distance_m"],
        address=row["address"],
        description=row["description"],
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
