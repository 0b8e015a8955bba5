"""Creating an incident: decide whether to alert, select, queue alerts and their SMS.

Everything happens in the caller's transaction, so a committed incident always has
its alerts and their queued texts (the outbox wakes the senders at commit), and a
failed request leaves nothing behind. Order of the not-alerted rules follows the
specification: kind, ``alert: false``, scene flags, service area, quiet hours,
duplicate, no eligible volunteers.

Idempotency: ``(centre, external_ref)`` is unique. The insert is ``ON CONFLICT DO
NOTHING``; a second request with the same reference reads the stored incident and
compares the canonical hash of the request (200 when equal, 409 otherwise). Two
identical requests racing each other are serialised by the unique index itself.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    case,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value

from app.core.db import random_uuids, session_query, unnest_insert, unnest_rows
from app.core.errors import Conflict
from app.core.models import Aed, Alert, Incident
from app.core.outbox import (
    Lease,
    OutboundSms,
    note_exercise,
    queue_sms,
    queue_statement_beside,
)
from app.core.schedule import within_hours
from app.core.settings import Settings
from app.core.texts import alert_text
from app.core.timing import phase
from dispatch.channels import alert_channels
from dispatch.events import Event, event_parameters, record_events, recorded_events
from dispatch.selection import (
    SELECTION_LOCK_KEY,
    Candidate,
    available_aed_parameters,
    available_aed_statement,
    knn_planner_columns,
    lock_selection,
    select_candidates,
)
from dispatch.views import distance_band
from geo.points import LatLon, latitude, longitude
from geo.search import (
    NearestAed,
    bound_point,
    load_service_area,
    nearest_aed_from,
    nearest_first,
    within_radius,
)

SCENE_FLAGS = (
    "patient_under_8",
    "trauma",
    "intoxication",
    "suicide",
    "unsafe_scene",
    "healthcare_facility",
)


@dataclass(frozen=True)
class NewIncident:
    """A validated request from a dispatch centre; ``flags`` holds every scene flag."""

    external_ref: str
    kind: str
    location: LatLon
    address: str
    access_notes: str | None = None
    flags: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(SCENE_FLAGS, False))
    alert: bool = True
    ems_eta_s: int | None = None
    exercise: bool = False
    canary_volunteer_id: uuid.UUID | None = None
    """``responder canary``'s: an exercise that alerts this canary volunteer only."""

    def request_hash(self) -> str:
        """Canonical: key order, whitespace and omitted defaults do not change it.

        Without an ETA, and unless an exercise, the hash is the one stored before
        ``ems_eta_s`` and ``exercise`` existed, so a CAD replaying an older request
        still gets 200, not 409.
        """
        body = asdict(self)
        body["flags"] = {name: bool(self.flags.get(name, False)) for name in SCENE_FLAGS}
        for added_later in ("ems_eta_s", "exercise", "canary_volunteer_id"):
            if not body[added_later]:
                del body[added_later]
        if self.canary_volunteer_id is not None:
            body["canary_volunteer_id"] = str(self.canary_volunteer_id)
        encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Created:
    incident: Incident
    created: bool
    aed: NearestAed | None = None
    """The AED found for a new incident (its roles refer to it)."""
    alerted: int = 0
    """Alerts queued for a new incident."""


def reason_before_selection(
    request: NewIncident, *, settings: Settings, now: datetime
) -> str | None:
    """The first not-alerted rule that needs no database, or None."""
    if request.kind not in settings.alertable_kinds:
        return "kind_not_alertable"
    if not request.alert:
        return "alert_false"
    for name in SCENE_FLAGS:
        if request.flags.get(name):
            return f"flag:{name}"
    if settings.service_area is not None and not load_service_area(settings.service_area).covers(
        request.location
    ):
        return "outside_service_area"
    # Quiet hours spare sleeping volunteers; a canary wakes only its test phone.
    if request.canary_volunteer_id is None and within_hours(
        settings.quiet_hours, now=now, zone=settings.zone
    ):
        return "quiet_hours"
    return None


