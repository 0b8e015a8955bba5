"""A volunteer's SMS, from arrival to answer: the one path for both providers and the CLI.

Guarantees:
- Idempotent by provider message id: the inbound row (unique ``provider_sid``) is
  inserted with its answer, by the statement of the reply's change or on its own;
  a webhook retried with the same ``MessageSid``, or delivered twice at once, finds
  it, has its transaction rolled back, and gets the stored answer.
- Each attempt at a reply is a transaction of its own: a deadlock victim is tried
  again from the start, holding nothing of the failed attempt.
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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

import structlog
from sqlalchemy import Table, and_, bindparam, inspect, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import texts
from app.core.db import SessionQuery, Transactions
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
_incident: Table = Incident.__table__  # type: ignore[assignment]
_volunteer: Table = Volunteer.__table__  # type: ignore[assignment]
# The inbound row, with its answer: one statement, not an INSERT and an UPDATE; on
# its own, or a CTE of the reply's change (``_alert_change_with_event``). The unique
# MessageSid still decides: a second insert of one waits for the first's transaction
# and then finds it (``_AlreadyStored``). From a SELECT of its parameters, so that the
# columns it does not name take their server defaults: an INSERT … VALUES takes the
# columns' Python defaults as parameters, which nothing fills in inside a CTE.
_INBOUND_PARAMETERS = {
    "id": "new_id",
    "phone": "new_phone",
    "body": "new_body",
    "provider_sid": "new_sid",
    "provider": "new_provider",
    "reply_body": "answer",
    "volunteer_id": "answer_volunteer_id",
    "alert_id": "answer_alert_id",
    "incident_id": "answer_incident_id",
    "created_at": "new_now",
    "updated_at": "new_now",
}
_INBOUND_CONSTANTS = {"direction": "in", "purpose": "reply", "status": "received"}
_INSERT_INBOUND = (
    pg_insert(_message)
    .from_select(
        [*_INBOUND_PARAMETERS, *_INBOUND_CONSTANTS],
        select(
            *(
                bindparam(name, type_=_message.c[column].type)
                for column, name in _INBOUND_PARAMETERS.items()
            ),
            *(
                literal(value, _message.c[column].type)
                for column, value in _INBOUND_CONSTANTS.items()
            ),
        ),
        include_defaults=False,
    )
    .on_conflict_do_nothing(index_elements=[_message.c.provider_sid])
    .returning(_message.c.id)
)
_STORE_INBOUND = SessionQuery(_INSERT_INBOUND)
_STORED_ANSWER = select(_message.c.reply_body).where(_message.c.provider_sid == bindparam("sid"))
_RECENT_ALERT_COLUMNS = (
    _alert.c.id.label("alert_id"),
    _alert.c.incident_id,
    _alert.c.code,
    _alert.c.response,
    _alert.c.stood_down_at,
    _incident.c.status.label("incident_status"),
)
_RECENT_ALERTS = SessionQuery(
    select(*_RECENT_ALERT_COLUMNS)
    .select_from(_alert.join(_incident, _incident.c.id == _alert.c.incident_id))
    .where(
        _alert.c.volunteer_id == bindparam("volunteer_id"),
        _alert.c.created_at >= bindparam("since"),
    )
    .order_by(_alert.c.created_at.desc())
)
# The sender, locked, with their recent alerts (``_RECENT_ALERTS``) in one read: one
# row per alert, or one without when there is none. It decides which alert a reply is
# about, and answers a reply that changes nothing; what one that changes something
# does is decided on the incident and the alert locked and read afresh
# (``lock_incident``, ``_LOCK_ALERT``). The sender's lock is what makes an erasure
# wait until the reply's inbound row (with the number) is stored, so that the erasure
# scrubs it too. NO KEY UPDATE: another reply's stand-down texts to this volunteer
# take FOR KEY SHARE through message.volunteer_id; FOR UPDATE would deadlock them.
# Plain columns on the driver connection (``SessionQuery``), not mapped objects: it
# is every reply's first statement, and the ORM's loading of a volunteer and their
# alerts cost more CPU than the read (docs/benchmarks.md, sixth pass).
_SENDER_AND_RECENT_ALERTS = SessionQuery(
    select(
        _volunteer.c.id,
        _volunteer.c.language,
        _volunteer.c.consent_requested_at,
        _volunteer.c.consent_at,
        *_RECENT_ALERT_COLUMNS,
    )
    .select_from(
        _volunteer.outerjoin(
            _alert,
            and_(
                _alert.c.volunteer_id == _volunteer.c.id,
                _alert.c.created_at >= bindparam("since"),
            ),
        ).outerjoin(_incident, _incident.c.id == _alert.c.incident_id)
    )
    .where(_volunteer.c.phone == bindparam("phone"), _volunteer.c.status != "erased")
    .order_by(_alert.c.created_at.desc())
    .with_for_update(of=_volunteer, key_share=True)
)
# Loaded as the ORM loads with populate_existing (``SessionQuery.load``): a session may
# hold the alert (the voice path's); the decision must be taken on the row as locked,
# not on the object as the session kept it.
# With the incident's tally (taken roles, pending detours): the reply decides by it,
# under the incident's lock, without counting again.
_LOCK_ALERT = SessionQuery(
    select(_alert, *TALLY_OF_ALERTS_INCIDENT)
    .where(_alert.c.id == bindparam("alert_id"))
    .with_for_update(of=_alert, key_share=True)
)
_SET_PAUSED_UNTIL = (
    update(_volunteer)
    .where(_volunteer.c.id == bindparam("volunteer_id"))
    .values(paused_until=bindparam("until"))
)
_SET_CONSENT = (
    update(_volunteer)
    .where(_volunteer.c.id == bindparam("volunteer_id"))
    .values(consent_at=bindparam("now"))
)


class ReplySender(Protocol):
    """What a reply reads of its sender: a :class:`Sender` row, or a mapped
    ``Volunteer`` (the voice path's)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def language(self) -> str: ...
    @property
    def consent_requested_at(self) -> datetime | None: ...
    @property
    def consent_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Sender:
    """The sender of an SMS as the reply's first read gives them."""

    id: uuid.UUID
    language: str
    consent_requested_at: datetime | None
    consent_at: datetime | None


@dataclass(frozen=True, slots=True)
class RecentAlert:
    """One of the sender's recent alerts, with its incident's status: what decides
    which alert a reply is about (the change is decided on the alert locked afresh)."""

    id: uuid.UUID
    incident_id: uuid.UUID
    code: str
    response: str
    stood_down_at: datetime | None
    incident_status: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> RecentAlert:
        return cls(
            row["alert_id"],
            row["incident_id"],
            row["code"],
            row["response"],
            row["stood_down_at"],
            row["incident_status"],
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
    transactions: Transactions,
    *,
    sms: InboundSms,
    now: datetime,
    settings: Settings,
    attempts: int = REPLY_ATTEMPTS,
) -> str:
    """Store the SMS, apply it, and return the answer to send back (stored with it).

    Each attempt is one transaction of its own (``transactions``): the sender, locked,
    with their recent alerts in one read; a reply that changes nothing (from an
    unknown number, a help, about an alert that had ended) is then stored with its
    answer at once. One that may change something locks the incident and the alert
    and stores the inbound row in the statement of its change. A deadlock or
    serialization failure rolls the whole transaction back, releasing every lock the
    attempt took, and the reply is tried again in a new one, up to ``attempts``
    times: no savepoint, and nothing of a failed attempt is left in the session. A
    reply that still cannot be applied is stored with, and answered by, a text asking
    the volunteer to reply again: never an error that Twilio would not retry and
    nobody would see.

    When its MessageSid was stored before (a retried webhook, or the same one arriving
    twice at once, whose insert waits for the other's transaction), the attempt's
    transaction is rolled back and the stored answer is returned.
    """
    reply = parse_reply(sms.body)
    try:
        for attempt in range(1, attempts + 1):
            try:
                async with transactions() as session:
                    return await _apply_inbound(
                        session, sms=sms, reply=reply, now=now, settings=settings
                    )
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None)
                if sqlstate not in RETRYABLE_SQLSTATES:
                    raise
                log.warning("reply not applied; retrying", sqlstate=sqlstate, attempt=attempt)
        answer = texts.reply_not_recorded_text()
        async with transactions() as session:
            await _store_inbound(session, _InboundRow(sms, now, None), Outcome(answer))
        return answer
    except _AlreadyStored:
        async with transactions() as session:
            stored = (
                await session.execute(_STORED_ANSWER, {"sid": sms.message_sid[:64]})
            ).scalar_one_or_none()
        return stored or texts.help_text("sv")


