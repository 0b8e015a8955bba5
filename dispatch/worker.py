"""The dispatch worker: sends the outbound queue and runs the timed transitions.

Any number of workers can run against one database. Each loop:

1. abandons queued messages no longer worth sending (deadline passed; for an
   alert, the incident stopped alerting or the volunteer answered / was stood down);
2. claims due messages with ``FOR UPDATE SKIP LOCKED`` and marks them ``sending``
   with a lease, in one short transaction;
3. sends them concurrently (at most ``SEND_CONCURRENCY`` in flight), outside any
   transaction;
4. records each outcome in its own short transaction as soon as it is known.

It is woken by ``LISTEN responder_outbox`` (``pg_notify`` in the transaction that
queued the SMS) on a dedicated connection that is re-opened when lost; polling
every few seconds is only the fallback. Timers (no_reply, automatic close, purges,
reminders) run from the same loop, with the injected clock.

Duplicate window: a message is re-sent only when the worker that claimed it did
not record an outcome before its lease ran out (the worker died, or lost the
database, between handing the SMS to the provider and committing the result), or
when the provider's answer never came (timeout) and no status callback for that
message arrived before the retry. See docs/dispatch.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.db import unit_of_work
from app.core.models import Alert, Incident, Message
from app.core.outbox import OUTBOX_CHANNEL
from app.core.settings import Settings
from app.registry.volunteers import opt_out
from dispatch.delivery import PROVIDER_STATUS, advance_message, note_gateway_result
from dispatch.events import listen
from dispatch.gateway import SendFailure, SendRequest, SendResult, SmsGateway

log = structlog.get_logger(__name__)

SMS_SENT = Counter("responder_sms_sent_total", "SMS accepted by the provider", ["purpose"])
SMS_FAILED = Counter(
    "responder_sms_send_failures_total", "Failed SMS send attempts", ["purpose", "kind"]
)
SMS_ABANDONED = Counter(
    "responder_sms_abandoned_total", "Queued SMS given up without being sent", ["reason"]
)

POLL_INTERVAL_S = 2.0
TIMER_INTERVAL_S = 5.0
BATCH_SIZE = 200
LEASE_MARGIN = timedelta(seconds=20)
NON_ALERT_LIFETIME = timedelta(hours=1)
"""How long a non-alert SMS (stand-down, thanks, reminder) is worth trying to send."""
UNKNOWN_OUTCOME_GRACE = timedelta(seconds=5)
"""After a timed-out send, how long a status callback has to reconcile it first."""


IncidentSteps = Callable[[async_sessionmaker[AsyncSession], datetime], Awaitable[object]]
"""Timed steps taken per incident, each in its own short transaction (strategies)."""


@dataclass(frozen=True)
class ClaimedSms:
    id: uuid.UUID
    alert_id: uuid.UUID | None
    purpose: str
    phone: str
    body: str
    attempts: int
    deadline_at: datetime


def backoff(attempts: int) -> timedelta:
    """Exponential from 0.5 s, capped at 15 s, with jitter so workers do not align."""
    base = min(15.0, 0.5 * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


async def abandon_unsendable(session: AsyncSession, *, now: datetime) -> int:
    """Fail queued messages whose deadline passed, and alerts that are no longer needed.

    An alert that reaches a phone after its deadline is worse than none, so it is
    abandoned as ``failed`` (and the alert's delivery with it). An alert whose
    incident stopped alerting, or whose volunteer already answered or was stood
    down, is dropped as ``not_needed`` and leaves the alert's delivery untouched.
    """
    expired = (
        await session.execute(
            select(Message.id)
            .where(
                Message.direction == "out",
                Message.status.in_(("queued", "sending")),
                Message.next_attempt_at <= now,
                Message.deadline_at <= now,
            )
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    count = 0
    for message_id in expired:
        await advance_message(
            session, message_id=message_id, status="failed", now=now, failure_reason="deadline"
        )
        SMS_ABANDONED.labels("deadline").inc()
        count += 1
    not_needed = (
        await session.execute(
            select(Message.id)
            .join(Alert, Alert.id == Message.alert_id)
            .join(Incident, Incident.id == Alert.incident_id)
            .where(
                Message.direction == "out",
                Message.purpose == "alert",
                Message.status == "queued",
                or_(
                    Incident.status != "alerting",
                    Alert.response != "pending",
                    Alert.stood_down_at.is_not(None),
                ),
            )
            .with_for_update(of=Message, skip_locked=True)
        )
    ).scalars()
    for message_id in not_needed:
        await session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(status="failed", failure_reason="not_needed", updated_at=now)
        )
        SMS_ABANDONED.labels("not_needed").inc()
        count += 1
    return count


async def claim_due(
    session: AsyncSession, *, now: datetime, worker_id: str, limit: int, lease: timedelta
) -> list[ClaimedSms]:
    """Claim due messages (queued and due, or sending with an expired lease)."""
    due = (
        select(Message.id)
        .where(
            Message.direction == "out",
            Message.status.in_(("queued", "sending")),
            Message.next_attempt_at <= now,
        )
        .order_by(Message.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (
        await session.execute(
            update(Message)
            .where(Message.id.in_(due.scalar_subquery()))
            .values(
                status="sending",
                claimed_by=worker_id,
                attempts=Message.attempts + 1,
                next_attempt_at=now + lease,
                updated_at=now,
            )
            .returning(
                Message.id,
                Message.alert_id,
                Message.purpose,
                Message.phone,
                Message.body,
                Message.attempts,
                Message.deadline_at,
                Message.created_at,
            )
        )
    ).all()
    claimed = []
    for row in rows:
        claimed.append(
            ClaimedSms(
                id=row.id,
                alert_id=row.alert_id,
                purpose=row.purpose,
                phone=row.phone or "",
                body=row.body or "",
                attempts=row.attempts,
                deadline_at=row.deadline_at or row.created_at + NON_ALERT_LIFETIME,
            )
        )
    alert_ids = [row.alert_id for row in rows if row.alert_id and row.purpose == "alert"]
    if alert_ids:
        # SKIP LOCKED: an alert held by a reply (which may be standing this incident's
        # alerts down) must neither delay the claim nor deadlock with it; its delivery
        # status then moves on from queued when the send's outcome is recorded.
        free = (
            select(Alert.id)
            .where(Alert.id.in_(alert_ids), Alert.delivery_status == "queued")
            .with_for_update(skip_locked=True, key_share=True)
        )
        await session.execute(
            update(Alert)
            .where(Alert.id.in_(free.scalar_subquery()))
            .values(delivery_status="sending", delivery_updated_at=now)
        )
    return claimed


async def record_success(
    session: AsyncSession, *, sms: ClaimedSms, result: SendResult, now: datetime
) -> None:
    status = PROVIDER_STATUS.get(result.status, "sent")
    if status == "delivered":
        await advance_message(
            session, message_id=sms.id, status="sent", now=now, provider_sid=result.provider_sid
        )
    await advance_message(
        session, message_id=sms.id, status=status, now=now, provider_sid=result.provider_sid
    )


async def record_failure(
    session: AsyncSession, *, sms: ClaimedSms, failure: SendFailure, now: datetime
) -> None:
    """Retry with backoff until the deadline, or give up now when retrying cannot help."""
    if failure.kind in ("opted_out", "rejected"):
        if failure.kind == "opted_out":
            volunteer_id = (
                await session.execute(select(Message.volunteer_id).where(Message.id == sms.id))
            ).scalar_one_or_none()
            if volunteer_id is not None:
                await opt_out(session, volunteer_id=volunteer_id, now=now)
        await advance_message(
            session,
            message_id=sms.id,
            status="failed",
            now=now,
            error_code=failure.code,
            failure_reason=failure.reason,
        )
        return
    delay = backoff(sms.attempts)
    if failure.kind == "unknown":
        delay = max(delay, UNKNOWN_OUTCOME_GRACE)
    retry_at = now + delay
    if retry_at >= sms.deadline_at:
        await advance_message(
            session,
            message_id=sms.id,
            status="failed",
            now=now,
            error_code=failure.code,
            failure_reason=f"deadline after {sms.attempts} attempts: {failure.reason}",
        )
        return
    # Back to queued only if no callback reconciled it meanwhile (still ours, sending).
    await session.execute(
        update(Message)
        .where(Message.id == sms.id, Message.status == "sending")
        .values(
            status="queued",
            claimed_by=None,
            next_attempt_at=retry_at,
            error_code=failure.code,
            failure_reason=failure.reason[:200],
            updated_at=now,
        )
    )


class DispatchWorker:
    """One sending loop per process; see the module docstring for the guarantees."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        gateway: SmsGateway,
        settings: Settings,
        clock: Clock,
        database_url: str | None = None,
        worker_id: str | None = None,
        timers: Callable[[AsyncSession, datetime], Awaitable[None]] | None = None,
        incident_steps: IncidentSteps | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        timer_interval_s: float = TIMER_INTERVAL_S,
    ) -> None:
        self.session_factory = session_factory
        self.gateway = gateway
        self.settings = settings
        self.clock = clock
        self.database_url = database_url
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.timers = timers
        self.incident_steps = incident_steps
        self.poll_interval_s = poll_interval_s
        self.timer_interval_s = timer_interval_s
        self.lease = timedelta(seconds=settings.send_timeout_s) + LEASE_MARGIN
        self._wake = asyncio.Event()
        self._semaphore = asyncio.Semaphore(settings.send_concurrency)
        self._stopping = asyncio.Event()
        self.listening = threading.Event()
        """Set once LISTEN is active (for tests and readiness, from any thread)."""

    def wake(self) -> None:
        self._wake.set()

    async def send_due(self) -> int:
        """One pass: abandon, claim, send concurrently, record. Returns how many were sent."""
        now = self.clock.now()
        async with unit_of_work(self.session_factory) as session:
            await abandon_unsendable(session, now=now)
            claimed = await claim_due(
                session,
                now=now,
                worker_id=self.worker_id,
                limit=min(BATCH_SIZE, self.settings.send_concurrency * 4),
                lease=self.lease,
            )
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._send_one(sms) for sms in claimed))
        await self._note_health(outcomes)
        return sum(1 for outcome in outcomes if outcome is None)

    async def _send_one(self, sms: ClaimedSms) -> SendFailure | None:
        validity = None
        if sms.purpose == "alert":
            validity = max(1, int((sms.deadline_at - self.clock.now()).total_seconds()))
        request = SendRequest(
            message_id=sms.id,
            alert_id=sms.alert_id,
            to=sms.phone,
            body=sms.body,
            validity_s=validity,
        )
        async with self._semaphore:
            try:
                result = await self.gateway.send(request)
            except SendFailure as failure:
                SMS_FAILED.labels(sms.purpose, failure.kind).inc()
                log.warning(
                    "sms send failed", message_id=str(sms.id), kind=failure.kind, reason=failure
                )
                async with unit_of_work(self.session_factory) as session:
                    await record_failure(session, sms=sms, failure=failure, now=self.clock.now())
                return failure
        SMS_SENT.labels(sms.purpose).inc()
        async with unit_of_work(self.session_factory) as session:
            await record_success(session, sms=sms, result=result, now=self.clock.now())
        return None

    async def _note_health(self, outcomes: list[SendFailure | None]) -> None:
        provider_failures = [o for o in outcomes if o is not None and o.kind != "opted_out"]
        async with unit_of_work(self.session_factory) as session:
            if any(outcome is None for outcome in outcomes) and not provider_failures:
                await note_gateway_result(
                    session, gateway=self.gateway.name, now=self.clock.now(), ok=True
                )
            for failure in provider_failures:
                await note_gateway_result(
                    session,
                    gateway=self.gateway.name,
                    now=self.clock.now(),
                    ok=False,
                    refused=failure.kind == "refused",
                    error=failure.reason,
                )

    async def run_timers(self) -> None:
        if self.timers is not None:
            async with unit_of_work(self.session_factory) as session:
                await self.timers(session, self.clock.now())
        if self.incident_steps is not None:
            await self.incident_steps(self.session_factory, self.clock.now())

    async def run(self) -> None:
        """Until :meth:`stop`: send whenever woken or every poll interval; timers between."""
        listener = asyncio.create_task(self._listen(), name="outbox-listener")
        last_timers = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    while await self.send_due():
                        pass
                    if loop.time() - last_timers >= self.timer_interval_s:
                        last_timers = loop.time()
                        await self.run_timers()
                except Exception:  # noqa: BLE001 - the loop must survive a lost database
                    log.exception("dispatch worker pass failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), await self._idle_for())
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _idle_for(self) -> float:
        """Until the earliest retry is due (so backoff is honoured), at most the poll interval."""
        try:
            async with self.session_factory() as session:
                due = (
                    await session.execute(
                        select(func.min(Message.next_attempt_at)).where(
                            Message.direction == "out",
                            Message.status.in_(("queued", "sending")),
                        )
                    )
                ).scalar_one_or_none()
        except Exception:  # noqa: BLE001 - the database is gone: poll
            return self.poll_interval_s
        if due is None:
            return self.poll_interval_s
        seconds = (due - self.clock.now()).total_seconds()
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
