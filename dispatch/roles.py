"""Who goes where: role assignment and stand-down, per SPEC 3.4.

The rules are pure functions of the incident's open slots and the volunteer's AED
detour, so they are tested exhaustively without a database; the caller holds the
incident row lock (``SELECT … FOR UPDATE``) while it counts the slots and applies
the decision, so two simultaneous YES never take one slot.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ARRAY, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from app.core.db import SessionQuery
from app.core.models import Alert, Incident, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from app.core.texts import stand_down_text
from dispatch.delivery import SettleRead, settle_alert_sms, settle_statement
from dispatch.events import record_event

Role = Literal["cpr", "aed"]


@dataclass(frozen=True)
class Slots:
    cpr_open: int
    aed_open: int
    cpr_taken: int

    @property
    def full(self) -> bool:
        return self.cpr_open <= 0 and self.aed_open <= 0


def choose_role(
    slots: Slots, *, detour_m: float | None, settings: Settings, aed_before_ems: bool = True
) -> Role | None:
    """Rules a–d, in order; ``None`` means thanked and told they are not needed.

    ``aed_before_ems`` is false when the incident has an ambulance ETA and the route
    via the AED would arrive after it (``dispatch.ems``): the AED is then out of reach.
    """
    aed_reachable = (
        aed_before_ems and detour_m is not None and detour_m <= settings.aed_max_detour_m
    )
    if (
        slots.aed_open > 0
        and aed_reachable
        and (
            slots.cpr_taken > 0
            or (detour_m is not None and detour_m <= settings.aed_first_detour_m)
        )
    ):
        return "aed"
    if slots.cpr_open > 0:
        return "cpr"
    if slots.aed_open > 0 and aed_reachable:
        return "aed"
    return None


def should_stand_down(
    slots: Slots, *, pending_detours: list[float | None], settings: Settings
) -> bool:
    """Every slot is full, or CPR is full and no pending volunteer could take the AED."""
    if slots.full:
        return True
    if slots.cpr_open > 0:
        return False
    return not any(
        detour is not None and detour <= settings.aed_max_detour_m for detour in pending_detours
    )


async def lock_for_timed_step(session: AsyncSession, incident_id: uuid.UUID) -> Incident | None:
    """The incident, locked, while a timed step may still help it: alerting, the
    ambulance not there, a role slot open. ``None`` otherwise, or when another
    transaction holds the row (``SKIP LOCKED``: the next pass takes the step)."""
    incident = (
        await session.execute(
            select(Incident)
            .where(Incident.id == incident_id)
            .with_for_update(key_share=True, skip_locked=True)
        )
    ).scalar_one_or_none()
    if (
        incident is None
        or incident.status != "alerting"
        or incident.ems_arrived_at is not None
        or (await open_slots(session, incident)).full
    ):
        return None
    return incident


async def lock_incident(session: AsyncSession, incident_id: uuid.UUID) -> Incident | None:
    """The incident row, locked until commit: replies to one incident are serialised.

    FOR NO KEY UPDATE, not FOR UPDATE: the worker and other transactions insert rows
    that reference the incident (messages, events), whose foreign-key checks take
    FOR KEY SHARE; with FOR UPDATE they deadlock against replies under load.
    """
    loaded = await _LOCK_INCIDENT.load(session, Incident, {"incident_id": incident_id})
    return loaded[0][0] if loaded else None


# On the driver connection (every changing reply takes it), loaded as the ORM loads
# with populate_existing: decisions under the lock read the locked row, not an object
# the session kept from an earlier, unlocked read.
_incident: Table = Incident.__table__  # type: ignore[assignment]
_LOCK_INCIDENT = SessionQuery(
    select(_incident)
    .where(_incident.c.id == bindparam("incident_id"))
    .with_for_update(key_share=True)
)


async def open_slots(session: AsyncSession, incident: Incident) -> Slots:
    taken_cpr, taken_aed = (await session.execute(_TAKEN_ROLES, {"incident_id": incident.id})).one()
    return _slots(incident, cpr_taken=taken_cpr, aed_taken=taken_aed)


def _slots(incident: Incident, *, cpr_taken: int, aed_taken: int) -> Slots:
    aed_slots = incident.aed_slots if incident.nearest_aed_id is not None else 0
    return Slots(
        cpr_open=incident.cpr_slots - cpr_taken,
        aed_open=aed_slots - aed_taken,
        cpr_taken=cpr_taken,
    )


# Table columns: the stand-down's UPDATE is built from them, and an ORM attribute
# anywhere in an UPDATE makes SQLAlchemy rebuild its cache key on every execution.
_alert: Table = Alert.__table__  # type: ignore[assignment]


def _taken(alerts: FromClause, role: Role) -> ColumnElement[int]:
    return func.count().filter((alerts.c.response == "accepted") & (alerts.c.role == role))


def _is_pending(alerts: FromClause) -> ColumnElement[bool]:
    return (alerts.c.response == "pending") & alerts.c.stood_down_at.is_(None)


_pending = _is_pending(_alert)
# Built once: every YES counts the taken roles under the incident's lock.
_TAKEN_ROLES = select(_taken(_alert, "cpr"), _taken(_alert, "aed")).where(
    _alert.c.incident_id == bindparam("incident_id")
)
_SLOTS_AND_PENDING = select(
    _taken(_alert, "cpr"),
    _taken(_alert, "aed"),
    func.array_agg(_alert.c.aed_detour_m).filter(_pending),
).where(_alert.c.incident_id == bindparam("incident_id"))


def accept_stands_down_others(
    slots: Slots,
    *,
    detour_m: float | None,
    others_pending: list[float | None],
    settings: Settings,
) -> bool:
    """Whether this volunteer's accept, taking the role it would take, ends the alert
    for at least one other volunteer still pending."""
    role = choose_role(slots, detour_m=detour_m, settings=settings)
    if role is None or not others_pending:
        return False
    after = Slots(
        cpr_open=slots.cpr_open - (role == "cpr"),
        aed_open=slots.aed_open - (role == "aed"),
        cpr_taken=slots.cpr_taken + (role == "cpr"),
    )
    return should_stand_down(after, pending_detours=others_pending, settings=settings)


@dataclass(frozen=True)
class Tally:
    """An incident's roles taken and its pending alerts' AED detours, as read under
    its lock (:data:`TALLY_OF_ALERTS_INCIDENT`): a reply decides by it without a
    statement of its own, since nothing else changes them while the lock is held."""

    cpr_taken: int
    aed_taken: int
    pending_detours: tuple[float | None, ...]

    def slots(self, incident: Incident) -> Slots:
        return _slots(incident, cpr_taken=self.cpr_taken, aed_taken=self.aed_taken)

    def answered(self, detour_m: float | None, *, role: Role | None) -> Tally:
        """The tally once a pending alert with this detour has answered (``role``: taken)."""
        pending = list(self.pending_detours)
        pending.remove(detour_m)
        return Tally(
            cpr_taken=self.cpr_taken + (role == "cpr"),
            aed_taken=self.aed_taken + (role == "aed"),
            pending_detours=tuple(pending),
        )


_tallied = _alert.alias("tallied")
TALLY_OF_ALERTS_INCIDENT = tuple(
    select(aggregate)
    .where(_tallied.c.incident_id == _alert.c.incident_id)
    .scalar_subquery()
    .label(name)
    for name, aggregate in (
        ("cpr_taken", _taken(_tallied, "cpr")),
        ("aed_taken", _taken(_tallied, "aed")),
        ("pending_detours", func.array_agg(_tallied.c.aed_detour_m).filter(_is_pending(_tallied))),
    )
)
"""The :class:`Tally` of the incident of the alert row selected beside these columns
(``select(Alert, *TALLY_OF_ALERTS_INCIDENT)``): read with the alert's lock, after the
incident's."""


