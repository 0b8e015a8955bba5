"""An incident after its alerts went out: updates, cancel, close, and the timers.

The timed transitions (unanswered alerts become ``no_reply`` after
``ALERT_REPLY_WINDOW``; an incident still alerting after ``INCIDENT_MAX_AGE`` is
closed, silently) are run by the dispatch worker through :func:`run_timers` with
the injected clock, never by a request. Every change locks the incident row first,
so it is serialised with replies to the same incident, and the timers take one
incident per transaction, so they never hold one incident's rows while waiting
for another's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import texts
from app.core.db import unit_of_work
from app.core.errors import Conflict, NotFound
from app.core.models import Alert, Incident, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from app.registry.certifications import queue_certification_reminders
from app.registry.locations import purge_live_locations
from app.registry.retention import enforce_retention
from dispatch.alerting import SCENE_FLAGS, alert_more
from dispatch.channels import queue_follow_up_calls
from dispatch.delivery import settle_alert_sms, settle_statement
from dispatch.events import record_event
from dispatch.replan import replan_after_move
from dispatch.roles import lock_incident, open_slots, stand_down_if_complete, stand_down_pending
from dispatch.strategies import run_strategy_steps
from geo.points import LatLon, geography_point

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IncidentChanges:
    """What ``PATCH`` may change; ``None`` means unchanged (access notes: see ``clear``)."""

    address: str | None = None
    access_notes: str | None = None
    clear_access_notes: bool = False
    flags: dict[str, bool] | None = None
    location: LatLon | None = None
    ems_eta_s: int | None = None
    ems_arrived: bool = False


async def _incident_for_centre(
    session: AsyncSession, *, incident_id: uuid.UUID, centre: str | None
) -> Incident:
    incident = await lock_incident(session, incident_id)
    if incident is None or (centre is not None and incident.centre != centre):
        raise NotFound(f"no incident {incident_id}")
    return incident


HOLDS_A_ROLE = and_(Alert.response == "accepted", Alert.role.is_not(None))


async def _recipients(
    session: AsyncSession, *, incident_id: uuid.UUID, condition: Any
) -> list[tuple[Alert, str, str]]:
    """Alerts matching ``condition`` whose volunteer can still be texted."""
    rows = await session.execute(
        select(Alert, Volunteer.phone, Volunteer.language)
        .join(Volunteer, Volunteer.id == Alert.volunteer_id)
        .where(
            Alert.incident_id == incident_id,
            condition,
            Volunteer.phone.is_not(None),
            Volunteer.opted_out.is_(False),
        )
    )
    return [(alert, phone or "", language) for alert, phone, language in rows]


_OPEN_ALERT = and_(Alert.response.in_(("pending", "accepted")), Alert.stood_down_at.is_(None))
_SETTLE_OPEN_ALERTS = settle_statement(_OPEN_ALERT)


async def cancel_incident(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    centre: str | None,
    reason: str | None,
    now: datetime,
) -> Incident:
    """Every open alert the volunteer may have received gets a cancellation SMS.

    "May have received" is the alert SMS's own send state, read under its lock
    (``settle_alert_sms``); an alert SMS still queued is given up in this
    transaction, so nobody gets a cancellation for an alert they never saw, and
    nobody gets an alert without its cancellation.
    Cancelling twice changes nothing; a closed incident cannot be cancelled (409).
    """
    incident = await _incident_for_centre(session, incident_id=incident_id, centre=centre)
    if incident.status == "cancelled":
        return incident
    if incident.status == "closed":
        raise Conflict("the incident is closed; it cannot be cancelled")
    was_alerting = incident.status == "alerting"
    incident.status = "cancelled"
    incident.cancel_reason = reason
    incident.cancelled_at = now
    incident.updated_at = now
    if was_alerting:
        reached = await settle_alert_sms(
            session, statement=_SETTLE_OPEN_ALERTS, parameters={"incident_id": incident.id}, now=now
        )
        recipients = await _recipients(session, incident_id=incident.id, condition=_OPEN_ALERT)
        await session.execute(
            update(Alert)
            .where(Alert.incident_id == incident.id, _OPEN_ALERT)
            .values(cancelled_at=now, updated_at=now)
        )
        await _queue_cancellations(
            session,
            incident_id=incident.id,
            recipients=[
                (alert, phone, language)
                for alert, phone, language in recipients
                if alert.id in reached or alert.response == "accepted"
            ],
            now=now,
        )
    await session.flush()
    await record_event(
        session,
        incident_id=incident.id,
        type="incident.cancelled",
        data={"status": "cancelled", "reason": reason, "at": now.isoformat()},
    )
    return incident


async def close_incident(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    centre: str | None,
    outcome: str | None,
    now: datetime,
    settings: Settings,
    silent: bool = False,
) -> Incident:
    """End the incident; responders holding a role are thanked with the follow-up contact.

    Closing a closed incident changes nothing; a cancelled one cannot be closed (409).
    """
    incident = await _incident_for_centre(session, incident_id=incident_id, centre=centre)
    if incident.status == "closed":
        return incident
    if incident.status == "cancelled":
        raise Conflict("the incident is cancelled; it cannot be closed")
    incident.status = "closed"
    incident.close_outcome = outcome
    incident.closed_at = now
    incident.updated_at = now
    if not silent:
        responders = await _recipients(session, incident_id=incident.id, condition=HOLDS_A_ROLE)
        await _text_recipients(
            session,
            incident_id=incident.id,
            recipients=responders,
            purpose="thanks",
            body=lambda alert, language: texts.closed_thanks_text(
                language, follow_up=settings.follow_up_text
            ),
            now=now,
        )
    await session.flush()
    await record_event(
        session,
        incident_id=incident.id,
        type="incident.closed",
        data={
            "status": "closed",
            "outcome": outcome,
            "automatic": silent,
            "at": now.isoformat(),
        },
    )
    return incident


async def update_incident(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    centre: str | None,
    changes: IncidentChanges,
    now: datetime,
    settings: Settings,
) -> Incident:
    """Apply a dispatcher's update (SPEC 3.7).

    Responders holding a role get the new address or access notes by SMS; a scene
    flag that now excludes the incident stands everyone down (it becomes
    ``not_alerted`` with that flag as the reason); a new location re-plans the
    incident (``dispatch.replan``: nearest AED, pending volunteers' distances,
    stand-down of those now too far, new instructions to responders) and then
    alerts the nearest volunteers not yet alerted, at the new place, up to the
    incident's cap of pending alerts.
    """
    incident = await _incident_for_centre(session, incident_id=incident_id, centre=centre)
    if incident.status in ("cancelled", "closed"):
        raise Conflict(f"the incident is {incident.status}; it cannot be updated")
    changed: dict[str, Any] = {}
    if changes.address is not None and changes.address != incident.address:
        incident.address = changes.address
        changed["address"] = changes.address
    notes = None if changes.clear_access_notes else changes.access_notes
    if (changes.clear_access_notes or notes is not None) and notes != incident.access_notes:
        incident.access_notes = notes
        changed["access_notes"] = notes
    newly_excluding: str | None = None
    if changes.flags is not None:
        flags = {**incident.flags, **changes.flags}
        if flags != incident.flags:
            for name in SCENE_FLAGS:
                if flags.get(name) and not incident.flags.get(name):
                    newly_excluding = newly_excluding or name
            incident.flags = flags
            changed["flags"] = flags
    if changes.location is not None:
        incident.location = geography_point(changes.location)
        changed["location"] = {"lat": changes.location.lat, "lon": changes.location.lon}
    if changes.ems_eta_s is not None:
        incident.ems_eta_at = now + timedelta(seconds=changes.ems_eta_s)
        changed["ems_eta_at"] = incident.ems_eta_at.isoformat()
    ems_arrives = changes.ems_arrived and incident.ems_arrived_at is None
    if ems_arrives:
        incident.ems_arrived_at = now
        changed["ems_arrived_at"] = now.isoformat()
    if not changed:
        return incident
    incident.updated_at = now
    await session.flush()
    alerting = incident.status == "alerting"
    if alerting and newly_excluding is not None:
        await _stand_everyone_down(session, incident=incident, now=now)
        incident.status = "not_alerted"
        incident.not_alerted_reason = f"flag:{newly_excluding}"
    elif alerting and ems_arrives:
        await _hand_over_to_ems(session, incident=incident, now=now)
    elif alerting and changes.location is not None:
        await replan_after_move(
            session, incident=incident, point=changes.location, settings=settings, now=now
        )
    elif alerting and ("address" in changed or "access_notes" in changed):
        responders = await _recipients(session, incident_id=incident.id, condition=HOLDS_A_ROLE)
        await _text_recipients(
            session,
            incident_id=incident.id,
            recipients=responders,
            purpose="update",
            body=lambda alert, language: texts.update_text(
                language,
                code=alert.code,
                address=incident.address,
                access_notes=incident.access_notes,
            ),
            now=now,
        )
    await session.flush()
    await record_event(
        session,
        incident_id=incident.id,
        type="incident.updated",
        data={**changed, "status": incident.status, "at": now.isoformat()},
    )
    if incident.status == "alerting" and changes.location is not None and not ems_arrives:
        if not (await open_slots(session, incident)).full:
            await alert_more(session, incident=incident, settings=settings, now=now)
        await stand_down_if_complete(session, incident=incident, settings=settings, now=now)
    return incident


async def _stand_everyone_down(session: AsyncSession, *, incident: Incident, now: datetime) -> None:
    """Pending volunteers are stood down; responders on their way are told not to go."""
    await _stand_down_with_responders(
        session,
        incident=incident,
        responders=and_(Alert.response == "accepted", Alert.stood_down_at.is_(None)),
        purpose="cancellation",
        body=lambda alert, language: texts.cancellation_text(language, code=alert.code),
        now=now,
    )


async def _hand_over_to_ems(session: AsyncSession, *, incident: Incident, now: datetime) -> None:
    """The ambulance is there: pending volunteers are stood down, responders still on
    their way are told so; those who arrived stay and help the crew (no SMS)."""
    await _stand_down_with_responders(
        session,
        incident=incident,
        responders=and_(HOLDS_A_ROLE, Alert.arrived_at.is_(None), Alert.stood_down_at.is_(None)),
        purpose="stand_down",
        body=lambda alert, language: texts.ems_arrived_text(language, code=alert.code),
        now=now,
    )


async def _stand_down_with_responders(
    session: AsyncSession,
    *,
    incident: Incident,
    responders: Any,
    purpose: str,
    body: Callable[[Alert, str], str],
    now: datetime,
) -> None:
    """Stand down the pending and the accepted alerts matching ``responders``, texting those."""
    await stand_down_pending(session, incident=incident, now=now)
    recipients = await _recipients(session, incident_id=incident.id, condition=responders)
    await session.execute(
        update(Alert)
        .where(Alert.incident_id == incident.id, responders)
        .values(stood_down_at=now, updated_at=now)
    )
    await _text_recipients(
        session,
        incident_id=incident.id,
        recipients=recipients,
        purpose=purpose,
        body=body,
        now=now,
    )


async def _text_recipients(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    recipients: list[tuple[Alert, str, str]],
    purpose: str,
    body: Callable[[Alert, str], str],
    now: datetime,
) -> None:
    """Queue one text per recipient (alert, phone, language), worded by ``body``."""
    await queue_sms(
        session,
        [
            OutboundSms(
                phone=phone,
                body=body(alert, language),
                purpose=purpose,
                volunteer_id=alert.volunteer_id,
                incident_id=incident_id,
                alert_id=alert.id,
            )
            for alert, phone, language in recipients
        ],
        now=now,
    )


async def _queue_cancellations(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    recipients: list[tuple[Alert, str, str]],
    now: datetime,
) -> None:
    """Tell each recipient that the alert is over: do not go."""
    await _text_recipients(
        session,
        incident_id=incident_id,
        recipients=recipients,
        purpose="cancellation",
        body=lambda alert, language: texts.cancellation_text(language, code=alert.code),
        now=now,
    )


async def _incident_ids(
    factory: async_sessionmaker[AsyncSession], statement: Select[uuid.UUID]
) -> list[uuid.UUID]:
    """The incidents a timer will visit, read without a lock (each is locked in turn)."""
    async with factory() as session:
        return list((await session.execute(statement)).scalars())


async def expire_unanswered(
    factory: async_sessionmaker[AsyncSession], *, now: datetime, settings: Settings
) -> int:
    """Pending alerts older than the reply window become ``no_reply``.

    One short transaction per incident, which locks the incident first, as a reply
    or a cancel does: the pass never holds one incident's alerts while it waits for
    another's, so it cannot deadlock with them, and a YES applied before the pass
    reached its incident stands. Incidents are visited oldest unanswered alert first.
    """
    cutoff = now - settings.alert_reply_window
    expired_pending = and_(Alert.response == "pending", Alert.created_at <= cutoff)
    incident_ids = await _incident_ids(
        factory,
        select(Alert.incident_id)
        .where(expired_pending)
        .group_by(Alert.incident_id)
        .order_by(func.min(Alert.created_at)),
    )
    count = 0
    for incident_id in incident_ids:
        async with unit_of_work(factory) as session:
            await lock_incident(session, incident_id)
            expired = await session.execute(
                update(Alert)
                .where(Alert.incident_id == incident_id, expired_pending)
                .values(response="no_reply", updated_at=now)
                .returning(Alert.id)
            )
            alert_ids = list(expired.scalars())
            if alert_ids:
                await record_event(
                    session,
                    incident_id=incident_id,
                    type="alerts.no_reply",
                    data={
                        "alert_ids": [str(alert_id) for alert_id in alert_ids],
                        "at": now.isoformat(),
                    },
                )
            count += len(alert_ids)
    return count


async def close_stale_incidents(
    factory: async_sessionmaker[AsyncSession], *, now: datetime, settings: Settings
) -> int:
    """Incidents still alerting after ``INCIDENT_MAX_AGE`` are closed without any SMS.

    Each in its own transaction; one that a dispatcher cancelled or closed meanwhile
    is left as it is.
    """
    stale = await _incident_ids(
        factory,
        select(Incident.id)
        .where(
            Incident.status == "alerting",
            Incident.created_at <= now - settings.incident_max_age,
        )
        .order_by(Incident.id),
    )
    count = 0
    for incident_id in stale:
        async with unit_of_work(factory) as session:
            incident = await lock_incident(session, incident_id)
            if incident is None or incident.status != "alerting":
                continue
            await close_incident(
                session,
                incident_id=incident_id,
                centre=None,
                outcome="closed automatically",
                now=now,
                settings=settings,
                silent=True,
            )
            count += 1
    return count


async def run_timers(
    factory: async_sessionmaker[AsyncSession], *, now: datetime, settings: Settings
) -> None:
    """Every timed transition, each in short transactions of its own: the incidents'
    own (then the calls to ``sms_then_voice`` volunteers silent for ``CALL_AFTER``, and
    the strategy steps: replacing the silent, widening), then the
    registry's (the live-location purge, certification renewal reminders, the
    retention purge of docs/privacy.md)."""
    await expire_unanswered(factory, now=now, settings=settings)
    await close_stale_incidents(factory, now=now, settings=settings)
    await queue_follow_up_calls(factory, now=now, settings=settings)
    await run_strategy_steps(factory, now=now, settings=settings)
    async with unit_of_work(factory) as session:
        await purge_live_locations(session, now=now, retention=settings.live_location_retention)
    async with unit_of_work(factory) as session:
        await queue_certification_reminders(session, now=now, settings=settings)
    async with unit_of_work(factory) as session:
        purged = await enforce_retention(session, now=now, settings=settings)
    if any(purged.values()):
        log.info("retention purge", **purged)