async def _apply_inbound(
    session: AsyncSession, *, sms: InboundSms, reply: Reply, now: datetime, settings: Settings
) -> str:
    """One attempt at the reply, in ``session``'s transaction: the answer, stored with it."""
    volunteer, recent = await _sender_and_recent_alerts(session, sms=sms, now=now)
    inbound = _InboundRow(sms, now, volunteer.id if volunteer else None)
    if volunteer is None:
        outcome = Outcome(texts.unknown_sender_text())
    else:
        outcome = _unchanging_answer(volunteer, reply, recent) or await apply_reply(
            session,
            volunteer=volunteer,
            reply=reply,
            now=now,
            settings=settings,
            recent=recent,
            inbound=inbound,
        )
    if not inbound.stored:
        await _store_inbound(session, inbound, outcome)
    return outcome.answer


async def _sender_and_recent_alerts(
    session: AsyncSession, *, sms: InboundSms, now: datetime
) -> tuple[Sender | None, list[RecentAlert]]:
    """The sender (``None``: unknown), locked, and their recent alerts, in one read."""
    rows = await _SENDER_AND_RECENT_ALERTS.fetch(
        session, {"phone": sms.from_phone, "since": now - RECENT_ALERT_WINDOW}
    )
    if not rows:
        return None, []
    first = rows[0]
    sender = Sender(
        first["id"], first["language"], first["consent_requested_at"], first["consent_at"]
    )
    return sender, [RecentAlert.of(row) for row in rows if row["alert_id"] is not None]


