"""A volunteer's SMS, from arrival to answer: the one path for both providers and the CLI.

Guarantees:
- Idempotent by provider message id: the inbound row (unique ``provider_sid``) is
  inserted with its answer at the end; a webhook retried with the same
  ``MessageSid``, or delivered twice at once, finds it, has what it did rolled
  back, and gets the stored answer.
- A YES counts whatever the delivery receipts say: delivery, response and outcome
  are separate columns.
- Replies to one incident are serialised on its row lock, so roles are handed out
  strictly in order of arrival and two simultaneous YES never take one slot.
- Every inbound message gets an answer (help for what cannot be understood); the
  caller sends it back through the provider it came by (TwiML for Twilio, the
  webhook's plain-text answer for 46elks).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import structlog
from sqlalchemy import Select, Table, and_, bindparam, inspect, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app.core import texts
from app.core.models import Aed, Alert, Incident, Message, Volunteer
from app.core.settings import Settings
from app.registry.audit import Actor
from app.registry.volunteers import erase_volunteer, opt_in, opt_out
from dispatch.alerting import alert_more, count_pending
from dispatch.ems import arrives_before_ems, estimated_arrival
from dispatch.events import Event, event_parameters, recorded_events
from dispatch.replies import Intent, Reply, parse_reply
from dispatch.roles import (
    TALLY_OF_ALERTS_INCIDENT,
    Tally,
    accept_would_stand_down_others,
    choose_role,
    lock_incident,
    stand_down_if_complete,
    tally_of,
)
from dispatch.strategies import replace_in_batch
from geo.points import lat_lon_of

log = structlog.get_logger(__name__)

BODY_STORE_LIMIT = 1600
RECENT_ALERT_WINDOW = timedelta(hours=12)
"""How far back a reply without an open alert is taken to be about an ended alert."""


# Built once: the webhook runs these on every inbound SMS, and constructing a
# statement (and its cache key) per request cost more CPU than executing it.
_message: Table = Message.__table__  # type: ignore[assignment]
_alert: Table = Alert.__table__  # type: ignore[assignment]
# The inbound row is written last, with its answer: one statement, not an INSERT
# and an UPDATE. The unique MessageSid still decides: a second insert of one waits
# for the first's transaction and then finds it (``_AlreadyStored``).
_INSERT_INBOUND = (
    pg_insert(_message)
    .values(
        id=bindparam("new_id"),
        direction="in",
        purpose="reply",
        phone=bindparam("new_phone"),
        body=bindparam("new_body"),
        provider_sid=bindparam("new_sid"),
        provider=bindparam("new_provider"),
        status="received",
        reply_body=bindparam("answer"),
        volunteer_id=bindparam("answer_volunteer_id"),
        alert_id=bindparam("answer_alert_id"),
        incident_id=bindparam("answer_incident_id"),
        created_at=bindparam("new_now"),
        updated_at=bindparam("new_now"),
    )
    .on_conflict_do_nothing(index_elements=[_message.c.provider_sid])
    .returning(_message.c.id)
)
_STORED_ANSWER = select(_message.c.reply_body).where(_message.c.provider_sid == bindparam("sid"))
_RECENT_ALERTS = (
    select(Alert, Incident.status)
    .join(Incident, Incident.id == Alert.incident_id)
    .where(Alert.volunteer_id == bindparam("volunteer_id"), Alert.created_at >= bindparam("since"))
    .order_by(Alert.created_at.desc())
)
# The sender with their recent alerts (``_RECENT_ALERTS``) in one read, unlocked:
# one row per alert, or one without when there is none. It decides which alert a
# reply is about, and answers a reply that changes nothing; what one that changes
# something does is decided on the sender, the incident and the alert locked and
# read afresh (``_LOCK_SENDER``, ``lock_incident``, ``_LOCK_ALERT``).
_SENDER_AND_RECENT_ALERTS = (
    select(Volunteer, Alert, Incident.status)
    .outerjoin(
        Alert,
        and_(Alert.volunteer_id == Volunteer.id, Alert.created_at >= bindparam("since")),
    )
    .outerjoin(Incident, Incident.id == Alert.incident_id)
    .where(Volunteer.phone == bindparam("phone"), Volunteer.status != "erased")
    .order_by(Alert.created_at.desc())
)
# NO KEY UPDATE: another reply's stand-down texts to this volunteer take FOR KEY
# SHARE through message.volunteer_id; FOR UPDATE would deadlock them.
_LOCK_SENDER = (
    select(Volunteer)
    .where(Volunteer.id == bindparam("volunteer_id"), Volunteer.status != "erased")
    .with_for_update(key_share=True)
    .execution_options(populate_existing=True)
)
# populate_existing: the alert was read (unlocked) to find it; the decision must be
# taken on the row as locked, not on the object the session kept from that read.
# With the incident's tally (taken roles, pending detours): the reply decides by it,
# under the incident's lock, without counting again.
_LOCK_ALERT = (
    select(Alert, *TALLY_OF_ALERTS_INCIDENT)
    .where(Alert.id == bindparam("alert_id"))
    .with_for_update(of=Alert, key_share=True)
    .execution_options(populate_existing=True)
)


@dataclass(frozen=True)
class InboundSms:
    message_sid: str
    from_phone: str
    body: str
    provider: str | None = None
    """The gateway it came through (None: the primary); the answer goes back by it."""


REPLY_ATTEMPTS = 3
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the database rolled the attempt back whole,
so trying it again is safe and, once the other transaction ended, succeeds."""