async def create_incident(
    session: AsyncSession,
    *,
    centre: str,
    request: NewIncident,
    settings: Settings,
    now: datetime,
    created_by: uuid.UUID | None = None,
    lease: Lease | None = None,
) -> Created:
    """Store the incident and, unless a rule says otherwise, alert its volunteers.

    The alert SMS that ``lease`` (room in this process's worker) takes are queued
    already claimed by that worker, for it to send at commit. Raises ``Conflict``
    when the centre already used ``external_ref`` for a different request.
    """
    request_hash = request.request_hash()
    reason = reason_before_selection(request, settings=settings, now=now)
    ems_eta_at = None if request.ems_eta_s is None else now + timedelta(seconds=request.ems_eta_s)
    with phase("insert"):
        row = (
            await session.execute(
                _incident_insert(locked=reason is None),
                {
                    "id": uuid.uuid4(),
                    "centre": centre,
                    "external_ref": request.external_ref,
                    "request_hash": request_hash,
                    "kind": request.kind,
                    "lat": request.location.lat,
                    "lon": request.location.lon,
                    "address": request.address,
                    "access_notes": request.access_notes,
                    "flags": {name: bool(request.flags.get(name, False)) for name in SCENE_FLAGS},
                    "alert_requested": request.alert,
                    "exercise": request.exercise,
                    "canary_volunteer_id": request.canary_volunteer_id,
                    "status": "not_alerted" if reason else "alerting",
                    "not_alerted_reason": reason,
                    "radius_m": settings.alert_radius_m,
                    "radius_changed_at": now,
                    "ems_eta_at": ems_eta_at,
                    "cpr_slots": settings.cpr_responders,
                    "aed_responders": settings.aed_responders,
                    "selected_at": None if reason else now,
                    "created_by": created_by,
                    "created_at": now,
                    "updated_at": now,
                    "key": SELECTION_LOCK_KEY,
                    **available_aed_parameters(settings, now),
                },
            )
        ).first()
    if row is None:
        existing = (
            await session.execute(
                select(Incident).where(
                    Incident.centre == centre, Incident.external_ref == request.external_ref
                )
            )
        ).scalar_one()
        if existing.request_hash != request_hash:
            raise Conflict(
                f"external_ref {request.external_ref!r} was already used for a different incident",
                extra={"incident_id": str(existing.id)},
            )
        return Created(incident=existing, created=False)
    incident = row.Incident
    aed = nearest_aed_from(row._mapping)
    note_exercise(session, incident.id, exercise=request.exercise)

    alerts: list[QueuedAlert] = []
    if reason is None:
        # The insert took the selection lock (docs/selection.md).
        with phase("duplicate"):
            # A canary is never the duplicate of a real incident, nor of an earlier canary.
            duplicate_of = (
                None
                if request.canary_volunteer_id is not None
                else await _alerting_duplicate(
                    session,
                    centre=centre,
                    point=request.location,
                    incident_id=incident.id,
                    settings=settings,
                    now=now,
                )
            )
        if duplicate_of is not None:
            await _mark_not_alerted(session, incident, "duplicate", duplicate_of=duplicate_of)
        else:
            alerts = await _alert_candidates(
                session,
                incident_id=incident.id,
                kind=request.kind,
                address=request.address,
                point=request.location,
                aed=aed,
                settings=settings,
                now=now,
                limit=settings.batch,
                ems_eta_at=ems_eta_at,
                canary_volunteer_id=request.canary_volunteer_id,
                lease=lease,
                # The duplicate check set the planner up (a canary has none).
                planner_set_up=request.canary_volunteer_id is None,
                created=incident,
            )
            if not alerts:
                await _mark_not_alerted(session, incident, "no_eligible_volunteers")
    if not alerts:  # else recorded with the alerts
        with phase("events"):
            await record_events(
                session, incident_id=incident.id, events=[_created_event(incident, alerted=0)]
            )
    return Created(incident=incident, created=True, aed=aed, alerted=len(alerts))


async def alert_more(
    session: AsyncSession,
    *,
    incident: Incident,
    settings: Settings,
    now: datetime,
    alerted_as: str = "rerun",
    wanted: int | None = None,
) -> list[QueuedAlert]:
    """Alert the next nearest eligible volunteers not yet alerted on this incident.

    Same rules as the first selection, at the incident's current location and radius
    (``radius_m``, widened or not). ``MAX_ALERTED`` bounds the incident's alerts
    pending at once (not each run), so a re-run tops the pending up to the cap and
    never beyond it; ``wanted`` asks for fewer (a replacement tops up a batch). Used
    after a location change, a withdrawal, a decline or a silence (replacement) and
    a widening step; the caller holds the incident's row lock, and this takes the
    selection lock after it. The selection record is marked stale; ``/explain``
    writes it again, as of ``incident.selected_at``.
    """
    if incident.status != "alerting" or incident.ems_arrived_at is not None:
        return []
    if wanted is not None and wanted <= 0:
        return []  # before the deployment-wide selection lock: nothing to select
    await lock_selection(session)
    pending = await count_pending(session, incident.id)
    # The record no longer covers every run: /explain rewrites it from this time.
    incident.selected_at = now
    incident.selection_recorded_at = None
    room = settings.max_alerted - pending
    if wanted is not None:
        room = min(room, wanted)
    if room <= 0:
        return []
    point = (
        await session.execute(
            select(latitude(Incident.location), longitude(Incident.location)).where(
                Incident.id == incident.id
            )
        )
    ).one()
    location = LatLon(point[0], point[1])
    alerts = await _alert_candidates(
        session,
        incident_id=incident.id,
        kind=incident.kind,
        address=incident.address,
        point=location,
        aed=await incident_aed(session, incident),
        settings=settings,
        now=now,
        limit=room,
        rerun=True,
        radius_m=incident.radius_m,
        ems_eta_at=incident.ems_eta_at,
        alerted_as=alerted_as,
        canary_volunteer_id=incident.canary_volunteer_id,
    )
    return alerts