class _AlreadyStored(Exception):
    """This MessageSid was stored before: the attempt's transaction is rolled back."""


@dataclass
class _InboundRow:
    """The inbound SMS as it will be stored, by the statement of the reply's change
    when it has one (``stored`` then), else on its own at the end."""

    sms: InboundSms
    now: datetime
    sender_id: uuid.UUID | None
    stored: bool = False

    def parameters(self, outcome: Outcome) -> dict[str, Any]:
        """The parameters of ``_INSERT_INBOUND``, stored with ``outcome``."""
        return {
            "new_id": uuid.uuid4(),
            "new_phone": self.sms.from_phone[:20],
            "new_body": self.sms.body[:BODY_STORE_LIMIT],
            "new_sid": self.sms.message_sid[:64],
            "new_provider": self.sms.provider,
            "new_now": self.now,
            "answer": outcome.answer,
            "answer_volunteer_id": self.sender_id,
            "answer_alert_id": outcome.alert_id,
            "answer_incident_id": outcome.incident_id,
        }

    def inserted(self, row_id: uuid.UUID | None) -> None:
        """What the insert returned: the new row's id, or none when it was stored before."""
        if row_id is None:
            raise _AlreadyStored
        self.stored = True


async def _store_inbound(session: AsyncSession, inbound: _InboundRow, outcome: Outcome) -> None:
    """The inbound row with its answer; :class:`_AlreadyStored` when it exists."""
    rows = await _STORE_INBOUND.fetch(session, inbound.parameters(outcome))
    inbound.inserted(rows[0]["id"] if rows else None)