async def handle_inbound_sms(
    session: AsyncSession,
    *,
    sms: InboundSms,
    now: datetime,
    settings: Settings,
    attempts: int = REPLY_ATTEMPTS,
) -> str:
    """Store the SMS, apply it, and return the answer to send back (stored with it).

    The sender and their recent alerts are read first, unlocked. A reply that
    changes nothing (from an unknown number, a help, about an alert that had ended)
    is then stored with its answer at once: no savepoint, no lock. One that may
    change something runs in a savepoint (nothing else is held by the caller's
    transaction), from the sender's lock on; a deadlock or serialization failure
    rolls back to it, releasing every lock the attempt took, and the reply is tried
    again, up to ``attempts`` times. A reply that still cannot be applied is stored
    with, and answered by, a text asking the volunteer to reply again: never an
    error that Twilio would not retry and nobody would see.

    The SMS is stored last, with the answer. When its MessageSid was stored before
    (a retried webhook, or the same one arriving twice at once, whose insert waits
    for the other's transaction), what the attempt did is rolled back and the stored
    answer is returned.
    """
    volunteer, recent = await _sender_and_recent_alerts(session, sms=sms, now=now)
    reply = parse_reply(sms.body)
    try:
        unchanging = (
            Outcome(texts.unknown_sender_text())
            if volunteer is None
            else _unchanging_answer(volunteer, reply, recent)
        )
        if unchanging is not None:
            await _store_inbound(session, sms=sms, now=now, outcome=unchanging, sender=volunteer)
            return unchanging.answer
        for attempt in range(1, attempts + 1):
            try:
                async with session.begin_nested():
                    if attempt > 1:
                        # The rollback expired what the last attempt changed: read afresh.
                        volunteer, recent = await _sender_and_recent_alerts(
                            session, sms=sms, now=now
                        )
                    sender = (
                        None
                        if volunteer is None
                        else (
                            await session.execute(_LOCK_SENDER, {"volunteer_id": volunteer.id})
                        ).scalar_one_or_none()
                    )
                    outcome = (
                        Outcome(texts.unknown_sender_text())
                        if sender is None
                        else await apply_reply(
                            session,
                            volunteer=sender,
                            reply=reply,
                            now=now,
                            settings=settings,
                            recent=recent,
                        )
                    )
                    await _store_inbound(session, sms=sms, now=now, outcome=outcome, sender=sender)
                    return outcome.answer
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None)
                if sqlstate not in RETRYABLE_SQLSTATES:
                    raise
                log.warning("reply not applied; retrying", sqlstate=sqlstate, attempt=attempt)
        answer = texts.reply_not_recorded_text()
        await _store_inbound(session, sms=sms, now=now, outcome=Outcome(answer), sender=None)
        return answer
    except _AlreadyStored:
        stored = (
            await session.execute(_STORED_ANSWER, {"sid": sms.message_sid[:64]})
        ).scalar_one_or_none()
        return stored or texts.help_text("sv")


