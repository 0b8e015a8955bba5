"""Who gets alerted: the candidate policy as one SQL statement, and its explanation.

A volunteer is a candidate when eligible (``app.registry.eligibility``), their *current
location* lies within the radius (spheroid), they were not alerted in the cooldown,
are not busy as an accepted responder of another open incident, and (for a re-run)
not yet alerted on this incident. The current location is the live location while
usable (young enough and accurate enough), even when it is out of range; otherwise
the nearest place whose schedule covers now in the place's own time zone.

The statement is two nearest-first GiST scans (``live_location``, ``place``, on
their points projected to World Mercator, see ``geo.search.mercator``), each bounded
by a box that holds the spheroid disc, filtered by the exact spheroid radius test and
stopped by ``LIMIT`` as soon as enough rows pass every filter; only their few
survivors get an exact spheroid distance and the final sort. See ``docs/selection.md``
for the plan and timings.

Selection is serialised by a transaction-scoped advisory lock, so two incidents
committed in the same instant never both alert one volunteer within the cooldown.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    Float,
    Integer,
    Interval,
    Select,
    Table,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import UUID, distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from app.core.db import session_query
from app.core.models import Aed, Alert, Incident, LiveLocation, Place, SelectionRecord, Volunteer
from app.core.schedule import covers, minute_of_week, minute_of_week_sql
from app.core.settings import Settings
from app.registry.eligibility import (
    eligibility_conditions,
    is_eligible,
    reachable_canary,
    usable_live_location,
)
from app.registry.retention import purged_before
from dispatch.ems import ems_reach_m
from geo.points import LatLon, geography_point, latitude, longitude
from geo.search import (
    NearestAed,
    bound_mercator_point,
    bound_point,
    distance_m,
    exactly_within,
    mercator,
    mercator_radius_m,
    nearest_aed,
    nearest_aed_statement,
    nearest_first,
    within_radius,
)

SELECTION_LOCK_KEY = 0x5E1EC7  # one lock for the whole deployment; see docs/selection.md

# For the rest of the transaction: keep both scans nearest-first on GiST (a bitmap
# scan of the whole radius box, or a parallel one, is what makes a dense centre
# slow), and plan the prepared statement once per connection instead of per call.
# (JIT is off for every connection of the service: ``app.core.db.create_engine``.)
KNN_PLANNER = (
    ("enable_bitmapscan", "off"),
    ("max_parallel_workers_per_gather", "0"),
    ("plan_cache_mode", "force_generic_plan"),
)
KNN_PLANNER_SETTINGS = "SELECT " + ", ".join(
    f"set_config('{name}', '{value}', true)" for name, value in KNN_PLANNER
)


def knn_planner_columns() -> list[ColumnElement[str]]:
    """:data:`KNN_PLANNER` as columns of another statement, which sets it up for the
    statements after it: a statement is planned before its columns are computed, so
    the settings never apply to the statement that carries them (the incident POST's
    duplicate check carries them to its selection, one round trip fewer)."""
    return [
        func.set_config(literal(name), literal(value), literal(True)).label(f"set_{name}")
        for name, value in KNN_PLANNER
    ]


ALERTED = "alerted"
NO_USABLE_LOCATION = "no_usable_location"
COOLDOWN = "cooldown"
BUSY = "busy"
OVER_CAP = "over_cap"
NO_SELECTION = "no_selection"
NOT_WITHIN_RADIUS = "not_within_radius"
RECORD_PURGED = "record_purged"
SLOWER_THAN_EMS = "slower_than_ems"


@dataclass(frozen=True)
class Candidate:
    volunteer_id: uuid.UUID
    phone: str
    language: str
    contact_preference: str
    distance_m: float
    location_source: str
    aed_detour_m: float | None
    taken_codes: frozenset[str]


async def lock_selection(session: AsyncSession) -> None:
    """Serialise duplicate detection and selection until this transaction ends.

    Held for the few milliseconds between the check and the commit; concurrent
    incidents queue behind it instead of racing for the same volunteers.
    """
    await session.execute(_LOCK_SELECTION, {"key": SELECTION_LOCK_KEY})


# Built once, as every statement of the alert path is (a ``text()`` built per call
# is one more cache key computed per incident).
_LOCK_SELECTION = text("SELECT pg_advisory_xact_lock(:key)")
_SET_UP_PLANNER = text(KNN_PLANNER_SETTINGS)


async def nearest_available_aed(
    session: AsyncSession, *, point: LatLon, settings: Settings, now: datetime
) -> NearestAed | None:
    """An AED counts when active and open now (its hours are in ``TIMEZONE``)."""
    return await nearest_aed(
        session,
        point=point,
        radius_m=settings.aed_search_radius_m,
        available=_AED_AVAILABLE,
        parameters=_aed_rule_parameters(settings, now),
    )


def available_aed_statement() -> Select[uuid.UUID, float, float, float, str, str | None]:
    """:func:`nearest_available_aed` as a statement for another one to carry (the
    incident's ``INSERT``); its parameters: ``lat``, ``lon`` and
    :func:`available_aed_parameters`."""
    return nearest_aed_statement(_AED_AVAILABLE)


def available_aed_parameters(settings: Settings, now: datetime) -> dict[str, Any]:
    return {"aed_radius_m": settings.aed_search_radius_m, **_aed_rule_parameters(settings, now)}


def _aed_rule_parameters(settings: Settings, now: datetime) -> dict[str, Any]:
    return {"minute_of_week": minute_of_week(now, settings.zone)}


_AED_AVAILABLE = and_(
    Aed.status == "active", covers(Aed.open_minutes, bindparam("minute_of_week", type_=Integer()))
)
"""The dispatch rule for an AED, built once (``nearest_aed`` caches its statement by it)."""


@dataclass(frozen=True)
class Whereabouts:
    """Where a volunteer is now, as distances: to the incident and to each AED asked about."""

    distance_m: float
    aed_distances_m: dict[uuid.UUID, float]

    def detour_m(self, aed: uuid.UUID, aed_to_patient_m: float) -> float | None:
        """Via that AED instead of straight to the patient (SPEC 3.4), if it was asked about."""
        to_aed = self.aed_distances_m.get(aed)
        return None if to_aed is None else to_aed + aed_to_patient_m - self.distance_m


async def current_whereabouts(
    session: AsyncSession,
    *,
    volunteer_ids: list[uuid.UUID],
    point: LatLon,
    aeds: dict[uuid.UUID, LatLon],
    settings: Settings,
    now: datetime,
) -> dict[uuid.UUID, Whereabouts]:
    """Each volunteer's current location (the selection's rule), measured on the spheroid.

    The live location while usable, wherever it is; otherwise the registered place
    whose schedule covers now, nearest to ``point`` when several do. A volunteer with
    neither is left out: where they are is not known. Nothing is stored: the
    positions are used here and dropped (the registry keeps no history).
    """
    if not volunteer_ids:
        return {}
    usable = usable_live_location(
        now=now,
        max_age=settings.live_location_max_age,
        max_accuracy_m=settings.max_location_accuracy_m,
    )
    positions = union_all(
        select(
            LiveLocation.volunteer_id,
            LiveLocation.location,
            literal(0).label("preference"),
        ).where(LiveLocation.volunteer_id.in_(volunteer_ids), usable),
        select(Place.volunteer_id, Place.location, literal(1).label("preference")).where(
            Place.volunteer_id.in_(volunteer_ids),
            covers(Place.active_minutes, minute_of_week_sql(now, Place.timezone)),
        ),
    ).subquery("positions")
    to_patient = distance_m(positions.c.location, geography_point(point))
    aed_ids = list(aeds)
    rows = await session.execute(
        select(
            positions.c.volunteer_id,
            to_patient.label("distance_m"),
            *(
                distance_m(positions.c.location, geography_point(aeds[aed_id])).label(
                    f"aed_{index}"
                )
                for index, aed_id in enumerate(aed_ids)
            ),
        )
        .ext(distinct_on(positions.c.volunteer_id))
        .order_by(positions.c.volunteer_id, positions.c.preference, to_patient)
    )
    return {
        row.volunteer_id: Whereabouts(
            distance_m=row.distance_m,
            aed_distances_m={aed_id: row[2 + index] for index, aed_id in enumerate(aed_ids)},
        )
        for row in rows
    }


def _in_cooldown(volunteer_id: Any, *, since: Any, now: Any) -> ColumnElement[bool]:
    return exists().where(
        Alert.volunteer_id == volunteer_id,
        Alert.created_at > since,
        Alert.created_at <= now,
    )


def _busy_elsewhere(volunteer_id: Any, incident_id: Any | None) -> ColumnElement[bool]:
    """Accepted on another incident that is still alerting and not stood down."""
    busy = (
        select(Alert.id)
        .join(Incident, Incident.id == Alert.incident_id)
        .where(
            Alert.volunteer_id == volunteer_id,
            Alert.response == "accepted",
            Alert.stood_down_at.is_(None),
            Incident.status == "alerting",
        )
    )
    if incident_id is not None:
        busy = busy.where(Alert.incident_id != incident_id)
    return exists(busy)


def _param(name: str, type_: Any) -> Any:
    return bindparam(name, type_=type_)


def _policy(volunteer_id: Any, *, rerun: bool, canary: bool) -> list[ColumnElement[bool]]:
    """The filters applied to each row as it streams out of a nearest-first scan.

    A real incident never selects a canary volunteer; a canary incident selects its
    own canary volunteer and nobody else, in its first selection and in every re-run
    (all of them pass here). The cooldown and the busy rule protect people from
    alert fatigue; a test phone probed by a scheduler is exempt from both.
    """
    now = _param("now", DateTime(timezone=True))
    today = _param("today", Date())
    incident_id = _param("incident_id", UUID(as_uuid=True)) if rerun else None
    if canary:
        filters = [
            volunteer_id == _param("canary_volunteer_id", UUID(as_uuid=True)),
            reachable_canary(Volunteer, now=now, today=today),
        ]
    else:
        filters = [
            Volunteer.canary.is_(False),
            is_eligible(Volunteer, now=now, today=today),
            ~_in_cooldown(
                volunteer_id, since=_param("cooldown_since", DateTime(timezone=True)), now=now
            ),
            ~_busy_elsewhere(volunteer_id, incident_id),
        ]
    if incident_id is not None:
        filters.append(
            ~exists().where(Alert.incident_id == incident_id, Alert.volunteer_id == volunteer_id)
        )
    return filters


def _near(location: Any, centre: Any, radius: Any) -> ColumnElement[bool]:
    """The Mercator index's box: a superset of the spheroid disc (``mercator_radius_m``)."""
    near: ColumnElement[bool] = func.ST_DWithin(mercator(location), centre, radius)
    return near