@dataclass(frozen=True)
class Outcome:
    answer: str
    alert_id: uuid.UUID | None = None
    incident_id: uuid.UUID | None = None


async def apply_reply(
    session: AsyncSession,
    *,
    volunteer: ReplySender,
    reply: Reply,
    now: datetime,
    settings: Settings,
    recent: list[RecentAlert] | None = None,
    inbound: _InboundRow | None = None,
) -> Outcome:
    """What ``reply`` from ``volunteer`` (locked by the caller) does; ``recent``: their
    alerts of the last ``RECENT_ALERT_WINDOW`` with each incident's status, newest
    first, when the caller read them with the sender (read here otherwise).

    ``inbound``: the SMS that brought the reply, stored with its answer by the
    statement that changes the alert, when the reply changes one (``stored`` then).
    """
    language = volunteer.language
    if recent is None and reply.intent in ANSWERING:
        rows = await _RECENT_ALERTS.fetch(
            session, {"volunteer_id": volunteer.id, "since": now - RECENT_ALERT_WINDOW}
        )
        recent = [RecentAlert.of(row) for row in rows]
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
        await session.execute(_SET_PAUSED_UNTIL, {"volunteer_id": volunteer.id, "until": until})
        await release_open_alerts(
            session, volunteer_id=volunteer.id, reason="pause", now=now, settings=settings
        )
        return Outcome(texts.paused_text(language, until=until, zone=settings.zone))
    if reply.intent == "resume":
        await session.execute(_SET_PAUSED_UNTIL, {"volunteer_id": volunteer.id, "until": None})
        return Outcome(texts.resumed_text(language))
    if _consent_asked(volunteer, reply):
        # Asked for consent (CSV import); never alerted before it, so YES is about that.
        await session.execute(_SET_CONSENT, {"volunteer_id": volunteer.id, "now": now})
        return Outcome(texts.consent_recorded_text(language))
    target = _target_alert(volunteer=volunteer, reply=reply, recent=recent or [])
    assert not isinstance(target, str)  # _unchanging_answer answered those
    return await _answer_alert(
        session,
        volunteer=volunteer,
        reply=reply,
        now=now,
        settings=settings,
        target=target,
        inbound=inbound,
    )


ANSWERING: tuple[Intent, ...] = ("accept", "decline", "withdraw", "arrived")
"""The intents that answer an alert (the rest act on the volunteer, or are help)."""


def _consent_asked(volunteer: ReplySender, reply: Reply) -> bool:
    return bool(
        reply.intent == "accept" and volunteer.consent_requested_at and not volunteer.consent_at
    )