async def _sender_and_recent_alerts(
    session: AsyncSession, *, sms: InboundSms, now: datetime
) -> tuple[Volunteer | None, list[tuple[Alert, str]]]:
    """The sender (``None``: unknown) and their recent alerts, unlocked, in one read."""
    rows = (
        await session.execute(
            _SENDER_AND_RECENT_ALERTS,
            {"phone": sms.from_phone, "since": now - RECENT_ALERT_WINDOW},
        )
    ).all()
    volunteer = rows[0][0] if rows else None
    return volunteer, [(alert, status) for _, alert, status in rows if alert is not None]


class _AlreadyStored(Exception):
    """This MessageSid was stored before: the attempt is rolled back (its savepoint)."""


async def _store_inbound(
    session: AsyncSession,
    *,
    sms: InboundSms,
    now: datetime,
    outcome: Outcome,
    sender: Volunteer | None,
) -> None:
    """The inbound row with its answer; :class:`_AlreadyStored` when it exists."""
    inserted = (
        await session.execute(
            _INSERT_INBOUND,
            {
                "new_id": uuid.uuid4(),
                "new_phone": sms.from_phone[:20],
                "new_body": sms.body[:BODY_STORE_LIMIT],
                "new_sid": sms.message_sid[:64],
                "new_provider": sms.provider,
                "new_now": now,
                "answer": outcome.answer,
                "answer_volunteer_id": sender.id if sender else None,
                "answer_alert_id": outcome.alert_id,
                "answer_incident_id": outcome.incident_id,
            },
        )
    ).scalar_one_or_none()
    if inserted is None:
        raise _AlreadyStored


@dataclass(frozen=True)
class Outcome:
    answer: str
    alert_id: uuid.UUID | None = None
    incident_id: uuid.UUID | None = None


async def apply_reply(
    session: AsyncSession,
    *,
    volunteer: Volunteer,
    reply: Reply,
    now: datetime,
    settings: Settings,
    recent: list[tuple[Alert, str]] | None = None,
) -> Outcome:
    """What ``reply`` from ``volunteer`` (locked by the caller) does; ``recent``: their
    alerts of the last ``RECENT_ALERT_WINDOW`` with each incident's status, newest
    first, when the caller read them with the sender (read here otherwise)."""
    language = volunteer.language
    if recent is None and reply.intent in ANSWERING:
        recent = list(
            await session.execute(
                _RECENT_ALERTS, {"volunteer_id": volunteer.id, "since": now - RECENT_ALERT_WINDOW}
            )
        )
    unchanging = _unchanging_answer(volunteer, reply, recent or [])
    if unchanging is not None:
        return unchanging
    if reply.intent == "stop":
        await opt_out(session, volunteer_id=volunteer.id, now=now)
        await release_open_alerts(
            session, volunteer_id=volunteer.id, reason="stop", now=now, settings=settings
        )
        return Outcome(texts.opted_out_text(language))
    if reply.intent == "start":
        await opt_in(session, volunteer_id=volunteer.id, now=now)
        return Outcome(texts.opted_in_text(language))
    if reply.intent == "pause":
        until = now + timedelta(hours=reply.hours or 8)
        volunteer.paused_until = until
        await release_open_alerts(
            session, volunteer_id=volunteer.id, reason="pause", now=now, settings=settings
        )
        return Outcome(texts.paused_text(language, until=until, zone=settings.zone))
    if reply.intent == "resume":
        volunteer.paused_until = None
        return Outcome(texts.resumed_text(language))
    if _consent_asked(volunteer, reply):
        # Asked for consent (CSV import); never alerted before it, so YES is about that.
        volunteer.consent_at = now
        return Outcome(texts.consent_recorded_text(language))
    target = _target_alert(volunteer=volunteer, reply=reply, recent=recent or [])
    assert not isinstance(target, str)  # _unchanging_answer answered those
    return await _answer_alert(
        session, volunteer=volunteer, reply=reply, now=now, settings=settings, target=target
    )