def _nearest_first(location: Any, centre: Any) -> ColumnElement[float]:
    """KNN key of the Mercator index: nearest-first to within 0.04 % of the distance."""
    return nearest_first(mercator(location), centre)


@lru_cache(maxsize=8)
def _candidate_template(*, with_aed: bool, rerun: bool, canary: bool) -> Select[Any]:
    """Built once per shape: reusing the object reuses SQLAlchemy's compiled form and
    asyncpg's prepared statement; building this tree per call costs more than running it."""
    here = bound_point("lat", "lon")
    here_mercator = bound_mercator_point("lat", "lon")
    radius = _param("radius", Float())
    mercator_radius = _param("mercator_radius", Float())
    limit = _param("limit", Integer())
    now = _param("now", DateTime(timezone=True))
    usable = usable_live_location(
        now=now,
        max_age=_param("max_age", Interval()),
        max_accuracy_m=_param("max_accuracy_m", Float()),
    )

    live = (
        select(
            LiveLocation.volunteer_id,
            LiveLocation.location,
            literal_column("'live'").label("source"),
            Volunteer.phone,
            Volunteer.language,
            Volunteer.contact_preference,
            _nearest_first(LiveLocation.location, here_mercator).label("knn"),
        )
        .join(Volunteer, Volunteer.id == LiveLocation.volunteer_id)
        .where(
            _near(LiveLocation.location, here_mercator, mercator_radius),
            exactly_within(LiveLocation.location, here, radius),
            usable,
            *_policy(LiveLocation.volunteer_id, rerun=rerun, canary=canary),
        )
        .order_by(_nearest_first(LiveLocation.location, here_mercator))
    )

    other = aliased(Place)
    nearer_covering_place = exists().where(
        other.volunteer_id == Place.volunteer_id,
        other.id != Place.id,
        covers(other.active_minutes, minute_of_week_sql(now, other.timezone)),
        exactly_within(other.location, here, radius),
        tuple_(_nearest_first(other.location, here_mercator), other.id)
        < tuple_(_nearest_first(Place.location, here_mercator), Place.id),
    )
    live_elsewhere = exists().where(LiveLocation.volunteer_id == Place.volunteer_id, usable)
    places = (
        select(
            Place.volunteer_id,
            Place.location,
            literal_column("'place'").label("source"),
            Volunteer.phone,
            Volunteer.language,
            Volunteer.contact_preference,
            _nearest_first(Place.location, here_mercator).label("knn"),
        )
        .join(Volunteer, Volunteer.id == Place.volunteer_id)
        .where(
            _near(Place.location, here_mercator, mercator_radius),
            exactly_within(Place.location, here, radius),
            covers(Place.active_minutes, minute_of_week_sql(now, Place.timezone)),
            ~live_elsewhere,
            ~nearer_covering_place,
            *_policy(Place.volunteer_id, rerun=rerun, canary=canary),
        )
        .order_by(_nearest_first(Place.location, here_mercator))
    )

    # Both scans merged nearest-first (a Merge Append of the two ordered index scans),
    # stopped once ``limit`` rows have passed every filter on either side.
    merged = union_all(live, places)
    found = merged.order_by(merged.selected_columns.knn).limit(limit).subquery("found")
    distance = distance_m(found.c.location, here)
    detour: ColumnElement[Any] = null()
    if with_aed:
        detour = (
            distance_m(found.c.location, bound_point("aed_lat", "aed_lon"))
            + _param("aed_distance_m", Float())
            - distance
        )
    open_codes = (
        select(func.array_agg(Alert.code))
        .join(Incident, Incident.id == Alert.incident_id)
        .where(
            Alert.volunteer_id == found.c.volunteer_id,
            Incident.status == "alerting",
            Alert.response.in_(("pending", "accepted")),
            Alert.stood_down_at.is_(None),
        )
        .scalar_subquery()
    )
    return (
        select(
            found.c.volunteer_id,
            found.c.phone,
            found.c.language,
            found.c.contact_preference,
            found.c.source,
            distance.label("distance_m"),
            cast(detour, Float()).label("aed_detour_m"),
            open_codes.label("open_codes"),
        )
        .order_by(distance, found.c.volunteer_id)
        .limit(limit)
    )


