"""The dispatch worker: sends the outbound queue and runs the timed transitions.

Any number of workers can run against one database. Sending is a continuous
pipeline of ``SEND_CONCURRENCY`` slots: whenever a slot is free (a send finished,
a notification arrived, a retry fell due) the worker claims as many due messages
as it has free slots, in one short transaction with ``FOR UPDATE SKIP LOCKED``,
and starts sending each at once, outside any transaction; each outcome is recorded
in its own short transaction as soon as it is known. So:

- a claimed message never waits for a slot, and its lease (``SEND_TIMEOUT_S`` +
  20 s) starts when its request is sent: no other worker re-claims a message that
  this one is about to send;
- the claim reads in priority order (``message.priority``: alerts first, then
  instructions, updates, stand-downs, cancellations and sign-up codes, then the
  rest), and bulk non-urgent traffic (renewal reminders) holds at most
  ``SEND_BULK_SHARE`` of the slots and goes out only inside ``REMINDER_HOURS``;
  ``SEND_ALERT_RESERVE`` of the slots (at least one) are kept for alert SMS, so a
  new alert is handed to the provider without waiting for any other send in flight;
- an alert is claimed only while its alert is still open (incident alerting,
  response pending, not stood down), checked in the claim statement itself, and
  a text that follows an alert (stand-down, cancellation) is not sent while that
  alert's own request is in flight, so it never overtakes it.

It is woken by ``LISTEN responder_outbox`` (``pg_notify`` in the transaction that
queued the SMS) on a dedicated connection that is re-opened when lost; polling
every few seconds is only the fallback. Timers (abandoning what is no longer worth
sending, no_reply, automatic close, purges, reminders) run in a task of their own,
with the injected clock, so a slow timer pass never delays a claim.

With a secondary provider, an alert SMS or an urgent follow-up (instructions,
update, stand-down, cancellation, code) that the primary refuses, or fails
``SMS_PRIMARY_ATTEMPTS`` times, is handed over to it (``message.provider``), and
new alerts go straight to it while the primary rests (``PRIMARY_REST``);
docs/dispatch.md "Two SMS providers".

Duplicate window: a message is re-sent only when the worker that claimed it did
not record an outcome before its lease ran out (the worker died, or lost the
database, between handing the SMS to the provider and committing the result), or
when the provider's answer never came (timeout) and no status callback for that
message arrived before the retry. See docs/dispatch.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Select, Table, Update, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.core.clock import Clock
from app.core.db import SessionQuery, autocommit_sessions, database_unreachable, unit_of_work
from app.core.models import Alert, Incident, Message
from app.core.outbox import (
    ALERT_PRIORITY,
    BULK_PRIORITY,
    OUTBOX_CHANNEL,
    PURPOSE_PRIORITY,
    URGENT_PRIORITY,
    Lease,
)
from app.core.schedule import within_hours
from app.core.settings import Settings
from dispatch.delivery import (
    PROVIDER_STATUS,
    AcceptedSms,
    advance_message,
    note_gateway_result,
    record_sms_sent,
)
from dispatch.events import listen
from dispatch.gateway import SendFailure, SendRequest, SendResult, SmsGateway
from dispatch.responses import carrier_opt_out

log = structlog.get_logger(__name__)

SMS_SENT = Counter("responder_sms_sent_total", "SMS accepted by the provider", ["purpose"])
SMS_FAILED = Counter(
    "responder_sms_send_failures_total", "Failed SMS send attempts", ["purpose", "kind"]
)
SMS_ABANDONED = Counter(
    "responder_sms_abandoned_total", "Queued SMS given up without being sent", ["reason"]
)
SMS_HANDED_OVER = Counter(
    "responder_sms_handed_over_total",
    "Alert SMS and urgent follow-ups the secondary provider took over from the primary",
    ["kind"],
)
OUTBOX_DEPTH = Gauge(
    "responder_outbox_depth", "Outbound SMS queued or being sent, by purpose", ["purpose"]
)
OLDEST_DUE_ALERT_AGE = Gauge(
    "responder_outbox_oldest_due_alert_age_seconds",
    "Age of the oldest alert SMS that is due and not yet handed to the provider (0: none)",
)
ALERT_ACCEPTED_AFTER = Histogram(
    "responder_alert_sms_accepted_seconds",
    "From the incident's transaction queueing an alert SMS to the provider accepting it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

POLL_INTERVAL_S = 2.0
TIMER_INTERVAL_S = 5.0
LEASE_MARGIN = timedelta(seconds=20)
NON_ALERT_LIFETIME = timedelta(hours=1)
"""How long a non-alert SMS (stand-down, thanks) without a deadline of its own is tried."""
UNKNOWN_OUTCOME_GRACE = timedelta(seconds=5)
"""After a timed-out send, how long a status callback has to reconcile it first."""
MIN_VALIDITY = timedelta(seconds=1)
"""An alert with less than this left before its deadline is given up, not sent."""
PRIMARY_REST = timedelta(seconds=30)
"""After the primary lost an alert SMS to the secondary, how long this worker sends new
alert SMS straight to the secondary before it tries the primary again: during an
outage each new alert would otherwise wait out ``SMS_PRIMARY_ATTEMPTS`` failed tries."""
HEALTH_SUCCESS_EVERY_S = 1.0
"""A run of successful sends refreshes the shared health row at most this often."""
LEASED_START_AFTER_S = 0.02
"""A burst claimed in a POST's transaction starts when that request's task ends (its
response sent), and at the latest this long after the commit (``start_leased``)."""
RECORD_GATHER_S = 0.1
"""How long an accepted SMS waits for the rest of its burst before it is recorded.