ANSWERING: tuple[Intent, ...] = ("accept", "decline", "withdraw", "arrived")
"""The intents that answer an alert (the rest act on the volunteer, or are help)."""


def _consent_asked(volunteer: Volunteer, reply: Reply) -> bool:
    return bool(
        reply.intent == "accept" and volunteer.consent_requested_at and not volunteer.consent_at
    )


def _unchanging_answer(
    volunteer: Volunteer, reply: Reply, recent: list[tuple[Alert, str]]
) -> Outcome | None:
    """The answer to a reply that changes nothing, decided without taking a lock;
    ``None`` when the reply may change something.

    An alert that had ended when ``recent`` was read (stood down, answered, its
    incident no longer alerting) has ended for good: no alert opens again and no
    incident starts alerting again, so its answer is the one the locks would give.
    """
    language = volunteer.language
    if reply.intent in ("unknown", "help"):
        return Outcome(texts.help_text(language))
    if reply.intent not in ANSWERING or _consent_asked(volunteer, reply):
        return None
    target = _target_alert(volunteer=volunteer, reply=reply, recent=recent)
    if isinstance(target, str):
        return Outcome(target)
    if not any(_open_row(alert, status) for alert, status in recent if alert is target):
        return Outcome(texts.alert_ended_text(language), target.id, target.incident_id)
    return None


async def _answer_alert(
    session: AsyncSession,
    *,
    volunteer: Volunteer,
    reply: Reply,
    now: datetime,
    settings: Settings,
    target: Alert,
) -> Outcome:
    language = volunteer.language
    incident = await lock_incident(session, target.incident_id)
    locked = (await session.execute(_LOCK_ALERT, {"alert_id": target.id})).one()
    alert, tally = locked[0], tally_of(locked)
    if incident is None or not _open_row(alert, incident.status):
        return Outcome(texts.alert_ended_text(language), alert.id, alert.incident_id)
    if _needs_code(incident=incident, alert=alert, tally=tally, reply=reply, settings=settings):
        answer = texts.confirm_with_code_text(language, code=alert.code)
        return Outcome(answer, alert.id, incident.id)
    if reply.intent == "arrived":
        answer = await _arrive(session, incident=incident, alert=alert, lang=language, now=now)
    else:
        respond = {"accept": _accept, "decline": _decline, "withdraw": _withdraw}[reply.intent]
        answer = await respond(_Answering(session, incident, alert, tally, language, now, settings))
    return Outcome(answer, alert.id, incident.id)


def _needs_code(
    *, incident: Incident, alert: Alert, tally: Tally, reply: Reply, settings: Settings
) -> bool:
    """A YES without the code may not stand other volunteers down (docs/reliability.md).

    A sender's number can be spoofed on some carrier routes; the code was only ever
    sent to the real phone. Without it, a forged YES could fill the last slot and
    send everyone else home. Every other code-less reply errs towards more help.
    """
    return (
        reply.intent == "accept"
        and reply.code is None
        and alert.response == "pending"
        and accept_would_stand_down_others(
            incident=incident, alert=alert, tally=tally, settings=settings
        )
    )


def _target_alert(
    *, volunteer: Volunteer, reply: Reply, recent: list[tuple[Alert, str]]
) -> Alert | str:
    """The alert a reply is about, or the answer when that cannot be known."""
    language = volunteer.language
    if reply.code is not None:
        coded = [alert for alert, _ in recent if alert.code == reply.code]
        if not coded:
            return texts.help_text(language)
        open_coded = [
            alert
            for alert, status in recent
            if alert.code == reply.code and _open_row(alert, status)
        ]
        return (open_coded or coded)[0]
    wanted = ("accepted",) if reply.intent in ("withdraw", "arrived") else ("pending", "accepted")
    candidates = [
        alert for alert, status in recent if _open_row(alert, status) and alert.response in wanted
    ]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        verb = {"accept": "YES", "decline": "NO", "withdraw": "WITHDRAW", "arrived": "ARRIVED"}
        return texts.which_alert_text(
            language,
            codes=[alert.code for alert in candidates],
            verb=verb[reply.intent],
        )
    if recent:
        return recent[0][0]
    return texts.help_text(language)