def _rule_parameters(settings: Settings, now: datetime) -> dict[str, Any]:
    """The parameters of the rules the candidate statement and the record share."""
    return {
        "now": now,
        "today": now.astimezone(settings.zone).date(),
        "max_age": settings.live_location_max_age,
        "max_accuracy_m": settings.max_location_accuracy_m,
        "cooldown_since": now - settings.alert_cooldown,
    }


def candidate_statement(
    *,
    point: LatLon,
    settings: Settings,
    now: datetime,
    limit: int,
    aed: NearestAed | None = None,
    incident_id: uuid.UUID | None = None,
    radius_m: float | None = None,
    ems_eta_at: datetime | None = None,
    canary_volunteer_id: uuid.UUID | None = None,
) -> tuple[Select[Any], dict[str, Any]]:
    """The one candidate statement and its parameters (what ``bench/`` and EXPLAIN run).

    ``radius_m`` is the incident's current radius (``ALERT_RADIUS_M`` unless widened);
    with ``ems_eta_at`` the EMS rule narrows it to the distance a volunteer can walk
    before the ambulance is there (``dispatch.ems``), so the rule is the radius itself.
    ``canary_volunteer_id`` (a canary incident) selects that canary volunteer only.
    """
    radius = selection_radius_m(settings, radius_m=radius_m, ems_eta_at=ems_eta_at, now=now)
    parameters: dict[str, Any] = {
        "lat": point.lat,
        "lon": point.lon,
        "radius": radius,
        "mercator_radius": mercator_radius_m(radius, point.lat),
        "limit": limit,
        **_rule_parameters(settings, now),
    }
    if incident_id is not None:
        parameters["incident_id"] = incident_id
    if canary_volunteer_id is not None:
        parameters["canary_volunteer_id"] = canary_volunteer_id
    if aed is not None:
        parameters.update(
            aed_lat=aed.location.lat, aed_lon=aed.location.lon, aed_distance_m=aed.distance_m
        )
    template = _candidate_template(
        with_aed=aed is not None,
        rerun=incident_id is not None,
        canary=canary_volunteer_id is not None,
    )
    return template, parameters


