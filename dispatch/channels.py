"""Which channel carries a volunteer's alert: an SMS, or a call (``contact_preference``).

``sms`` (the default) and ``sms_then_voice`` get the alert SMS (the latter a call
later, when silent: ``dispatch.voice.queue_follow_up_calls``); ``voice`` gets a call
instead of it. Calls cost more than texts, so an incident places at most
``CALL_MAX_PER_INCIDENT`` alert calls: a ``voice`` volunteer beyond it gets the SMS,
which is the alert every phone but a landline can take. Without a voice-capable
number (``TWILIO_VOICE_FROM``) nobody is called.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.core.db import unit_of_work
from app.core.models import Alert, Incident, Message, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from app.core.texts import alert_text
from dispatch.roles import lock_for_timed_step

ALERT_CALL = (Message.channel == "voice", Message.purpose.in_(("alert", "alert_call")))
"""An alert call: instead of the alert SMS (``alert``), or after it (``alert_call``)."""


async def alert_calls_placed(session: AsyncSession, incident_id: uuid.UUID) -> int:
    """Alert calls queued for the incident so far, whatever became of them."""
    count: int = (
        await session.execute(
            select(func.count()).where(Message.incident_id == incident_id, *ALERT_CALL)
        )
    ).scalar_one()
    return count


async def alert_channels(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    preferences: Sequence[str],
    settings: Settings,
) -> list[str]:
    """The channel of each new alert, in the order of ``preferences``, nearest first."""
    channels = ["sms"] * len(preferences)
    if not settings.voice_enabled or "voice" not in preferences:
        return channels
    room = settings.call_max_per_incident - await alert_calls_placed(session, incident_id)
    for index, preference in enumerate(preferences):
        if preference == "voice" and room > 0:
            channels[index] = "voice"
            room -= 1
    return channels


def _silent_since_sms(incident_id: object, *, before: datetime) -> list[ColumnElement[bool]]:
    """``sms_then_voice`` alerts still unanswered since ``before``, and never called."""
    return [
        Alert.incident_id == incident_id,
        Alert.response == "pending",
        Alert.stood_down_at.is_(None),
        Alert.created_at <= before,
        Volunteer.contact_preference == "sms_then_voice",
        ~exists().where(Message.alert_id == Alert.id, *ALERT_CALL),
    ]


async def queue_follow_up_calls(
    session_factory: async_sessionmaker[AsyncSession], *, now: datetime, settings: Settings
) -> int:
    """The timer pass: call the ``sms_then_voice`` volunteers silent for ``CALL_AFTER``.

    Only while the incident alerts, its ambulance has not arrived and a role slot is
    open; nearest first, within ``CALL_MAX_PER_INCIDENT``. One short transaction per
    incident, its row locked first (``SKIP LOCKED``, as the strategy steps do); the
    queued call is its own mark (one per alert, a unique index), so two workers or a
    pass after a crash never call one volunteer twice. Returns the calls queued.
    """
    if not settings.voice_enabled or settings.call_after is None:
        return 0
    before = now - settings.call_after
    async with session_factory() as session:
        due = list(
            (
                await session.execute(
                    select(Alert.incident_id)
                    .join(Volunteer, Volunteer.id == Alert.volunteer_id)
                    .join(Incident, Incident.id == Alert.incident_id)
                    .where(
                        Incident.status == "alerting",
                        Incident.ems_arrived_at.is_(None),
                        *_silent_since_sms(Alert.incident_id, before=before),
                    )
                    .distinct()
                )
            ).scalars()
        )
    queued = 0
    for incident_id in due:
        async with unit_of_work(session_factory) as session:
            queued += await _call_the_silent(
                session, incident_id=incident_id, before=before, now=now, settings=settings
            )
    return queued


async def _call_the_silent(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    before: datetime,
    now: datetime,
    settings: Settings,
) -> int:
    incident = await lock_for_timed_step(session, incident_id)
    if incident is None:
        return 0
    room = settings.call_max_per_incident - await alert_calls_placed(session, incident.id)
    if room <= 0:
        return 0
    silent = (
        await session.execute(
            select(Alert.id, Alert.code, Alert.distance_m, Volunteer.id, Volunteer.phone)
            .join(Volunteer, Volunteer.id == Alert.volunteer_id)
            .add_columns(Volunteer.language)
            .where(*_silent_since_sms(incident.id, before=before), Volunteer.phone.is_not(None))
            .order_by(Alert.distance_m, Alert.id)
            .limit(room)
        )
    ).all()
    await queue_sms(
        session,
        [
            OutboundSms(
                phone=phone,
                body=alert_text(
                    language,
                    kind=incident.kind,
                    at=now,
                    zone=settings.zone,
                    distance_m=distance_m,
                    address=incident.address,
                    code=code,
                ),
                purpose="alert_call",
                volunteer_id=volunteer_id,
                incident_id=incident.id,
                alert_id=alert_id,
                deadline_at=now + settings.alert_send_deadline,
                channel="voice",
            )
            for alert_id, code, distance_m, volunteer_id, phone, language in silent
        ],
        now=now,
    )
    return len(silent)