def tally_of(row: Mapping[str, Any]) -> Tally:
    """The :class:`Tally` in a row selected with :data:`TALLY_OF_ALERTS_INCIDENT`."""
    return Tally(row["cpr_taken"], row["aed_taken"], tuple(row["pending_detours"] or ()))


def accept_would_stand_down_others(
    *, incident: Incident, alert: Alert, tally: Tally, settings: Settings
) -> bool:
    """``accept_stands_down_others`` for a pending alert, by the incident's tally."""
    return accept_stands_down_others(
        tally.slots(incident),
        detour_m=alert.aed_detour_m,
        # This alert is pending: its own detour is listed.
        others_pending=list(tally.answered(alert.aed_detour_m, role=None).pending_detours),
        settings=settings,
    )


async def stand_down_if_complete(
    session: AsyncSession,
    *,
    incident: Incident,
    settings: Settings,
    now: datetime,
    tally: Tally | None = None,
) -> int:
    """Stand down every pending volunteer once the slots no longer need them.

    ``tally``: the incident's as it now stands, when the caller knows it (a reply,
    from its lock); read here otherwise, the taken slots and the pending detours in
    one statement (this runs under the incident's row lock, so each round trip saved
    is time other replies to the incident do not wait).
    """
    if tally is None:
        taken_cpr, taken_aed, detours = (
            await session.execute(_SLOTS_AND_PENDING, {"incident_id": incident.id})
        ).one()
        tally = Tally(taken_cpr, taken_aed, tuple(detours or ()))
    if not should_stand_down(
        tally.slots(incident), pending_detours=list(tally.pending_detours), settings=settings
    ):
        return 0
    return await stand_down_pending(session, incident=incident, now=now)