def selection_radius_m(
    settings: Settings, *, radius_m: float | None, ems_eta_at: datetime | None, now: datetime
) -> float:
    """The incident's radius, narrowed by the EMS rule when the incident has an ETA."""
    radius = settings.alert_radius_m if radius_m is None else radius_m
    reach = ems_reach_m(settings, ems_eta_at=ems_eta_at, now=now)
    return radius if reach is None else min(radius, reach)


async def select_candidates(
    session: AsyncSession,
    *,
    point: LatLon,
    settings: Settings,
    now: datetime,
    limit: int,
    aed: NearestAed | None = None,
    incident_id: uuid.UUID | None = None,
    radius_m: float | None = None,
    ems_eta_at: datetime | None = None,
    canary_volunteer_id: uuid.UUID | None = None,
    planner_set_up: bool = False,
) -> list[Candidate]:
    """At most ``limit`` candidates, nearest first (ties by volunteer id).

    ``incident_id`` excludes volunteers already alerted on that incident (a re-run).
    ``aed`` adds each candidate's detour via that AED, computed here so the
    volunteer's position is used once and never stored. ``radius_m``,
    ``ems_eta_at`` and ``canary_volunteer_id`` as in :func:`candidate_statement`.
    ``planner_set_up``: an earlier statement of the transaction carried
    :func:`knn_planner_columns`.
    """
    statement, parameters = candidate_statement(
        point=point,
        settings=settings,
        now=now,
        limit=limit,
        aed=aed,
        incident_id=incident_id,
        radius_m=radius_m,
        ems_eta_at=ems_eta_at,
        canary_volunteer_id=canary_volunteer_id,
    )
    if not planner_set_up:
        await session.execute(_SET_UP_PLANNER)
    # On the transaction's driver connection: through ``session.execute`` SQLAlchemy's
    # execution layer cost several times the rest of the call (``app.core.db.SessionQuery``).
    rows = await session_query(statement).fetch(session, parameters)
    return [
        Candidate(
            volunteer_id=row["volunteer_id"],
            phone=row["phone"],
            language=row["language"],
            contact_preference=row["contact_preference"],
            distance_m=row["distance_m"],
            location_source=row["source"],
            aed_detour_m=row["aed_detour_m"],
            taken_codes=frozenset(row["open_codes"] or ()),
        )
        for row in rows
    ]