The SMS a worker's provider accepted are recorded together, in one transaction,
once no other request of this worker is waiting for the provider's answer, or this
long after the first of them was accepted: recorded one by one (seven round trips
for an alert SMS, under the incident's lock; four for a stand-down), the records of
an incident's alerts shared the event loop with the requests still being built and
held back the last alert of the burst, and the stand-downs a reply causes were most
of the worker's CPU per reply."""
"""A run of successful sends refreshes the shared health row at most this often."""

# Table columns, not ORM attributes, in what the claim's UPDATE is built from: an
# ORM-enabled UPDATE rebuilds its cache key on every execution (SQLAlchemy 2.1), and
# for the claim that cost more CPU than the rest of a send.
_message: Table = Message.__table__  # type: ignore[assignment]
_alert: Table = Alert.__table__  # type: ignore[assignment]
_incident: Table = Incident.__table__  # type: ignore[assignment]

ALERT_STILL_WANTED = and_(
    _incident.c.status == "alerting",
    _alert.c.response == "pending",
    _alert.c.stood_down_at.is_(None),
)
"""An alert SMS (or call) is worth sending only while this holds for its alert."""
ALERT_PURPOSES = ("alert", "alert_call")
"""The alert itself, by SMS or call, and the follow-up call to a silent volunteer."""
ANSWERED = ("accepted", "declined", "withdrawn")


@dataclass(frozen=True)
class ClaimedSms:
    id: uuid.UUID
    alert_id: uuid.UUID | None
    purpose: str
    priority: int
    phone: str
    body: str
    attempts: int
    deadline_at: datetime
    queued_at: datetime
    exercise: bool = False
    """Of an exercise incident: sent like any other, counted in no statistic."""
    provider: str | None = None
    """The gateway to send it through: the row's own (set when the secondary took it
    over), else its alert SMS's, so a stand-down follows its alert; None: the primary."""

    @property
    def bulk(self) -> bool:
        return self.priority >= BULK_PRIORITY

    @property
    def fails_over(self) -> bool:
        """The alert SMS, or what someone needs now (instructions, an update, a stand-down,
        a cancellation, a code): worth the secondary when the primary cannot send it.
        A stand-down or cancellation kept at a failing primary never reaches a
        volunteer who has the alert."""
        return self.purpose == "alert" or self.priority == URGENT_PRIORITY


def backoff(attempts: int) -> timedelta:
    """Exponential from 0.5 s, capped at 15 s, with jitter so workers do not align."""
    base = min(15.0, 0.5 * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


async def abandon_unsendable(session: AsyncSession, *, now: datetime) -> int:
    """Fail queued messages whose deadline passed, and alerts that are no longer needed.

    The claim never takes either (it checks both itself); this pass makes their end
    visible. An alert that reaches a phone after its deadline is worse than none, so
    it is abandoned as ``failed`` (and the alert's delivery with it). An alert whose
    incident stopped alerting, or whose volunteer already answered or was stood
    down, is not sent again: still queued, it is dropped as ``not_needed`` (the
    alert's delivery untouched); sent with an unknown outcome and since answered,
    it is recorded ``sent`` (the reply proves it arrived); otherwise it waits for
    a status callback until its deadline. Messages leased by a worker (a request in
    flight) are left to that worker.
    """
    waiting = or_(Message.status == "queued", Message.next_attempt_at <= now)
    # Not locked here: advance_message locks each alert SMS's incident before the SMS
    # (the order replies and cancels take them in), incidents in id order.
    expired = (
        await session.execute(
            select(Message.id, func.coalesce(Incident.exercise, False))
            .outerjoin(Incident, Incident.id == Message.incident_id)
            .where(
                Message.direction == "out",
                Message.status.in_(("queued", "sending")),
                waiting,
                Message.deadline_at <= now,
            )
            .order_by(Message.incident_id, Message.id)
        )
    ).all()
    count = 0
    for message_id, exercise in expired:
        if await advance_message(
            session, message_id=message_id, status="failed", now=now, failure_reason="deadline"
        ):
            if not exercise:
                SMS_ABANDONED.labels("deadline").inc()
            count += 1
    not_needed = (
        await session.execute(
            select(Message.id, Message.status, Alert.response, Incident.exercise)
            .join(Alert, Alert.id == Message.alert_id)
            .join(Incident, Incident.id == Alert.incident_id)
            .where(
                Message.direction == "out",
                Message.purpose.in_(ALERT_PURPOSES),
                Message.status.in_(("queued", "sending")),
                waiting,
                ~ALERT_STILL_WANTED,
            )
            .with_for_update(of=Message, skip_locked=True)
        )
    ).all()
    for message_id, status, response, exercise in not_needed:
        if status == "queued":
            await session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status="failed", failure_reason="not_needed", updated_at=now)
            )
            if not exercise:
                SMS_ABANDONED.labels("not_needed").inc()
            count += 1
        elif response in ANSWERED:
            # An unknown outcome that the volunteer's own reply settled: it arrived.
            await advance_message(session, message_id=message_id, status="sent", now=now)
    return count