async def count_pending(session: AsyncSession, incident_id: uuid.UUID) -> int:
    """Alerts of the incident still waiting for an answer (not stood down)."""
    count: int = (
        await session.execute(
            select(func.count()).where(
                Alert.incident_id == incident_id,
                Alert.response == "pending",
                Alert.stood_down_at.is_(None),
            )
        )
    ).scalar_one()
    return count


async def incident_aed(session: AsyncSession, incident: Incident) -> NearestAed | None:
    """The AED the incident's roles refer to; a re-run keeps it even if another opened."""
    if incident.nearest_aed_id is None or incident.nearest_aed_distance_m is None:
        return None
    row = (
        await session.execute(
            select(
                latitude(Aed.location).label("lat"),
                longitude(Aed.location).label("lon"),
                Aed.address,
                Aed.description,
            ).where(Aed.id == incident.nearest_aed_id)
        )
    ).one()
    return NearestAed(
        id=incident.nearest_aed_id,
        location=LatLon(row.lat, row.lon),
        distance_m=incident.nearest_aed_distance_m,
        address=row.address,
        description=row.description,
    )


_INCIDENT_COLUMNS = (
    "id",
    "centre",
    "external_ref",
    "request_hash",
    "kind",
    "address",
    "access_notes",
    "flags",
    "alert_requested",
    "exercise",
    "canary_volunteer_id",
    "status",
    "not_alerted_reason",
    "radius_m",
    "radius_changed_at",
    "ems_eta_at",
    "cpr_slots",
    "selected_at",
    "created_by",
    "created_at",
    "updated_at",
)


@lru_cache(maxsize=2)
def _incident_insert(*, locked: bool) -> Select[*tuple[Any, ...]]:
    """The incident's ``INSERT`` with its nearest available AED looked up in the same
    statement, returning the row as the session's ``Incident`` (no read back) beside
    the AED's columns (``geo.search.nearest_aed_from``); and, when ``locked``, taking the
    selection lock before it inserts (no statement of its own): the duplicate check
    after it then sees every incident committed while it waited. Parameters: the
    columns, ``lat``/``lon``, ``aed_responders`` (the AED slots when there is one),
    :func:`available_aed_parameters`, ``key``. An ``external_ref`` already stored
    inserts nothing and returns no row.

    Built once with bound parameters (built per call, this ~25-column INSERT cost more
    Python than the database spent running it); on the table, not the mapped class
    (SQLAlchemy rebuilds an ORM-enabled INSERT's cache key on every execution), and
    mapped onto ``Incident`` by an ORM ``SELECT`` from it (tests/test_post_statements.py).
    """
    table: Table = Incident.__table__  # type: ignore[assignment]
    aed = available_aed_statement().cte("aed")
    values = [bindparam(name, type_=table.c[name].type) for name in _INCIDENT_COLUMNS]
    aed_slots = case((aed.c.id.is_(None), 0), else_=bindparam("aed_responders", type_=Integer()))
    # A FROM item is computed before the row it feeds, so the lock before the insert.
    first = (
        select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger())))
        if locked
        else select(literal(1))
    ).subquery("first")
    row = (
        select(*values, aed_slots, aed.c.id, aed.c.distance_m, bound_point("lat", "lon"))
        .select_from(first)
        .outerjoin(aed, true())
    )
    inserted = (
        insert(table)
        .from_select(
            [
                *_INCIDENT_COLUMNS,
                "aed_slots",
                "nearest_aed_id",
                "nearest_aed_distance_m",
                "location",
            ],
            row,
        )
        .on_conflict_do_nothing(constraint="uq_incident_centre_external_ref")
        .returning(*table.c)
        .cte("inserted")
    )
    return (
        select(aliased(Incident, inserted, name="Incident"), *aed.c)
        .select_from(inserted)
        .outerjoin(aed, true())
    )