_INCIDENT_FOR_RECORD = select(
    latitude(Incident.location).label("lat"),
    longitude(Incident.location).label("lon"),
    Incident.radius_m,
    Incident.ems_eta_at,
).where(Incident.id == bindparam("incident_id", type_=UUID(as_uuid=True)))


@lru_cache(maxsize=2)
def _record_template(*, with_reach: bool) -> Any:
    """The record's ``INSERT … SELECT``, built once per shape (with or without the EMS
    rule): built per call, its aliases and column proxies cost some 85 % of the
    record's CPU, as much as the incident's own handler (docs/benchmarks.md).

    Parameters: ``incident_id``, ``lat``, ``lon``, ``radius``, ``now``, ``today``,
    ``max_age``, ``max_accuracy_m``, ``cooldown_since``, and ``reach`` with the rule.
    """
    here = bound_point("lat", "lon")
    radius = _param("radius", Float())
    now = _param("now", DateTime(timezone=True))
    incident_id = _param("incident_id", UUID(as_uuid=True))
    usable = usable_live_location(
        now=now,
        max_age=_param("max_age", Interval()),
        max_accuracy_m=_param("max_accuracy_m", Float()),
    )
    nearby = union_all(
        select(
            LiveLocation.volunteer_id,
            distance_m(LiveLocation.location, here).label("distance_m"),
            literal_column("'live'").label("source"),
            usable.label("usable"),
        ).where(within_radius(LiveLocation.location, here, radius)),
        select(
            Place.volunteer_id,
            distance_m(Place.location, here).label("distance_m"),
            literal_column("'place'").label("source"),
            covers(Place.active_minutes, minute_of_week_sql(now, Place.timezone)).label("usable"),
        ).where(within_radius(Place.location, here, radius)),
    ).subquery("nearby")
    per_volunteer = (
        select(
            nearby.c.volunteer_id,
            func.min(nearby.c.distance_m).label("nearest_m"),
            func.min(nearby.c.distance_m)
            .filter(and_(nearby.c.source == "live", nearby.c.usable))
            .label("live_m"),
            func.min(nearby.c.distance_m)
            .filter(and_(nearby.c.source == "place", nearby.c.usable))
            .label("place_m"),
        )
        .group_by(nearby.c.volunteer_id)
        .subquery("per_volunteer")
    )
    live_usable_anywhere = exists().where(
        LiveLocation.volunteer_id == per_volunteer.c.volunteer_id, usable
    )
    current_m = case((live_usable_anywhere, per_volunteer.c.live_m), else_=per_volunteer.c.place_m)
    alert = aliased(Alert)
    ineligible = [
        (~condition, name)
        for name, condition in eligibility_conditions(
            Volunteer, now=now, today=_param("today", Date())
        )
    ]
    others_recent = and_(
        Alert.volunteer_id == per_volunteer.c.volunteer_id,
        Alert.incident_id != incident_id,
        Alert.created_at > _param("cooldown_since", DateTime(timezone=True)),
        Alert.created_at <= now,
    )
    slower_than_ems = (
        [(current_m > _param("reach", Float()), SLOWER_THAN_EMS)] if with_reach else []
    )
    outcome = case(
        (alert.id.is_not(None), ALERTED),
        *ineligible,
        (current_m.is_(None), NO_USABLE_LOCATION),
        *slower_than_ems,
        (exists().where(others_recent), COOLDOWN),
        (_busy_elsewhere(per_volunteer.c.volunteer_id, incident_id), BUSY),
        else_=OVER_CAP,
    )
    rows = (
        select(
            incident_id.label("incident_id"),
            per_volunteer.c.volunteer_id,
            outcome.label("outcome"),
            func.coalesce(alert.distance_m, current_m, per_volunteer.c.nearest_m).label(
                "distance_m"
            ),
            alert.alerted_as,
            alert.created_at.label("alerted_at"),
            now.label("created_at"),
        )
        .join(Volunteer, Volunteer.id == per_volunteer.c.volunteer_id)
        .outerjoin(
            alert,
            and_(alert.incident_id == incident_id, alert.volunteer_id == Volunteer.id),
        )
    )
    record: Table = SelectionRecord.__table__  # type: ignore[assignment]
    statement = insert(record).from_select(
        [
            "incident_id",
            "volunteer_id",
            "outcome",
            "distance_m",
            "alerted_as",
            "alerted_at",
            "created_at",
        ],
        rows,
    )
    return statement.on_conflict_do_update(
        index_elements=[record.c.incident_id, record.c.volunteer_id],
        set_={
            "outcome": statement.excluded.outcome,
            "distance_m": statement.excluded.distance_m,
            "alerted_as": statement.excluded.alerted_as,
            "alerted_at": statement.excluded.alerted_at,
        },
        where=and_(statement.excluded.outcome == ALERTED, record.c.outcome != ALERTED),
    )