_alert_sms = _message.alias("alert_sms")

# The claim runs on every wake of every worker (after each finished send), so its
# statements are built once with bound parameters: constructing and cache-keying
# these expressions per call cost several times more CPU than executing them.
_ALERT_IN_FLIGHT = (
    select(_alert_sms.c.id)
    .where(
        _alert_sms.c.alert_id == _message.c.alert_id,
        _alert_sms.c.purpose == "alert",
        _alert_sms.c.status == "sending",
        _alert_sms.c.claimed_by.is_not(None),
        _alert_sms.c.next_attempt_at > bindparam("now"),
    )
    .exists()
)
"""The message's alert SMS is leased by a worker: its request may be on the wire."""


TIERS = ("alert", "urgent", "bulk")
"""The claim's three reads, in order: alert SMS and calls; instructions, updates,
stand-downs, cancellations, codes and the rest; bulk (renewal reminders)."""


def _tier(tier: str) -> ColumnElement[bool]:
    priority = _message.c.priority
    if tier == "alert":
        return priority == ALERT_PRIORITY
    if tier == "urgent":
        return and_(priority > ALERT_PRIORITY, priority < BULK_PRIORITY)
    return priority == BULK_PRIORITY


def _claimable(tier: str) -> Select[tuple[uuid.UUID]]:
    """Due messages of ``tier`` in claim order, locked (``SKIP LOCKED``): alerts only
    while wanted. Parameters: ``now``, ``valid_after`` (``now`` + ``MIN_VALIDITY``),
    ``claim_channel``, ``limit``.

    ``queued`` and due, or ``sending`` whose lease ran out (the worker died) or whose
    unknown outcome had its grace; never past (or within a second of) the deadline;
    a text about an alert (stand-down, cancellation) not while that alert's own
    request is in flight.
    """
    message = _message.c
    return (
        select(message.id)
        .select_from(
            _message.outerjoin(
                _alert,
                and_(_alert.c.id == message.alert_id, message.purpose.in_(ALERT_PURPOSES)),
            ).outerjoin(_incident, _incident.c.id == _alert.c.incident_id)
        )
        .where(
            message.direction == "out",
            message.status.in_(("queued", "sending")),
            message.next_attempt_at <= bindparam("now"),
            message.channel == bindparam("claim_channel"),
            _tier(tier),
            or_(message.deadline_at.is_(None), message.deadline_at > bindparam("valid_after")),
            or_(message.purpose.not_in(ALERT_PURPOSES), ALERT_STILL_WANTED),
            or_(message.purpose == "alert", message.alert_id.is_(None), ~_ALERT_IN_FLIGHT),
        )
        .order_by(message.priority, message.next_attempt_at)
        .limit(bindparam("limit"))
        .with_for_update(of=_message, skip_locked=True)
    )


def _claim_statement(tier: str) -> Update:
    """Claim ``tier``'s due rows (:func:`_claimable`) for ``worker_id`` until ``lease_until``."""
    message = _message.c
    return (
        update(_message)
        .where(message.id.in_(_claimable(tier).scalar_subquery()))
        .values(
            status="sending",
            claimed_by=bindparam("worker_id"),
            attempts=message.attempts + 1,
            # Still ``sending``: the last attempt's outcome is unknown (timed out, or
            # its worker died with the request perhaps on the wire).
            may_have_reached=message.may_have_reached | (message.status == "sending"),
            next_attempt_at=bindparam("lease_until"),
            updated_at=bindparam("now"),
        )
        .returning(
            message.id,
            message.alert_id,
            message.purpose,
            message.priority,
            message.phone,
            message.body,
            message.attempts,
            message.deadline_at,
            message.created_at,
            select(_incident.c.exercise)
            .where(_incident.c.id == message.incident_id)
            .scalar_subquery()
            .label("exercise"),
            func.coalesce(
                message.provider,
                select(_alert_sms.c.provider)
                .where(
                    _alert_sms.c.alert_id == message.alert_id,
                    _alert_sms.c.purpose == "alert",
                    _alert_sms.c.direction == "out",
                )
                .limit(1)
                .scalar_subquery(),
            ).label("provider"),
        )
    )


def _claim_alerts_statement() -> Select[Any]:
    """The alert tier's claim, with each claimed alert SMS's alert marked ``sending``.

    One statement: the alert's mark is a data-modifying CTE beside the claim (its
    ``SKIP LOCKED``: an alert held by a reply, which may be standing this incident's
    alerts down, must neither delay the claim nor deadlock with it; its delivery
    status then moves on from queued when the send's outcome is recorded).
    """
    claimed = _claim_statement("alert").cte("claimed")
    marked = (
        update(_alert)
        .where(
            _alert.c.id.in_(
                select(_alert.c.id)
                .where(
                    _alert.c.id.in_(select(claimed.c.alert_id).where(claimed.c.purpose == "alert")),
                    _alert.c.delivery_status == "queued",
                )
                .with_for_update(skip_locked=True, key_share=True)
                .scalar_subquery()
            )
        )
        .values(delivery_status="sending", delivery_updated_at=bindparam("now"))
        .cte("marked")
    )
    return select(*claimed.c).add_cte(marked)