def _open_row(alert: Alert, incident_status: str) -> bool:
    return (
        incident_status == "alerting"
        and alert.response in ("pending", "accepted")
        and alert.stood_down_at is None
    )


@dataclass(frozen=True)
class _Answering:
    """What every change of a response works on: the locked incident and alert, and
    the incident's tally as read with the alert."""

    session: AsyncSession
    incident: Incident
    alert: Alert
    tally: Tally
    lang: str
    now: datetime
    settings: Settings


async def _respond(change: _Answering, response: str, **data: Any) -> None:
    """Set the response and record the ``alert.<response>`` event with ``data``."""
    alert = change.alert
    alert.response = response
    alert.responded_at = change.now
    alert.updated_at = change.now
    await _store_with_event(
        change.session,
        alert,
        Event(
            type=f"alert.{response}",
            data={"alert_id": str(alert.id), **data, "at": change.now.isoformat()},
        ),
    )


async def _store_with_event(session: AsyncSession, alert: Alert, event: Event) -> None:
    """Write what was changed on the locked ``alert`` and the event recording it, in one
    statement (``recorded_events`` with the change as a CTE), where a flush and the
    event were two.

    Only the changed columns are written (one statement per set of them, built once),
    and the object is then marked as stored, before the statement, so that the
    session's autoflush does not write it a second time. Should the statement fail,
    the reply's savepoint is rolled back, which expires the object.
    """
    state = inspect(alert)
    changed = tuple(attr.key for attr in state.attrs if attr.history.has_changes())
    values = {f"new_{name}": getattr(alert, name) for name in changed}
    for name in changed:
        set_committed_value(alert, name, getattr(alert, name))
    await session.execute(
        _alert_change_with_event(changed),
        {
            **event_parameters(alert.incident_id, [event], prefix="event_"),
            "changed_alert": alert.id,
            **values,
        },
    )


@cache
def _alert_change_with_event(columns: tuple[str, ...]) -> Select[tuple[Any]]:
    """``UPDATE alert SET <columns>`` with an incident's events, one statement per column
    set (a reply writes one of a handful), built once; on the table's columns, so that
    its cache key is computed once, not on every execution."""
    change = (
        update(_alert)
        .where(_alert.c.id == bindparam("changed_alert"))
        .values({name: bindparam(f"new_{name}", type_=_alert.c[name].type) for name in columns})
        .returning(_alert.c.id)
        .cte("changed")
    )
    # PostgreSQL runs every data-modifying CTE, referenced or not. The events'
    # parameters are prefixed: one named as a column would be SET by the UPDATE too.
    inserted, announced = recorded_events(prefix="event_")
    return select(announced).select_from(inserted).add_cte(change)


async def _accept(change: _Answering) -> str:
    session, incident, alert = change.session, change.incident, change.alert
    if alert.response == "accepted" and alert.role is not None:
        return await instructions(session, incident=incident, alert=alert, language=change.lang)
    via_aed_m = alert.distance_m + (alert.aed_detour_m or 0.0)
    role = choose_role(
        change.tally.slots(incident),
        detour_m=alert.aed_detour_m,
        settings=change.settings,
        aed_before_ems=arrives_before_ems(
            change.settings,
            route_m=via_aed_m,
            leaving_at=change.now,
            ems_eta_at=incident.ems_eta_at,
        ),
    )
    alert.accepted_at = change.now
    if role is None:
        alert.stood_down_at = change.now
    else:
        alert.role = role
        alert.aed_id = incident.nearest_aed_id if role == "aed" else None
        alert.estimated_arrival_at = estimated_arrival(
            change.settings, route_m=route_m(alert), leaving_at=change.now
        )
    await _respond(change, "accepted", role=role)
    if role is None:
        return texts.not_needed_text(change.lang)
    await stand_down_if_complete(
        session,
        incident=incident,
        settings=change.settings,
        now=change.now,
        tally=change.tally.answered(alert.aed_detour_m, role=role),
    )
    return await instructions(session, incident=incident, alert=alert, language=change.lang)


async def _decline(change: _Answering) -> str:
    if change.alert.response == "accepted":
        return await _withdraw(change)
    await _end_pending(change, reason="decline")
    return texts.declined_text(change.lang)