@dataclass(frozen=True)
class _StandingDown:
    """The stand-down of an incident's pending alerts matching ``alerts``, built once:
    it runs under a reply's incident lock. Parameters: ``incident_id`` (the read),
    ``of_incident`` and ``now`` (the UPDATE: a column's name is reserved there), and
    those of ``alerts``."""

    settle: SettleRead
    stand_down: ReturningUpdate[uuid.UUID, str, uuid.UUID]

    @classmethod
    def of(cls, alerts: ColumnElement[bool]) -> _StandingDown:
        return cls(
            settle=settle_statement(alerts),
            stand_down=update(_alert)
            .where(_alert.c.incident_id == bindparam("of_incident"), alerts)
            .values(stood_down_at=bindparam("now"), updated_at=bindparam("now"))
            .returning(_alert.c.id, _alert.c.code, _alert.c.volunteer_id),
        )


_UUIDS = ARRAY(UUID(as_uuid=True))
_STAND_DOWN_PENDING = _StandingDown.of(_pending)
_STAND_DOWN_ONLY = _StandingDown.of(
    _pending & (_alert.c.id == func.any(bindparam("only", type_=_UUIDS)))
)


async def stand_down_pending(
    session: AsyncSession,
    *,
    incident: Incident,
    now: datetime,
    only: list[uuid.UUID] | None = None,
    text: Callable[..., str] = stand_down_text,
) -> int:
    """Tell every pending volunteer (or those of ``only``) they need not go, in ``text``;
    those never reached get no SMS.

    Who was reached is read from each alert SMS's own send state, under its lock
    (:func:`dispatch.delivery.settle_alert_sms`), never from the alert's mirrored
    delivery status, which a concurrent claim may not have updated yet.
    """
    statements = _STAND_DOWN_PENDING if only is None else _STAND_DOWN_ONLY
    reached = await settle_alert_sms(
        session,
        statement=statements.settle,
        parameters={"incident_id": incident.id, "only": only},
        now=now,
    )
    # Its own parameters: a key named as a column would also be SET by the UPDATE.
    rows = (
        await session.execute(
            statements.stand_down, {"of_incident": incident.id, "now": now, "only": only}
        )
    ).all()
    if not rows:
        return 0
    told = [row for row in rows if row.id in reached]
    volunteers = await _contacts(session, [row.volunteer_id for row in told])
    await queue_sms(
        session,
        [
            OutboundSms(
                phone=volunteers[row.volunteer_id][0],
                body=text(volunteers[row.volunteer_id][1], code=row.code),
                purpose="stand_down",
                volunteer_id=row.volunteer_id,
                incident_id=incident.id,
                alert_id=row.id,
            )
            for row in told
            if volunteers.get(row.volunteer_id, (None, ""))[0]
        ],
        now=now,
    )
    await record_event(
        session,
        incident_id=incident.id,
        type="alerts.stood_down",
        data={"alert_ids": [str(row.id) for row in rows], "at": now.isoformat()},
    )
    return len(rows)


_CONTACTS = select(Volunteer.id, Volunteer.phone, Volunteer.language).where(
    Volunteer.id == func.any(bindparam("volunteer_ids", type_=_UUIDS)),
    Volunteer.phone.is_not(None),
    Volunteer.opted_out.is_(False),
)


async def _contacts(
    session: AsyncSession, volunteer_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, str]]:
    """Phone and language of each volunteer still reachable (not erased, not opted out)."""
    if not volunteer_ids:
        return {}
    rows = await session.execute(_CONTACTS, {"volunteer_ids": volunteer_ids})
    return {row.id: (row.phone, row.language) for row in rows}