_CLAIM: dict[str, SessionQuery] = {
    "alert": SessionQuery(_claim_alerts_statement()),
    **{tier: SessionQuery(_claim_statement(tier)) for tier in TIERS if tier != "alert"},
}
"""On the driver connection of the claim's transaction (``SessionQuery``): a claim is
its transaction's first statement and runs on every wake of every worker, so
SQLAlchemy's execution layer was a share of each SMS's CPU (docs/benchmarks.md)."""


@dataclass(frozen=True)
class Claim:
    claimed: list[ClaimedSms]
    drained: bool
    """Every tier it read had fewer claimable rows than it asked for, and no tier was
    left unread for want of room: a slot freed later finds nothing more to claim
    (bulk outside ``REMINDER_HOURS`` aside: time, not a slot, makes that claimable)."""


async def claim_tiers(
    session: AsyncSession,
    *,
    now: datetime,
    worker_id: str,
    limit: int,
    lease: timedelta,
    other_limit: int | None = None,
    bulk_limit: int = 0,
    channel: str = "sms",
) -> Claim:
    """Claim up to ``limit`` due messages: alerts first; only when there are none, at
    most ``other_limit`` others (default: as many as fit), of which at most
    ``bulk_limit`` bulk ones.

    Each tier is read only when room is left, in priority order; after a claim of
    alerts the others wait for the next claim (a finished send wakes it), so that a
    burst's own claim is one statement. Each claimed row
    becomes ``sending`` with a lease of ``lease`` from ``now``. Only rows of
    ``channel``: calls (``voice``) have a worker of their own (``dispatch.voice``).
    Returns what it claimed and whether it drained what a free slot could take.
    """
    parameters = {
        "now": now,
        "valid_after": now + MIN_VALIDITY,
        "claim_channel": channel,
        "worker_id": worker_id,
        "lease_until": now + lease,
    }
    claim = functools.partial(_claim, session, parameters)
    claimed = await claim(limit=limit, tier="alert")
    if claimed:
        # An incident's burst goes out on its own: the other tiers are read on the
        # next wake (the first of these sends to finish), not before the burst.
        return Claim(claimed, drained=False)
    others = limit if other_limit is None else other_limit
    room = min(others, limit)
    if room > 0:
        claimed = await claim(limit=room, tier="urgent")
        others -= len(claimed)
        drained = len(claimed) < room
    else:
        drained = False
    room = min(bulk_limit, others, limit - len(claimed))
    if room > 0:
        bulk = await claim(limit=room, tier="bulk")
        claimed += bulk
        drained = drained and len(bulk) < room
    return Claim(claimed, drained)


async def _claim(
    session: AsyncSession, parameters: dict[str, object], *, limit: int, tier: str
) -> list[ClaimedSms]:
    rows = await _CLAIM[tier].fetch(session, {**parameters, "limit": limit})
    claimed = [
        ClaimedSms(
            id=row["id"],
            alert_id=row["alert_id"],
            purpose=row["purpose"],
            priority=row["priority"],
            phone=row["phone"] or "",
            body=row["body"] or "",
            attempts=row["attempts"],
            deadline_at=row["deadline_at"] or row["created_at"] + NON_ALERT_LIFETIME,
            queued_at=row["created_at"],
            exercise=bool(row["exercise"]),
            provider=row["provider"],
        )
        for row in rows
    ]
    # The UPDATE returns rows in no particular order; send in the claim's order.
    claimed.sort(key=lambda sms: sms.priority)
    return claimed


async def record_success(
    session: AsyncSession,
    *,
    sms: ClaimedSms,
    result: SendResult,
    now: datetime,
    provider: str | None = None,
) -> None:
    """``provider``: the gateway that took it, which its receipts and replies map back to."""
    status = PROVIDER_STATUS.get(result.status, "sent")
    steps = ("sent", "delivered") if status == "delivered" else (status,)
    for step in steps:
        await advance_message(
            session,
            message_id=sms.id,
            status=step,
            now=now,
            provider_sid=result.provider_sid,
            provider=provider,
            purpose=sms.purpose,
        )