async def _end_pending(change: _Answering, *, reason: str) -> None:
    """The pending volunteer is not coming: declined (a NO, or ``reason`` STOP, PAUSE,
    erasure), no longer counted as pending, and with ``ALERT_BATCH`` the place goes
    to the next nearest at once. Under the incident's lock."""
    await _respond(change, "declined", reason=reason)
    await stand_down_if_complete(
        change.session,
        incident=change.incident,
        settings=change.settings,
        now=change.now,
        tally=change.tally.answered(change.alert.aed_detour_m, role=None),
    )
    if change.settings.alert_batch is not None:
        await _replace_at_once(change)


async def _withdraw(change: _Answering) -> str:
    if change.alert.response != "accepted":
        return texts.help_text(change.lang)
    await _give_up_role(change, reason="withdraw")
    return texts.withdrawn_text(change.lang)


async def _give_up_role(change: _Answering, *, reason: str) -> None:
    """The responder is no longer coming: the slot reopens, and when nobody is left
    pending the next nearest are alerted (with ``ALERT_BATCH``: the place goes to the
    next nearest at once). Under the incident's lock."""
    role = change.alert.role
    change.alert.role = None
    await _respond(change, "withdrawn", role=role, reason=reason)
    if change.settings.alert_batch is not None:
        await _replace_at_once(change)
    elif await count_pending(change.session, change.incident.id) == 0:
        await alert_more(
            change.session, incident=change.incident, settings=change.settings, now=change.now
        )


async def _replace_at_once(change: _Answering) -> None:
    """With ``ALERT_BATCH``, the place this alert held goes to the next nearest at once."""
    await replace_in_batch(
        change.session,
        incident=change.incident,
        settings=change.settings,
        now=change.now,
        replaced=[change.alert.id],
    )


async def release_open_alerts(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    reason: str,
    now: datetime,
    settings: Settings,
) -> int:
    """A volunteer who opts out (STOP), pauses or is erased is on no open alert any more.

    A role they hold is given up exactly as after WITHDRAW: the slot reopens and, when
    nobody is pending, the next nearest are alerted. A pending alert ends exactly as
    after NO (:func:`_end_pending`), so it no longer holds a place under the pending
    cap. They get no SMS about either (they asked for none, or are gone). The caller
    holds the volunteer's row; each incident is locked before its alert, in
    incident-id order, the order every other writer uses.
    """
    open_alerts = (
        await session.execute(
            select(Alert.id, Alert.incident_id, Volunteer.language)
            .join(Incident, Incident.id == Alert.incident_id)
            .join(Volunteer, Volunteer.id == Alert.volunteer_id)
            .where(
                Alert.volunteer_id == volunteer_id,
                or_(
                    Alert.response == "pending",
                    and_(Alert.response == "accepted", Alert.role.is_not(None)),
                ),
                Alert.stood_down_at.is_(None),
                Incident.status == "alerting",
            )
            .order_by(Alert.incident_id)
        )
    ).all()
    released = 0
    for alert_id, incident_id, language in open_alerts:
        incident = await lock_incident(session, incident_id)
        locked = (await session.execute(_LOCK_ALERT, {"alert_id": alert_id})).one()
        alert = locked[0]
        if incident is None or not _open_row(alert, incident.status):
            continue
        change = _Answering(session, incident, alert, tally_of(locked), language, now, settings)
        if alert.response == "pending":
            await _end_pending(change, reason=reason)
        elif alert.role is not None:
            await _give_up_role(change, reason=reason)
        else:
            continue
        released += 1
    return released


_RECIPIENT = (
    select(Volunteer.id)
    .join(Message, Message.volunteer_id == Volunteer.id)
    .where(Message.id == bindparam("message_id"))
    .with_for_update(of=Volunteer, key_share=True)
)