@lru_cache(maxsize=1)
def _duplicate_statement() -> Select[*tuple[Any, ...]]:
    """The duplicate check, carrying the selection's planner settings (one round trip
    for both; the check itself is planned before they apply). Built once with bound
    parameters (per call, building it cost more than running it)."""
    here = bound_point("lat", "lon")
    now = bindparam("now", type_=DateTime(timezone=True))
    nearest_alerting = (
        select(Incident.id)
        .where(
            Incident.centre == bindparam("centre", type_=String()),
            Incident.status == "alerting",
            Incident.id != bindparam("incident_id", type_=UUID(as_uuid=True)),
            Incident.created_at >= bindparam("window_start", type_=DateTime(timezone=True)),
            Incident.created_at <= now,
            within_radius(Incident.location, here, bindparam("radius_m", type_=Float())),
        )
        .order_by(nearest_first(Incident.location, here))
        .limit(1)
        .scalar_subquery()
    )
    return select(nearest_alerting.label("duplicate_of"), *knn_planner_columns())


async def _alerting_duplicate(
    session: AsyncSession,
    *,
    centre: str,
    point: LatLon,
    incident_id: uuid.UUID,
    settings: Settings,
    now: datetime,
) -> uuid.UUID | None:
    """The alerting incident this one duplicates, if any; sets up the selection's planner."""
    (row,) = await session_query(_duplicate_statement()).fetch(
        session,
        {
            "lat": point.lat,
            "lon": point.lon,
            "centre": centre,
            "incident_id": incident_id,
            "now": now,
            "window_start": now - settings.duplicate_window,
            "radius_m": settings.duplicate_radius_m,
        },
    )
    found: uuid.UUID | None = row["duplicate_of"]
    return found


async def _mark_not_alerted(
    session: AsyncSession,
    incident: Incident,
    reason: str,
    *,
    duplicate_of: uuid.UUID | None = None,
) -> None:
    """Stored, and set on the session's ``incident`` as it now is in the database.

    Not through the unit of work: ``updated_at`` keeps the time of the insert (the
    creation itself), and the unit of work, given no new value for it, would let its
    ``onupdate`` replace it.
    """
    values = {"status": "not_alerted", "not_alerted_reason": reason, "duplicate_of": duplicate_of}
    await session.execute(_MARK_NOT_ALERTED, {"incident_id": incident.id, **values})
    for name, value in values.items():
        set_committed_value(incident, name, value)


_incident_table: Table = Incident.__table__  # type: ignore[assignment]
_MARK_NOT_ALERTED = (
    update(_incident_table)
    .where(_incident_table.c.id == bindparam("incident_id"))
    .values(
        status=bindparam("status"),
        not_alerted_reason=bindparam("not_alerted_reason"),
        duplicate_of=bindparam("duplicate_of"),
        # Named, so that its onupdate does not fire: still the creation's time.
        updated_at=_incident_table.c.updated_at,
    )
)


def _reply_code(taken: frozenset[str]) -> str:
    """Four digits, never 0-led (read aloud or typed, a leading zero gets dropped)."""
    while True:
        code = str(secrets.randbelow(9000) + 1000)
        if code not in taken:
            return code


async def _alert_candidates(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    kind: str,
    address: str,
    point: LatLon,
    aed: NearestAed | None,
    settings: Settings,
    now: datetime,
    limit: int,
    ems_eta_at: datetime | None,
    rerun: bool = False,
    radius_m: float | None = None,
    alerted_as: str = "selection",
    canary_volunteer_id: uuid.UUID | None = None,
    lease: Lease | None = None,
    planner_set_up: bool = False,
    created: Incident | None = None,
) -> list[QueuedAlert]:
    with phase("selection"):
        candidates: list[Candidate] = await select_candidates(
            session,
            point=point,
            settings=settings,
            now=now,
            limit=limit,
            aed=aed,
            incident_id=incident_id if rerun else None,
            radius_m=radius_m,
            ems_eta_at=ems_eta_at,
            canary_volunteer_id=canary_volunteer_id,
            planner_set_up=planner_set_up,
        )
    if not candidates:
        return []
    with phase("alerts"):
        return await _queue_alerts(
            session,
            candidates,
            incident_id=incident_id,
            kind=kind,
            address=address,
            settings=settings,
            now=now,
            alerted_as=alerted_as,
            lease=lease,
            created=created,
        )