async def record_failure(
    session: AsyncSession,
    *,
    sms: ClaimedSms,
    failure: SendFailure,
    now: datetime,
    settings: Settings,
    holder: str | None = None,
    handed_over: bool = False,
) -> None:
    """Retry with backoff until the deadline, or give up now when retrying cannot help.

    Opted out at the carrier: the volunteer's open alerts end as after a STOP
    (:func:`dispatch.responses.carrier_opt_out`).

    A request that certainly did not reach the provider goes back to ``queued``; one
    whose outcome is unknown stays ``sending`` (it may be at the provider, which is
    what a stand-down decides by), unleased, until its grace for a callback is over,
    and is marked ``may_have_reached`` for good.
    ``holder``: the gateway that makes the next try (recorded, so that any worker
    makes it there and its receipts map back). ``handed_over``: the holder just took
    it over, so it tries at once (after the grace when the outcome is unknown): its
    own backoff starts only if it fails too.
    """
    if failure.kind == "opted_out":
        await carrier_opt_out(session, message_id=sms.id, now=now, settings=settings)
    retry_at = now if handed_over else now + backoff(sms.attempts)
    if failure.kind == "unknown":
        retry_at = max(retry_at, now + UNKNOWN_OUTCOME_GRACE)
        # Kept whatever comes next (given up at the deadline, a certain failure of the
        # retry): the volunteer may have this SMS, and is told when it no longer holds.
        await session.execute(
            update(Message).where(Message.id == sms.id).values(may_have_reached=True)
        )
    if failure.kind in ("opted_out", "rejected") or retry_at >= sms.deadline_at:
        reason = failure.reason
        if failure.kind not in ("opted_out", "rejected"):
            reason = f"deadline after {sms.attempts} attempts: {reason}"
        await advance_message(
            session,
            message_id=sms.id,
            status="failed",
            now=now,
            error_code=failure.code,
            failure_reason=reason,
        )
        return
    values: dict[str, object] = {
        "status": "sending" if failure.kind == "unknown" else "queued",
        "claimed_by": None,
        "next_attempt_at": retry_at,
        "error_code": failure.code,
        "failure_reason": failure.reason[:200],
        "updated_at": now,
    }
    if holder is not None:
        values["provider"] = holder
    # Only if no callback reconciled it meanwhile (still ours, sending).
    await session.execute(
        update(Message).where(Message.id == sms.id, Message.status == "sending").values(values)
    )


async def measure_outbox(session: AsyncSession, *, now: datetime) -> None:
    """Set the queue gauges from the database (the queue is shared by every worker).

    A due alert is queued and due, or a send whose lease or grace ran out: an
    alert that some worker should be sending now.
    """
    rows = await session.execute(
        select(Message.purpose, func.count())
        .where(
            Message.direction == "out",
            Message.channel == "sms",
            Message.status.in_(("queued", "sending")),
        )
        .group_by(Message.purpose)
    )
    depth: dict[str, int] = dict(rows.all())
    for purpose in set(PURPOSE_PRIORITY) | set(depth):
        OUTBOX_DEPTH.labels(purpose).set(depth.get(purpose, 0))
    oldest = (
        await session.execute(
            select(func.min(Message.created_at)).where(
                Message.direction == "out",
                Message.purpose == "alert",
                Message.channel == "sms",
                Message.status.in_(("queued", "sending")),
                Message.next_attempt_at <= now,
            )
        )
    ).scalar_one_or_none()
    OLDEST_DUE_ALERT_AGE.set((now - oldest).total_seconds() if oldest is not None else 0)


def _pass_failed(event: str, error: BaseException) -> None:
    """A lost database is expected and retried: one line. Anything else: the traceback."""
    if database_unreachable(error):
        log.warning(event, reason="database unreachable", error=type(error).__name__)
    else:
        log.error(event, exc_info=error)


_NEXT_DUE = SessionQuery(
    select(func.min(_message.c.next_attempt_at).label("due")).where(
        _message.c.direction == "out",
        _message.c.status.in_(("queued", "sending")),
        _message.c.next_attempt_at > bindparam("now"),
    )
)
"""When the next retry or lease falls due (the worker's idle wait, on every wake), on
the driver connection."""


@dataclass
class _AcceptedBatch:
    """Accepted SMS waiting to be recorded together (:data:`RECORD_GATHER_S`)."""

    sends: list[AcceptedSms]
    recorded: asyncio.Future[None]
    timer: asyncio.TimerHandle | None = None


TimerPass = Callable[[async_sessionmaker[AsyncSession], datetime], Awaitable[None]]