async def erase_and_release(
    session: AsyncSession,
    *,
    volunteer_id: uuid.UUID,
    actor: Actor,
    now: datetime,
    settings: Settings,
) -> None:
    """Erasure by anyone (an administrator, a coordinator, the volunteer), and what it
    ends: a role they held reopens as after WITHDRAW, a pending alert ends as after NO
    (:func:`release_open_alerts`), so nobody who is gone keeps a place."""
    await erase_volunteer(session, volunteer_id=volunteer_id, actor=actor, now=now)
    await release_open_alerts(
        session, volunteer_id=volunteer_id, reason="erased", now=now, settings=settings
    )


async def release_if_unalertable(
    session: AsyncSession, *, volunteer_id: uuid.UUID, now: datetime, settings: Settings
) -> int:
    """After a change made on a page or through the API rather than by SMS: a volunteer
    now opted out or paused is on no open alert, exactly as after STOP or PAUSE texted
    (:func:`release_open_alerts`). The caller holds the volunteer's row and has written
    the change; the row is read again, since the change may have been a bulk update.
    """
    opted_out, paused_until = (
        await session.execute(
            select(Volunteer.opted_out, Volunteer.paused_until).where(Volunteer.id == volunteer_id)
        )
    ).one()
    if opted_out:
        reason = "stop"
    elif paused_until is not None and paused_until > now:
        reason = "pause"
    else:
        return 0
    return await release_open_alerts(
        session, volunteer_id=volunteer_id, reason=reason, now=now, settings=settings
    )


async def carrier_opt_out(
    session: AsyncSession, *, message_id: uuid.UUID, now: datetime, settings: Settings
) -> None:
    """The carrier says the recipient of ``message_id`` opted out (Twilio error 21610,
    on a send or in a receipt): the provider answered their STOP itself, so it never
    reached our webhook. It ends what a STOP we saw ends: no SMS until START, and
    their open alerts (:func:`release_open_alerts`), so no pending alert or role of
    theirs keeps a place that another volunteer could take.

    Before the message's own delivery state is recorded: the volunteer, then each
    incident in id order, the lock order every writer keeps.
    """
    volunteer_id = (
        await session.execute(_RECIPIENT, {"message_id": message_id})
    ).scalar_one_or_none()
    if volunteer_id is None:
        return
    await opt_out(session, volunteer_id=volunteer_id, now=now)
    await release_open_alerts(
        session, volunteer_id=volunteer_id, reason="stop", now=now, settings=settings
    )


async def _arrive(
    session: AsyncSession, *, incident: Incident, alert: Alert, lang: str, now: datetime
) -> str:
    if alert.response != "accepted" or alert.role is None:
        return texts.help_text(lang)
    if alert.arrived_at is None:
        alert.arrived_at = now
        alert.updated_at = now
        await _store_with_event(
            session,
            alert,
            Event(type="alert.arrived", data={"alert_id": str(alert.id), "at": now.isoformat()}),
        )
    return texts.arrived_text(lang)


async def instructions(
    session: AsyncSession, *, incident: Incident, alert: Alert, language: str
) -> str:
    """Where to go and what to do, for the role the volunteer now holds.

    ``incident`` as locked (its location loaded with it: the point is read from it,
    with no statement of its own).
    """
    point = lat_lon_of(incident.location)
    aed: Any = None
    aed_id = alert.aed_id or incident.nearest_aed_id
    if alert.role == "aed" and aed_id is not None:
        aed = await session.get(Aed, aed_id)
    return texts.instructions_text(
        language,
        role=alert.role or "cpr",
        address=incident.address,
        access_notes=incident.access_notes,
        lat=point.lat,
        lon=point.lon,
        route_m=route_m(alert),
        aed_address=aed.address if aed else None,
        aed_description=aed.description if aed else None,
        aed_access=_access_summary(aed.access) if aed else None,
    )


def route_m(alert: Alert) -> float:
    """How far the responder walks, straight-line: via the AED for the AED role."""
    if alert.role == "aed":
        return alert.distance_m + (alert.aed_detour_m or 0.0)
    return alert.distance_m


def _access_summary(access: Any) -> str | None:
    if access == "always" or access is None:
        return None
    windows = []
    for window in access:
        if isinstance(window, dict):
            days = window.get("days", [])
            when = "" if len(days) == 7 else "/".join(days) + " "
            windows.append(f"{when}{window.get('start')}-{window.get('end')}")
    return ", ".join(windows) or None