_incident_table: Table = Incident.__table__  # type: ignore[assignment]
_MARK_RECORDED = (
    update(_incident_table)
    .where(_incident_table.c.id == bindparam("incident_id"))
    .values(selection_recorded_at=bindparam("now"))
)


async def record_selection(
    session: AsyncSession, *, incident_id: uuid.UUID, settings: Settings, now: datetime
) -> int:
    """Write why each volunteer within the radius was or was not alerted.

    Off the alert path: called after the incident's transaction committed, with the
    ``now`` of that selection. "Within the radius" means any known location (a live
    location however old, or any place) inside it; the outcome is ``alerted`` or the
    first rule that excluded the volunteer, in the candidate query's order. Idempotent:
    an existing row is only ever upgraded to ``alerted`` (by a later re-run), never
    rewritten otherwise. Marks the incident as recorded; returns rows written.
    """
    incident = (
        await session.execute(_INCIDENT_FOR_RECORD, {"incident_id": incident_id})
    ).one_or_none()
    if incident is None:
        return 0
    reach = ems_reach_m(settings, ems_eta_at=incident.ems_eta_at, now=now)
    parameters: dict[str, Any] = {
        "incident_id": incident_id,
        "lat": incident.lat,
        "lon": incident.lon,
        "radius": incident.radius_m,
        **_rule_parameters(settings, now),
    }
    if reach is not None:
        parameters["reach"] = reach
    result = await session.execute(_record_template(with_reach=reach is not None), parameters)
    await session.execute(_MARK_RECORDED, {"incident_id": incident_id, "now": now})
    written: int = getattr(result, "rowcount", 0)
    return written