class DispatchWorker:
    """One sending pipeline per process; see the module docstring for the guarantees."""

    channel = "sms"
    """The outbox rows this pipeline sends (calls: ``dispatch.voice.CallWorker``)."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        gateway: SmsGateway,
        settings: Settings,
        clock: Clock,
        secondary: SmsGateway | None = None,
        database_url: str | None = None,
        worker_id: str | None = None,
        timers: TimerPass | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        timer_interval_s: float = TIMER_INTERVAL_S,
    ) -> None:
        self.session_factory = session_factory
        # Each claim statement is atomic by itself (alerts: one statement per burst).
        self._claims = autocommit_sessions(session_factory)
        self.gateway = gateway
        self.secondary = secondary
        self.gateways = {gateway.name: gateway}
        if secondary is not None:
            self.gateways[secondary.name] = secondary
        self.settings = settings
        self.clock = clock
        self.database_url = database_url
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.timers = timers
        self.poll_interval_s = poll_interval_s
        self.timer_interval_s = timer_interval_s
        self.lease = timedelta(seconds=settings.send_timeout_s) + LEASE_MARGIN
        self.slots = settings.send_concurrency
        self.bulk_slots = max(1, int(settings.send_concurrency * settings.send_bulk_share))
        # Slots that only alert SMS may take: a new alert never waits for stand-downs,
        # updates or reminders already on the wire to a slow provider.
        self.alert_reserved_slots = (
            max(1, int(settings.send_concurrency * settings.send_alert_reserve))
            if settings.send_concurrency > 1
            else 0
        )
        self._sending: dict[asyncio.Task[SendFailure | None], ClaimedSms] = {}
        self._reserved = 0
        """Slots held back for bursts being queued in a transaction (:meth:`reserve`)."""
        self._requests_out = 0
        """Requests of this worker waiting for the provider's answer."""
        self._accepted: _AcceptedBatch | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._last_health_success: dict[str, float] = {}
        self._primary_rests_until: datetime | None = None
        self._wake = asyncio.Event()
        self._drained = False
        """The last claim left nothing that a slot freed since could take."""
        self._stopping = asyncio.Event()
        self.listening = threading.Event()
        """Set once LISTEN is active (for tests and readiness, from any thread)."""

    def wake(self) -> None:
        self._wake.set()

    @property
    def claim_wanted(self) -> bool:
        """Whether the loop claims again on its next turn (it was woken since its last)."""
        return self._wake.is_set()

    async def fill_slots(self) -> list[asyncio.Task[SendFailure | None]]:
        """Claim as many due messages as there are free slots and start sending each."""
        self._drained = False
        free = self.claimable(self._free_slots())
        if free <= 0:
            return []
        now = self.clock.now()
        bulk_limit = 0
        if within_hours(self.settings.reminder_hours, now=now, zone=self.settings.zone):
            bulk_limit = self.bulk_slots - sum(1 for sms in self._sending.values() if sms.bulk)
        others_in_flight = sum(
            1 for sms in self._sending.values() if sms.priority != ALERT_PRIORITY
        )
        other_limit = max(0, self.slots - self.alert_reserved_slots - others_in_flight)
        async with unit_of_work(self._claims) as session:
            claim = await claim_tiers(
                session,
                now=now,
                worker_id=self.worker_id,
                limit=free,
                lease=self.lease,
                other_limit=other_limit,
                bulk_limit=bulk_limit,
                channel=self.channel,
            )
        self._drained = claim.drained
        return [self._start(sms) for sms in claim.claimed]

    def _start(
        self, sms: ClaimedSms, *, after: asyncio.Event | None = None
    ) -> asyncio.Task[SendFailure | None]:
        sending = self._send_one(sms) if after is None else self._send_after(after, sms)
        task = asyncio.create_task(sending, name=f"send-{sms.id}")
        self._sending[task] = sms
        task.add_done_callback(self._finished)
        return task

    def _free_slots(self) -> int:
        return self.slots - len(self._sending) - self._reserved

    def reserve(self, burst: int) -> Lease | None:
        """Hold back up to ``burst`` free slots for alert SMS that a transaction of this
        process is about to queue (the incident POST), claimed as they are queued.

        The transaction stores them ``sending`` under this worker's lease and, once it
        committed, :meth:`start_leased` starts their requests: no wake-up through the
        database and no claim between the commit and the burst (5-15 ms of wall time
        on the 2-core machine, docs/benchmarks.md). None while the worker stops, or
        when no slot is free: then the SMS are queued and claimed as any other.
        """
        room = min(burst, self._free_slots())
        if room <= 0 or self._stopping.is_set():
            return None
        self._reserved += room
        return Lease(
            holder=self.worker_id,
            until=self.clock.now() + self.lease,
            room=room,
            channel=self.channel,
        )

    def start_leased(self, lease: Lease, committed: bool) -> list[asyncio.Task[SendFailure | None]]:
        """The transaction that held ``lease`` ended: if it committed, send what the
        lease took once the task that committed it has finished (the POST's response
        is out), at the latest :data:`LEASED_START_AFTER_S` after the commit; either
        way the slots held back are free again.

        The sends' own start (building and writing 30 requests, 9-12 ms of the loop)
        would otherwise run at the POST's first wait after its commit, before its
        response: the answer would wait for the burst, and the burst gain nothing.
        The bound keeps a task that goes on after its commit from holding them.
        Called synchronously at the end of the transaction
        (``app.core.db.when_transaction_ends``). Should the process die before these
        requests go out, the rows wait for their lease like any claimed row.
        """
        self._reserved -= lease.room
        if not committed:
            return []
        go = asyncio.Event()
        committing = asyncio.current_task()
        if committing is not None:
            committing.add_done_callback(lambda _: go.set())
        asyncio.get_running_loop().call_later(LEASED_START_AFTER_S, go.set)
        return [
            self._start(
                ClaimedSms(
                    id=leased.id,
                    alert_id=leased.sms.alert_id,
                    purpose=leased.sms.purpose,
                    priority=leased.priority,
                    phone=leased.sms.phone,
                    body=leased.sms.body,
                    attempts=1,
                    deadline_at=leased.sms.deadline_at or leased.queued_at + NON_ALERT_LIFETIME,
                    queued_at=leased.queued_at,
                    exercise=leased.exercise,
                ),
                after=go,
            )
            for leased in lease.taken
        ]

    def claimable(self, free_slots: int) -> int:
        """How many messages to claim now, for this many free slots (a call worker's rate)."""
        return free_slots

    def counted(self, sms: ClaimedSms) -> bool:
        """Whether a send counts in the SMS metrics: not an exercise's (a call worker
        counts none: :class:`dispatch.voice.CallWorker` has metrics of its own)."""
        return not sms.exercise

    def _finished(self, task: asyncio.Task[SendFailure | None]) -> None:
        """A slot is free: claim again, unless nothing can have become claimable.

        That is when the last claim drained the queue and this send went out as it
        should and was not an alert SMS: a claim and the idle query after every one of
        an incident's stand-downs found nothing. After an alert SMS a follow-up
        (stand-down, cancellation) may be waiting for its request to end, after a
        failure the retry's time is new, after bulk its share frees up.

        A send whose outcome could not be recorded (the database went away) stays
        ``sending`` until its lease runs out: the duplicate window.
        """
        sms = self._sending.pop(task, None)
        failed = task.cancelled() or task.exception() is not None or task.result() is not None
        if not task.cancelled() and (error := task.exception()) is not None:
            _pass_failed("sms outcome not recorded", error)
        if failed or sms is None or not self._drained or sms.purpose == "alert" or sms.bulk:
            self.wake()

    async def send_due(self) -> int:
        """Fill the free slots once and wait for those sends; how many were accepted.

        One deterministic step for tests and tools; :meth:`run` never waits like this.
        """
        outcomes = await asyncio.gather(*await self.fill_slots())
        return sum(1 for outcome in outcomes if outcome is None)

    async def _send_after(self, go: asyncio.Event, sms: ClaimedSms) -> SendFailure | None:
        await go.wait()
        return await self._send_one(sms)

    async def _send_one(self, sms: ClaimedSms) -> SendFailure | None:
        validity = None
        if sms.purpose == "alert":
            left = sms.deadline_at - self.clock.now()
            if left < MIN_VALIDITY:
                failure = SendFailure("rejected", "deadline: too late to send")
                await self._record_failure(sms, failure)
                if self.counted(sms):
                    SMS_ABANDONED.labels("deadline").inc()
                return failure
            validity = int(left.total_seconds())
        request = SendRequest(
            message_id=sms.id,
            alert_id=sms.alert_id,
            to=sms.phone,
            body=sms.body,
            validity_s=validity,
        )
        gateway = self._gateway_for(sms)
        try:
            result = await self._request(gateway, request)
        except SendFailure as failure:
            self._flush_if_none_out()
            if self.counted(sms):
                SMS_FAILED.labels(sms.purpose, failure.kind).inc()
            failover_to = self._failover_to(sms, gateway, failure)
            if failover_to is not None:
                self._primary_rests_until = self.clock.now() + PRIMARY_REST
                if self.counted(sms):
                    SMS_HANDED_OVER.labels(failure.kind).inc()
            log.warning(
                "sms send failed",
                message_id=str(sms.id),
                gateway=gateway.name,
                kind=failure.kind,
                reason=failure,
                failover_to=failover_to,
            )
            await self._record_failure(
                sms,
                failure,
                holder=failover_to or (gateway.name if self.secondary else None),
                handed_over=failover_to is not None,
            )
            await self._note_health(gateway, failure)
            return failure
        accepted_at = self.clock.now()
        if gateway is self.gateway:
            self._primary_rests_until = None
        if self.counted(sms):
            SMS_SENT.labels(sms.purpose).inc()
        if sms.purpose == "alert" and self.counted(sms):
            ALERT_ACCEPTED_AFTER.observe((accepted_at - sms.queued_at).total_seconds())
        if PROVIDER_STATUS.get(result.status, "sent") == "sent":
            await self._record_with_burst(
                AcceptedSms(
                    message_id=sms.id,
                    provider_sid=result.provider_sid,
                    provider=gateway.name,
                    at=accepted_at,
                    purpose=sms.purpose,
                )
            )
        else:
            self._flush_if_none_out()
            async with unit_of_work(self.session_factory) as session:
                await record_success(
                    session,
                    sms=sms,
                    result=result,
                    now=accepted_at,
                    provider=gateway.name,
                )
        await self._note_health(gateway, None)
        return None

    async def _request(self, gateway: SmsGateway, request: SendRequest) -> SendResult:
        """The provider's answer; counts the requests out (:data:`RECORD_GATHER_S`)."""
        self._requests_out += 1
        try:
            return await gateway.send(request)
        finally:
            self._requests_out -= 1

    async def _record_with_burst(self, accepted: AcceptedSms) -> None:
        """Record an accepted SMS with the others of its burst; returns once recorded.

        Joins the batch waiting for the requests still out (flushed by the last
        of them to come back, or :data:`RECORD_GATHER_S` after the batch began); a
        failed record fails every send of the batch, as one failed record fails one
        (the SMS stays ``sending`` until its lease runs out: the duplicate window).
        """
        batch = self._accepted
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._accepted = _AcceptedBatch(sends=[], recorded=loop.create_future())
            batch.timer = loop.call_later(RECORD_GATHER_S, self._flush_soon, batch)
        batch.sends.append(accepted)
        self._flush_if_none_out()
        await asyncio.shield(batch.recorded)

    def _flush_if_none_out(self) -> None:
        """The last request out came back: record what the batch gathered."""
        if self._requests_out == 0 and self._accepted is not None:
            self._flush_soon(self._accepted)

    def _flush_soon(self, batch: _AcceptedBatch) -> None:
        """Record ``batch`` (once) in a task of its own: no send waits for another's record."""
        if self._accepted is not batch:
            return
        self._accepted = None
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.create_task(self._flush(batch), name="record-accepted-sms")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: _AcceptedBatch) -> None:
        try:
            async with unit_of_work(self.session_factory) as session:
                await record_sms_sent(session, batch.sends)
        except asyncio.CancelledError:
            batch.recorded.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - each send of the batch reports it
            batch.recorded.set_exception(error)
        else:
            batch.recorded.set_result(None)

    async def _record_failure(
        self,
        sms: ClaimedSms,
        failure: SendFailure,
        *,
        holder: str | None = None,
        handed_over: bool = False,
    ) -> None:
        async with unit_of_work(self.session_factory) as session:
            await record_failure(
                session,
                sms=sms,
                failure=failure,
                now=self.clock.now(),
                settings=self.settings,
                holder=holder,
                handed_over=handed_over,
            )

    def _gateway_for(self, sms: ClaimedSms) -> SmsGateway:
        """The message's own provider; a new alert SMS while the primary rests: the secondary.

        A provider this process does not have (configured in another): the primary.
        """
        if sms.provider is not None:
            return self.gateways.get(sms.provider, self.gateway)
        resting = self._primary_rests_until is not None and (
            self.clock.now() < self._primary_rests_until
        )
        if self.secondary is not None and sms.purpose == "alert" and resting:
            return self.secondary
        return self.gateway

    def _failover_to(
        self, sms: ClaimedSms, gateway: SmsGateway, failure: SendFailure
    ) -> str | None:
        """The secondary, when it should take this SMS (an alert or an urgent follow-up,
        :attr:`ClaimedSms.fails_over`) over from the primary.

        At once when the primary refuses us (every send would fail); after
        ``SMS_PRIMARY_ATTEMPTS`` tries that failed for its availability (5xx, 429,
        cannot connect, timed out). Never for what the recipient or the request
        decides (opted out, rejected): the secondary would be told the same, or
        should not be asked. Whether the deadline leaves time, ``record_failure``
        decides as for any retry.
        """
        if self.secondary is None or gateway is not self.gateway or not sms.fails_over:
            return None
        if failure.kind == "refused" or (
            failure.kind in ("retry", "unknown")
            and sms.attempts >= self.settings.sms_primary_attempts
        ):
            return self.secondary.name
        return None

    async def _note_health(self, gateway: SmsGateway, failure: SendFailure | None) -> None:
        """Keep the shared health rows current without one write per successful send."""
        if failure is not None and failure.kind == "opted_out":
            return
        loop = asyncio.get_running_loop()
        last_success = self._last_health_success.get(gateway.name, float("-inf"))
        if failure is None:
            if loop.time() - last_success < HEALTH_SUCCESS_EVERY_S:
                return
            self._last_health_success[gateway.name] = loop.time()
        else:
            self._last_health_success[gateway.name] = float("-inf")
        async with unit_of_work(self.session_factory) as session:
            await note_gateway_result(
                session,
                gateway=gateway.name,
                now=self.clock.now(),
                ok=failure is None,
                refused=failure is not None and failure.kind == "refused",
                error=failure.reason if failure is not None else None,
            )

    async def run_timers(self) -> None:
        """Abandon what is no longer worth sending, the timed transitions, the gauges."""
        now = self.clock.now()
        async with unit_of_work(self.session_factory) as session:
            await abandon_unsendable(session, now=now)
        if self.timers is not None:
            await self.timers(self.session_factory, now)
        async with self.session_factory() as session:
            await measure_outbox(session, now=now)

    async def run(self) -> None:
        """Until :meth:`stop`: fill free slots whenever woken; timers beside it."""
        listener = asyncio.create_task(self._listen(), name="outbox-listener")
        timers = asyncio.create_task(self._run_timers_forever(), name="dispatch-timers")
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    await self.fill_slots()
                except Exception as error:  # noqa: BLE001 - the loop must survive a lost database
                    _pass_failed("dispatch worker claim failed", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), await self._idle_for())
        finally:
            for task in (listener, timers):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Sends in flight finish and record their outcome: a message left
            # ``sending`` would wait for its lease and might go out twice.
            # (A burst handed over meanwhile by a committing POST included.)
            while self._sending:
                await asyncio.wait(list(self._sending))

    async def _run_timers_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_timers()
            except Exception as error:  # noqa: BLE001 - the loop must survive a lost database
                _pass_failed("dispatch timer pass failed", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.timer_interval_s)

    async def _idle_for(self) -> float:
        """Until the next retry or lease falls due (so backoff is honoured), at most the poll.

        With every slot busy, only a finished send (which wakes the loop) frees one.
        Rows already due but not claimable (bulk outside its hours or share, a
        stand-down behind its alert) become claimable on a wake, not with time.
        """
        if self._free_slots() <= 0:
            return self.poll_interval_s
        now = self.clock.now()
        try:
            # One read: no transaction around it (a BEGIN and a ROLLBACK saved per wake).
            async with self._claims() as session:
                (row,) = await _NEXT_DUE.fetch(session, {"now": now})
                due: datetime | None = row["due"]
        except Exception:  # noqa: BLE001 - the database is gone: poll
            return self.poll_interval_s
        if due is None:
            return self.poll_interval_s
        seconds = (due - now).total_seconds()
        return min(self.poll_interval_s, max(0.05, seconds))

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _listen(self) -> None:
        if self.database_url is not None:
            await listen(self.database_url, OUTBOX_CHANNEL, self._notified, self._stopping)

    def _notified(self, _payload: str) -> None:
        self.listening.set()
        self.wake()