_ALERT_COLUMNS = (
    "id",
    "volunteer_id",
    "code",
    "distance_m",
    "location_source",
    "aed_detour_m",
    "delivery_status",
    "delivery_updated_at",
)
_ALERT_CONSTANTS = ("incident_id", "alerted_as", "response", "created_at", "updated_at")
"""The columns all alerts queued together hold the same value in, bound once."""
_QUEUE_WITH_ALERTS = queue_statement_beside(
    unnest_insert(Alert, _ALERT_COLUMNS, prefix="new_alert_", constant=_ALERT_CONSTANTS).cte(
        "alerts"
    ),
    announce=recorded_events(prefix="event_"),
)
"""The alerts, their texts and their events in one statement (one round trip on the
POST's path for what were three)."""


@dataclass(frozen=True)
class QueuedAlert:
    """An alert just written with its queued text (what the callers and events need)."""

    id: uuid.UUID
    volunteer_id: uuid.UUID
    distance_m: float
    alerted_as: str


async def _queue_alerts(
    session: AsyncSession,
    candidates: list[Candidate],
    *,
    incident_id: uuid.UUID,
    kind: str,
    address: str,
    settings: Settings,
    now: datetime,
    alerted_as: str,
    lease: Lease | None = None,
    created: Incident | None = None,
) -> list[QueuedAlert]:
    """The alerts, their queued texts and the ``alerts.queued`` event (after
    ``incident.created`` when ``created`` is the incident just inserted): one statement,
    however many; the SMS ``lease`` takes are queued claimed by it."""
    codes = [_reply_code(candidate.taken_codes) for candidate in candidates]
    alerts = [
        QueuedAlert(
            id=alert_id,
            volunteer_id=candidate.volunteer_id,
            distance_m=candidate.distance_m,
            alerted_as=alerted_as,
        )
        for candidate, alert_id in zip(candidates, random_uuids(len(candidates)), strict=True)
    ]
    deadline = now + settings.alert_send_deadline
    channels = await alert_channels(
        session,
        incident_id=incident_id,
        preferences=[candidate.contact_preference for candidate in candidates],
        settings=settings,
    )
    texts = [
        OutboundSms(
            phone=candidate.phone,
            body=alert_text(
                candidate.language,
                kind=kind,
                at=now,
                zone=settings.zone,
                distance_m=candidate.distance_m,
                address=address,
                code=code,
            ),
            purpose="alert",
            volunteer_id=candidate.volunteer_id,
            incident_id=incident_id,
            alert_id=alert.id,
            deadline_at=deadline,
            channel=channel,
        )
        for candidate, alert, code, channel in zip(candidates, alerts, codes, channels, strict=True)
    ]
    events = [_queued_event(alerts)]
    if created is not None:
        events.insert(0, _created_event(created, alerted=len(alerts)))
    leased = set() if lease is None else lease.take(texts)
    rows = [
        {
            "id": alert.id,
            "volunteer_id": candidate.volunteer_id,
            "code": code,
            "distance_m": candidate.distance_m,
            "location_source": candidate.location_source,
            "aed_detour_m": candidate.aed_detour_m,
            # A leased SMS is claimed as it is queued: its alert as the claim marks it.
            "delivery_status": "sending" if alert.id in leased else "queued",
            "delivery_updated_at": now if alert.id in leased else None,
        }
        for candidate, alert, code in zip(candidates, alerts, codes, strict=True)
    ]
    await queue_sms(
        session,
        texts,
        now=now,
        lease=lease,
        beside=(
            _QUEUE_WITH_ALERTS,
            {
                **unnest_rows(
                    _ALERT_COLUMNS,
                    rows,
                    prefix="new_alert_",
                    constant={
                        "incident_id": incident_id,
                        "alerted_as": alerted_as,
                        "response": "pending",
                        "created_at": now,
                        "updated_at": now,
                    },
                ),
                **event_parameters(incident_id, events, prefix="event_"),
            },
        ),
    )
    return alerts


def _created_event(incident: Incident, *, alerted: int) -> Event:
    return Event(
        type="incident.created",
        data={
            "status": incident.status,
            "not_alerted_reason": incident.not_alerted_reason,
            "duplicate_of": str(incident.duplicate_of) if incident.duplicate_of else None,
            "alerted": alerted,
        },
    )


def _queued_event(alerts: list[QueuedAlert]) -> Event:
    # A band, not metres: dispatchers read this stream (dispatch/views.py).
    queued = [
        {
            "id": str(alert.id),
            "distance_band": distance_band(alert.distance_m),
            "alerted_as": alert.alerted_as,
        }
        for alert in alerts
    ]
    return Event(type="alerts.queued", data={"alerts": queued})