def _unchanging_answer(
    volunteer: ReplySender, reply: Reply, recent: list[RecentAlert]
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
    if not _open_row(target, target.incident_status):
        return Outcome(texts.alert_ended_text(language), target.id, target.incident_id)
    return None


async def _answer_alert(
    session: AsyncSession,
    *,
    volunteer: ReplySender,
    reply: Reply,
    now: datetime,
    settings: Settings,
    target: RecentAlert,
    inbound: _InboundRow | None,
) -> Outcome:
    language = volunteer.language
    incident, alert, tally = await _lock_incident_and_alert(
        session, incident_id=target.incident_id, alert_id=target.id
    )
    if incident is None or not _open_row(alert, incident.status):
        return Outcome(texts.alert_ended_text(language), alert.id, alert.incident_id)
    if _needs_code(incident=incident, alert=alert, tally=tally, reply=reply, settings=settings):
        answer = texts.confirm_with_code_text(language, code=alert.code)
        return Outcome(answer, alert.id, incident.id)
    change = _Answering(session, incident, alert, tally, language, now, settings, inbound)
    respond = {"accept": _accept, "decline": _decline, "withdraw": _withdraw, "arrived": _arrive}
    return Outcome(await respond[reply.intent](change), alert.id, incident.id)


async def _lock_incident_and_alert(
    session: AsyncSession, *, incident_id: uuid.UUID, alert_id: uuid.UUID
) -> tuple[Incident | None, Alert, Tally]:
    """The incident, then the alert, locked in that order (the lock order), with the
    incident's tally as read under both locks."""
    incident = await lock_incident(session, incident_id)
    ((alert, locked),) = await _LOCK_ALERT.load(session, Alert, {"alert_id": alert_id})
    return incident, alert, tally_of(locked)


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
    *, volunteer: ReplySender, reply: Reply, recent: list[RecentAlert]
) -> RecentAlert | str:
    """The alert a reply is about, or the answer when that cannot be known."""
    language = volunteer.language
    if reply.code is not None:
        coded = [alert for alert in recent if alert.code == reply.code]
        if not coded:
            return texts.help_text(language)
        open_coded = [alert for alert in coded if _open_row(alert, alert.incident_status)]
        return (open_coded or coded)[0]
    wanted = ("accepted",) if reply.intent in ("withdraw", "arrived") else ("pending", "accepted")
    candidates = [
        alert
        for alert in recent
        if _open_row(alert, alert.incident_status) and alert.response in wanted
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
        return recent[0]
    return texts.help_text(language)


def _open_row(alert: Alert | RecentAlert, incident_status: str) -> bool:
    return (
        incident_status == "alerting"
        and alert.response in ("pending", "accepted")
        and alert.stood_down_at is None
    )


@dataclass(frozen=True)
class _Answering:
    """What every change of a response works on: the locked incident and alert, the
    incident's tally as read with the alert, and the inbound SMS to store with the
    change (``None``: a change that no SMS brought, or one stored on its own)."""

    session: AsyncSession
    incident: Incident
    alert: Alert
    tally: Tally
    lang: str
    now: datetime
    settings: Settings
    inbound: _InboundRow | None = None


async def _respond(change: _Answering, response: str, *, answer: str | None, **data: Any) -> None:
    """Set the response and record the ``alert.<response>`` event with ``data``; the
    inbound SMS, if any, is stored with ``answer`` in the same statement."""
    alert = change.alert
    alert.response = response
    alert.responded_at = change.now
    alert.updated_at = change.now
    await _store_with_event(
        change,
        Event(
            type=f"alert.{response}",
            data={"alert_id": str(alert.id), **data, "at": change.now.isoformat()},
        ),
        answer=answer,
    )


async def _store_with_event(change: _Answering, event: Event, *, answer: str | None) -> None:
    """Write what was changed on the locked alert, the event recording it and the inbound
    SMS with its ``answer`` in one statement (``recorded_events`` with the change and
    the SMS's insert as CTEs), where a flush, the event and the insert were three.
    Without an ``answer`` (a change no SMS asked for: STOP's, PAUSE's, an erasure's)
    the SMS, if any, is stored on its own afterwards.

    Only the changed columns are written (one statement per set of them, built once),
    and the object is then marked as stored, before the statement, so that the
    session's autoflush does not write it a second time. Should the statement fail,
    the reply's transaction is rolled back, which expires the object. An SMS whose
    MessageSid was stored before is not inserted, and the attempt is rolled back
    (``_AlreadyStored``).
    """
    alert, inbound = change.alert, change.inbound
    state = inspect(alert)
    changed = tuple(attr.key for attr in state.attrs if attr.history.has_changes())
    values = {f"new_{name}": getattr(alert, name) for name in changed}
    # Marked as stored as a flush marks it: every value committed and the object no
    # longer flagged modified in the session's identity map. ``set_committed_value``
    # per attribute left the flag set, and the commit ran a whole flush that found
    # nothing to write (0.13-0.24 ms of a reply's CPU, measured in process).
    state._commit_all(state.dict, change.session.sync_session.identity_map)
    storing = (
        (inbound, Outcome(answer, alert.id, alert.incident_id))
        if inbound is not None and not inbound.stored and answer is not None
        else None
    )
    (row,) = await _alert_change_with_event(changed, stores_inbound=storing is not None).fetch(
        change.session,
        {
            **event_parameters(alert.incident_id, [event], prefix="event_"),
            "changed_alert": alert.id,
            **values,
            **(storing[0].parameters(storing[1]) if storing is not None else {}),
        },
    )
    if storing is not None:
        storing[0].inserted(row["stored_id"])


@cache
def _alert_change_with_event(columns: tuple[str, ...], *, stores_inbound: bool) -> SessionQuery:
    """``UPDATE alert SET <columns>`` with an incident's events (and the inbound SMS's
    ``_INSERT_INBOUND``, whose new id is ``stored_id``: null when its MessageSid was
    stored before), one statement per column set (a reply writes one of a handful),
    built once, on the driver connection (``SessionQuery``)."""
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
    statement = select(announced).select_from(inserted).add_cte(change)
    if not stores_inbound:
        return SessionQuery(statement)
    stored = _INSERT_INBOUND.cte("stored")
    return SessionQuery(
        statement.add_columns(select(stored.c.id).scalar_subquery().label("stored_id")).add_cte(
            stored
        )
    )


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
        answer = texts.not_needed_text(change.lang)
    else:
        alert.role = role
        alert.aed_id = incident.nearest_aed_id if role == "aed" else None
        alert.estimated_arrival_at = estimated_arrival(
            change.settings, route_m=route_m(alert), leaving_at=change.now
        )
        # The answer is stored with the change: built first, the alert's new role not
        # flushed by the AED's read (the change's statement writes it).
        with session.no_autoflush:
            answer = await instructions(
                session, incident=incident, alert=alert, language=change.lang
            )
    await _respond(change, "accepted", answer=answer, role=role)
    if role is not None:
        await stand_down_if_complete(
            session,
            incident=incident,
            settings=change.settings,
            now=change.now,
            tally=change.tally.answered(alert.aed_detour_m, role=role),
        )
    return answer


async def _decline(change: _Answering) -> str:
    if change.alert.response == "accepted":
        return await _withdraw(change)
    answer = texts.declined_text(change.lang)
    await _end_pending(change, reason="decline", answer=answer)
    return answer


async def _end_pending(change: _Answering, *, reason: str, answer: str | None = None) -> None:
    """The pending volunteer is not coming: declined (a NO, or ``reason`` STOP, PAUSE,
    erasure), no longer counted as pending, and with ``ALERT_BATCH`` the place goes
    to the next nearest at once. Under the incident's lock."""
    await _respond(change, "declined", answer=answer, reason=reason)
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
    answer = texts.withdrawn_text(change.lang)
    await _give_up_role(change, reason="withdraw", answer=answer)
    return answer


async def _give_up_role(change: _Answering, *, reason: str, answer: str | None = None) -> None:
    """The responder is no longer coming: the slot reopens, and when nobody is left
    pending the next nearest are alerted (with ``ALERT_BATCH``: the place goes to the
    next nearest at once). Under the incident's lock."""
    role = change.alert.role
    change.alert.role = None
    await _respond(change, "withdrawn", answer=answer, role=role, reason=reason)
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
        incident, alert, tally = await _lock_incident_and_alert(
            session, incident_id=incident_id, alert_id=alert_id
        )
        if incident is None or not _open_row(alert, incident.status):
            continue
        change = _Answering(session, incident, alert, tally, language, now, settings)
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


async def _arrive(change: _Answering) -> str:
    alert, now = change.alert, change.now
    if alert.response != "accepted" or alert.role is None:
        return texts.help_text(change.lang)
    answer = texts.arrived_text(change.lang)
    if alert.arrived_at is None:
        alert.arrived_at = now
        alert.updated_at = now
        await _store_with_event(
            change,
            Event(type="alert.arrived", data={"alert_id": str(alert.id), "at": now.isoformat()}),
            answer=answer,
        )
    return answer


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