@dataclass(frozen=True)
class Explanation:
    outcome: str
    distance_m: float | None
    selection_ran: bool
    alerted_as: str | None = None
    alerted_at: datetime | None = None


def selection_ran(incident: Incident) -> bool:
    """Selection runs unless a rule stopped the incident before it (duplicate included)."""
    return incident.not_alerted_reason in (None, "no_eligible_volunteers")


async def explain_selection(
    session: AsyncSession, *, incident: Incident, volunteer_id: uuid.UUID, settings: Settings
) -> Explanation:
    """Answer from the recorded selection; write the record first if it is missing.

    A missing record means the process died between the commit and the background
    write, or that a re-run (a move, a withdrawal, a replacement, a widening step)
    alerted since it was written. It is written now, with the latest selection's
    own time (``incident.selected_at``), against today's rows. A record the retention
    job has purged (``SELECTION_RECORD_RETENTION``) is named as such, never taken for
    "not within the radius" nor rebuilt.
    """
    if not selection_ran(incident):
        return Explanation(outcome=NO_SELECTION, distance_m=None, selection_ran=False)
    if await purged_before(session, "selection_record", incident.created_at):
        return Explanation(outcome=RECORD_PURGED, distance_m=None, selection_ran=True)
    if incident.selection_recorded_at is None:
        await record_selection(
            session,
            incident_id=incident.id,
            settings=settings,
            now=incident.selected_at or incident.created_at,
        )
    row = (
        await session.execute(
            select(
                SelectionRecord.outcome,
                SelectionRecord.distance_m,
                SelectionRecord.alerted_as,
                SelectionRecord.alerted_at,
            ).where(
                SelectionRecord.incident_id == incident.id,
                SelectionRecord.volunteer_id == volunteer_id,
            )
        )
    ).one_or_none()
    if row is None:
        return Explanation(outcome=NOT_WITHIN_RADIUS, distance_m=None, selection_ran=True)
    return Explanation(
        outcome=row.outcome,
        distance_m=row.distance_m,
        selection_ran=True,
        alerted_as=row.alerted_as,
        alerted_at=row.alerted_at,
    )
