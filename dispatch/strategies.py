"""Alerting strategies beyond "everyone at once": replacement and widening.

- **Replace** (``ALERT_BATCH``, ``REPLACE_AFTER``): while a role slot is open, an
  incident keeps ``ALERT_BATCH`` volunteers *in play* (pending and not replaced, or
  holding a role). A decline or a withdrawal frees a place at once (in the reply's
  transaction); a volunteer silent for ``REPLACE_AFTER`` is marked ``replaced_at``
  by the worker: still able to accept, no longer counted. Each free place is given
  to the next nearest eligible volunteer not yet alerted within the current radius.
- **Widen** (``WIDEN_AFTER``, ``WIDEN_STEPS_M``): while a role slot is open
  ``WIDEN_AFTER`` after the last change of radius, the radius grows to the next
  step, and the newly reached volunteers fill the free places, nearest first.

Every new alert goes through ``dispatch.alerting.alert_more``: the same rules, the
same cap (never more than ``MAX_ALERTED`` pending at once), the same selection lock.

Timed steps run in the worker (:func:`run_strategy_steps`, injected clock), one
short transaction per incident that locks the incident row first (``SKIP LOCKED``:
a row busy with a reply or another worker is taken on the next pass), then its
alerts. Each step re-reads its condition under that lock and leaves a mark in the
same transaction (``alert.replaced_at``, ``incident.radius_changed_at``), so two
workers, or a worker restarted after a crash, never replace one silence twice or
take one widening step twice: either the transaction committed, mark and alerts
together, or nothing happened.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.core.db import unit_of_work
from app.core.models import Alert, Incident
from app.core.settings import Settings
from dispatch.alerting import QueuedAlert, alert_more
from dispatch.events import record_event
from dispatch.roles import lock_for_timed_step, open_slots

IN_PLAY = and_(
    Alert.stood_down_at.is_(None),
    or_(
        and_(Alert.response == "pending", Alert.replaced_at.is_(None)),
        and_(Alert.response == "accepted", Alert.role.is_not(None)),
    ),
)
"""Alerts that count toward the batch: a pending volunteer not replaced, or a responder."""


async def replace_in_batch(
    session: AsyncSession,
    *,
    incident: Incident,
    settings: Settings,
    now: datetime,
    replaced: list[uuid.UUID],
    alerted_as: str = "replacement",
) -> list[QueuedAlert]:
    """Fill the batch's free places while a role slot is open; the caller holds the lock.

    ``replaced`` names the alerts that freed places (a decline, a withdrawal, the
    silent); the ``alerts.replaced`` event links them to the new alerts.
    """
    if (await open_slots(session, incident)).full:
        return []
    in_play = (
        await session.execute(select(func.count()).where(Alert.incident_id == incident.id, IN_PLAY))
    ).scalar_one()
    alerts = await alert_more(
        session,
        incident=incident,
        settings=settings,
        now=now,
        alerted_as=alerted_as,
        wanted=settings.batch - in_play,
    )
    if replaced:
        await record_event(
            session,
            incident_id=incident.id,
            type="alerts.replaced",
            data={
                "replaced": [str(alert_id) for alert_id in replaced],
                "alerts": [str(alert.id) for alert in alerts],
                "at": now.isoformat(),
            },
        )
    return alerts


def _silent(incident_id: Any, *, now: datetime, settings: Settings) -> list[ColumnElement[bool]]:
    """Pending, not yet replaced, alerted at least ``REPLACE_AFTER`` ago."""
    assert settings.replace_after is not None
    return [
        Alert.incident_id == incident_id,
        Alert.response == "pending",
        Alert.stood_down_at.is_(None),
        Alert.replaced_at.is_(None),
        Alert.created_at <= now - settings.replace_after,
    ]


async def incidents_due(
    session: AsyncSession, *, now: datetime, settings: Settings
) -> list[uuid.UUID]:
    """Alerting incidents with an open slot and a silence to replace or a step to take.

    Read without locks: :func:`take_strategy_steps` checks again under the row lock.
    """
    due: list[ColumnElement[bool]] = []
    if settings.replace_after is not None:
        due.append(exists().where(*_silent(Incident.id, now=now, settings=settings)))
    if settings.widen_after is not None and settings.widen_steps_m:
        due.append(
            and_(
                Incident.radius_m < settings.widen_steps_m[-1] - 0.5,
                func.coalesce(Incident.radius_changed_at, Incident.created_at)
                <= now - settings.widen_after,
            )
        )
    if not due:
        return []
    responders = (
        select(func.count())
        .where(
            Alert.incident_id == Incident.id,
            Alert.response == "accepted",
            Alert.role.is_not(None),
        )
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Incident.id)
        .where(
            Incident.status == "alerting",
            Incident.ems_arrived_at.is_(None),
            responders < Incident.cpr_slots + Incident.aed_slots,
            or_(*due),
        )
        .order_by(Incident.created_at)
    )
    return list(rows.scalars())


async def take_strategy_steps(
    session: AsyncSession, *, incident_id: uuid.UUID, now: datetime, settings: Settings
) -> bool:
    """Replace the silent and take a due widening step for one incident; True if acted.

    Locks the incident (skipping it when another transaction holds it), then its
    alerts; the caller's transaction is this incident's only.
    """
    incident = await lock_for_timed_step(session, incident_id)
    if incident is None:
        return False
    silent: list[uuid.UUID] = []
    if settings.replace_after is not None:
        silent = list(
            (
                await session.execute(
                    update(Alert)
                    .where(*_silent(incident.id, now=now, settings=settings))
                    .values(replaced_at=now, updated_at=now)
                    .returning(Alert.id)
                )
            ).scalars()
        )
    widened = await _widen_if_due(session, incident=incident, now=now, settings=settings)
    if not silent and not widened:
        return False
    await replace_in_batch(
        session,
        incident=incident,
        settings=settings,
        now=now,
        replaced=silent,
        alerted_as="widening" if widened else "replacement",
    )
    return True


async def _widen_if_due(
    session: AsyncSession, *, incident: Incident, now: datetime, settings: Settings
) -> bool:
    if settings.widen_after is None:
        return False
    since = incident.radius_changed_at or incident.created_at
    next_radius = settings.next_radius_m(incident.radius_m)
    if next_radius is None or since > now - settings.widen_after:
        return False
    previous = incident.radius_m
    incident.radius_m = next_radius
    incident.radius_changed_at = now
    incident.updated_at = now
    # The record must cover the wider ring even if nobody new is alerted in it.
    incident.selected_at = now
    incident.selection_recorded_at = None
    await session.flush()
    await record_event(
        session,
        incident_id=incident.id,
        type="incident.radius_widened",
        data={
            "radius_m": round(next_radius),
            "previous_radius_m": round(previous),
            "at": now.isoformat(),
        },
    )
    return True


async def run_strategy_steps(
    session_factory: async_sessionmaker[AsyncSession], *, now: datetime, settings: Settings
) -> int:
    """The worker's pass: one short transaction per due incident; returns incidents acted on.

    Each step marks the incident's selection record stale (``alert_more``, or the
    widening itself), so ``/explain`` rewrites it with the replacements and the
    widened ring: the pass does not write it.
    """
    async with session_factory() as session:
        due = await incidents_due(session, now=now, settings=settings)
    acted = 0
    for incident_id in due:
        async with unit_of_work(session_factory) as session:
            acted += await take_strategy_steps(
                session, incident_id=incident_id, now=now, settings=settings
            )
    return acted
