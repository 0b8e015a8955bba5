"""Voice calls: placing them (Twilio Programmable Voice) and what a call says and hears.

A call is an outbound ``message`` row on the ``voice`` channel (``app/core/outbox.py``),
so it has the SMS's guarantees: queued in the transaction that decided it, claimed
with ``FOR UPDATE SKIP LOCKED`` only while its alert is still open and before its
deadline, forward-only delivery state, retries with backoff. :class:`CallWorker` is
the SMS pipeline (``dispatch.worker.DispatchWorker``) on that channel with its own
slots (``CALL_CONCURRENCY``) and rate (``CALLS_PER_SECOND``; Twilio places about one
call per second per account), so a call never takes a slot from an alert SMS.

What the volunteer hears (TwiML from :func:`answer_call`): what and how far, then
"press 1 if you can go now, 2 if you cannot", repeated once on silence; the address
only after a 1, so a voicemail never records where the patient is. A machine
(answering-machine detection) is hung up on at once: no accept, the SMS stays valid.
Whether the alert is still open is read again when the TwiML is fetched and, under
the incident's lock, when a key arrives. A 1 is the SMS YES path itself
(``dispatch.responses.apply_reply`` with the alert's own code: a key pressed in a call
we placed to the volunteer's number is their authenticated answer), and the
instructions also go by SMS; a 2 is a NO.

A ``voice`` volunteer also hears a stand-down or a cancellation by call: the call
says the SMS's words twice (``app.core.outbox.queue_sms`` queues it beside the text).

Every webhook of a call answers once per (CallSid, step): the TwiML is stored in
``call_step`` in the transaction that acted, and a retry gets it back unchanged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from app.core import texts
from app.core.models import Aed, Alert, CallStep, Incident, Message, Volunteer
from app.core.outbox import OutboundSms, queue_sms
from app.core.settings import Settings
from dispatch.delivery import advance_message
from dispatch.events import record_event
from dispatch.gateway import (
    TWILIO_API_BASE,
    SendFailure,
    SendRequest,
    SendResult,
    SmsGateway,
    TwilioHttpClient,
    create_with_twilio,
)
from dispatch.replies import Intent, Reply
from dispatch.responses import apply_reply
from dispatch.roles import lock_incident
from dispatch.worker import ClaimedSms, DispatchWorker

CALLS_PLACED = Counter("responder_calls_placed_total", "Calls accepted by Twilio", ["purpose"])
CALL_FAILURES = Counter(
    "responder_call_failures_total", "Failed attempts to place a call", ["purpose", "kind"]
)

STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
KEY_TIMEOUT_S = 6
"""Seconds a prompt waits for a key before it is said again (once), then goodbye."""
KEY_ATTEMPTS = 3
"""Prompts after a wrong key before the call says goodbye."""
TIME_LIMIT_S = 180
"""No call of ours needs longer; a line left open is hung up by Twilio."""

CALL_STATUS_RANK = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "no-answer": 4,
    "failed": 4,
    "canceled": 4,
}
CALL_DELIVERY = {
    "queued": "sent",
    "initiated": "sent",
    "ringing": "sent",
    "in-progress": "sent",
    # Answered by a person is decided when the TwiML is fetched (answered_by);
    # a call that ends without that never reached anyone who could press a key.
    "completed": "undelivered",
    "busy": "undelivered",
    "no-answer": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
"""A call's status onto the message's delivery state (forward-only, ``dispatch.delivery``)."""
ALERT_CALLS = ("alert", "alert_call")


def _webhook_url(public_base_url: str, step: str, message_id: uuid.UUID, **query: Any) -> str:
    url = f"{public_base_url}/webhooks/twilio/voice/{step}?message_id={message_id}"
    return url + "".join(f"&{name}={value}" for name, value in query.items())


class TwilioVoiceGateway:
    """Places calls with ``calls.create_async``; the worker sees it as a gateway."""

    name = "twilio_voice"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        public_base_url: str,
        from_number: str,
        ring_timeout_s: int,
        api_base: str = TWILIO_API_BASE,
        timeout_s: float = 10.0,
    ) -> None:
        self._http = TwilioHttpClient(api_base)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._public_base_url = public_base_url.rstrip("/")
        self._from = from_number
        self._ring_timeout_s = ring_timeout_s
        self._timeout_s = timeout_s

    async def send(self, request: SendRequest) -> SendResult:
        base = self._public_base_url
        call = await create_with_twilio(
            self._client.calls.create_async(
                to=request.to,
                from_=self._from,
                url=_webhook_url(base, "answer", request.message_id),
                method="POST",
                status_callback=_webhook_url(base, "status", request.message_id),
                status_callback_event=list(STATUS_EVENTS),
                status_callback_method="POST",
                timeout=self._ring_timeout_s,
                machine_detection="Enable",
                time_limit=TIME_LIMIT_S,
            ),
            timeout_s=self._timeout_s,
        )
        return SendResult(provider_sid=str(call.sid), status=str(call.status or "queued"))

    async def close(self) -> None:
        await self._http.close()


def create_voice_gateway(settings: Settings) -> SmsGateway | None:
    """Twilio's voice gateway when a voice-capable number is configured, else none."""
    if not settings.voice_enabled or settings.twilio_auth_token is None:
        return None
    return TwilioVoiceGateway(
        account_sid=settings.twilio_account_sid or "",
        auth_token=settings.twilio_auth_token.get_secret_value(),
        public_base_url=settings.public_base_url,
        from_number=settings.twilio_voice_from or "",
        ring_timeout_s=settings.call_ring_timeout_s,
        api_base=settings.twilio_api_base,
        timeout_s=settings.send_timeout_s,
    )


class CallWorker(DispatchWorker):
    """The outbox's ``voice`` rows, with their own slots and rate.

    The rate is a token bucket per process (``CALLS_PER_SECOND``, a burst of as many
    as a second allows): a call is claimed only when a token is there, so its lease
    starts when it is placed. Twilio queues calls beyond an account's rate rather
    than refusing them, so several workers together exceed it only by delay. The
    timed transitions are the SMS worker's (one pass per process is enough).
    """

    channel = "voice"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slots = self.settings.call_concurrency
        self.alert_reserved_slots = (
            max(1, int(self.slots * self.settings.send_alert_reserve)) if self.slots > 1 else 0
        )
        self.bulk_slots = 0
        self._rate = self.settings.calls_per_second
        self._burst = max(1.0, self._rate)
        self._tokens = self._burst
        self._refilled_at: float | None = None

    def claimable(self, free_slots: int) -> int:
        now = asyncio.get_running_loop().time()
        if self._refilled_at is not None:
            elapsed = now - self._refilled_at
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._refilled_at = now
        return max(0, min(free_slots, int(self._tokens)))

    async def fill_slots(self) -> list[asyncio.Task[SendFailure | None]]:
        started = await super().fill_slots()
        self._tokens -= len(started)
        return started

    def counted(self, sms: ClaimedSms) -> bool:
        return False

    async def _send_one(self, sms: ClaimedSms) -> SendFailure | None:
        failure = await super()._send_one(sms)
        if not sms.exercise:
            if failure is None:
                CALLS_PLACED.labels(sms.purpose).inc()
            else:
                CALL_FAILURES.labels(sms.purpose, failure.kind).inc()
        return failure

    async def _idle_for(self) -> float:
        idle = await super()._idle_for()
        if self._tokens < 1:
            idle = min(idle, max(0.05, (1 - self._tokens) / self._rate))
        return idle

    async def run_timers(self) -> None:
        return None


# The webhooks. Each runs in the request's transaction and returns TwiML.


@dataclass(frozen=True)
class CallWebhook:
    """What every webhook of a call carries: whose call (our message id) and Twilio's id."""

    message_id: uuid.UUID
    call_sid: str
    step: str


@dataclass(frozen=True)
class _Call:
    message: Message
    volunteer: Volunteer
    language: str


def _twiml_saying(language: str, *texts_said: str) -> str:
    response = VoiceResponse()
    for said in texts_said:
        response.say(said, language=texts.SAY_LANGUAGE.get(language, "sv-SE"))
    response.hangup()
    return str(response)


def _hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def _ask_for_key(*, call: _Call, prompt: str, attempt: int, settings: Settings) -> str:
    """The prompt in a ``<Gather>``, once more on silence, then goodbye."""
    response = VoiceResponse()
    action = _webhook_url(settings.public_base_url, "digits", call.message.id, attempt=attempt)
    voice = texts.SAY_LANGUAGE.get(call.language, "sv-SE")
    for said in (prompt, texts.call_keys_speech(call.language)):
        gather = response.gather(
            input="dtmf", num_digits=1, timeout=KEY_TIMEOUT_S, action=action, method="POST"
        )
        gather.say(said, language=voice)
    response.say(texts.call_no_key_speech(call.language), language=voice)
    response.hangup()
    return str(response)


async def _once(
    session: AsyncSession, *, webhook: CallWebhook, now: datetime, act: Callable[[], Awaitable[str]]
) -> str:
    """Run ``act`` once per (CallSid, step); a retry gets the TwiML stored the first time.

    The step's row is inserted first: a retry racing the first delivery waits on it
    and then finds it (as an inbound SMS's ``MessageSid`` does).
    """
    inserted = (
        await session.execute(
            pg_insert(CallStep)
            .values(
                call_sid=webhook.call_sid[:64],
                step=webhook.step,
                # NULL rather than a foreign-key error for a call we no longer hold.
                message_id=select(Message.id)
                .where(Message.id == webhook.message_id)
                .scalar_subquery(),
                twiml="",
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[CallStep.call_sid, CallStep.step])
            .returning(CallStep.call_sid)
        )
    ).scalar_one_or_none()
    if inserted is None:
        stored: str = (
            await session.execute(
                select(CallStep.twiml).where(
                    CallStep.call_sid == webhook.call_sid[:64], CallStep.step == webhook.step
                )
            )
        ).scalar_one()
        return stored
    twiml = await act()
    await session.execute(
        update(CallStep)
        .where(CallStep.call_sid == webhook.call_sid[:64], CallStep.step == webhook.step)
        .values(twiml=twiml)
    )
    return twiml


async def _load_call(session: AsyncSession, message_id: uuid.UUID) -> _Call | None:
    row = (
        await session.execute(
            select(Message, Volunteer)
            .join(Volunteer, Volunteer.id == Message.volunteer_id)
            .where(Message.id == message_id, Message.channel == "voice")
        )
    ).one_or_none()
    if row is None:
        return None
    message, volunteer = row
    return _Call(message, volunteer, volunteer.language)


async def _open_alert(
    session: AsyncSession, alert_id: uuid.UUID | None
) -> tuple[Alert, Incident] | None:
    """The call's alert and its incident while the alert is open: the incident alerting,
    the volunteer not stood down, and unanswered or holding a role."""
    if alert_id is None:
        return None
    row = (
        await session.execute(
            select(Alert, Incident)
            .join(Incident, Incident.id == Alert.incident_id)
            .where(Alert.id == alert_id)
        )
    ).one_or_none()
    if row is None:
        return None
    alert, incident = row
    if not _holds_open(alert, incident) and not (
        incident.status == "alerting" and alert.response == "pending"
    ):
        return None
    return alert, incident


def _holds_open(alert: Alert, incident: Incident | None) -> bool:
    """A responder still on their way: accepted, a role, not stood down, incident alerting."""
    return (
        incident is not None
        and incident.status == "alerting"
        and alert.response == "accepted"
        and alert.role is not None
        and alert.stood_down_at is None
    )


async def answer_call(
    session: AsyncSession,
    *,
    webhook: CallWebhook,
    answered_by: str | None,
    now: datetime,
    settings: Settings,
) -> str:
    """The TwiML of an answered call: the prompt, "this alert has ended", or a hang-up."""

    async def act() -> str:
        call = await _load_call(session, webhook.message_id)
        if call is None:
            return _hang_up()
        machine = answered_by is not None and answered_by.startswith(("machine", "fax"))
        await _note_call(session, call=call, answered_by=answered_by, now=now)
        if call.message.purpose not in ALERT_CALLS:
            # A stand-down or a cancellation, said twice: short, and harmless on a voicemail.
            await _advance(session, call=call, status="delivered", now=now, sid=webhook.call_sid)
            return _twiml_saying(call.language, *([call.message.body or ""] * 2))
        if machine:
            await _advance(
                session,
                call=call,
                status="undelivered",
                now=now,
                sid=webhook.call_sid,
                reason="answering machine",
            )
            return _hang_up()
        await _advance(session, call=call, status="delivered", now=now, sid=webhook.call_sid)
        opened = await _open_alert(session, call.message.alert_id)
        if opened is None:
            return _twiml_saying(call.language, texts.call_ended_speech(call.language))
        alert, incident = opened
        if alert.response == "accepted":
            # Answered by SMS while the phone rang: where to go, not the question again.
            return await _where_to_go(
                session, incident=incident, alert=alert, language=call.language
            )
        prompt = texts.call_alert_speech(
            call.language,
            kind=incident.kind,
            distance_m=alert.distance_m,
            exercise=incident.exercise,
        )
        return _ask_for_key(call=call, prompt=prompt, attempt=1, settings=settings)

    return await _once(session, webhook=webhook, now=now, act=act)


async def press_key(
    session: AsyncSession,
    *,
    webhook: CallWebhook,
    digits: str,
    attempt: int,
    now: datetime,
    settings: Settings,
) -> str:
    """A key: 1 is YES (the SMS path, with the alert's code), 2 is NO, others ask again."""

    async def act() -> str:
        call = await _load_call(session, webhook.message_id)
        if call is None or call.message.alert_id is None:
            return _hang_up()
        language = call.language
        alert = await session.get(Alert, call.message.alert_id)
        if alert is None:
            return _hang_up()
        if digits not in ("1", "2"):
            if attempt >= KEY_ATTEMPTS:
                return _twiml_saying(language, texts.call_no_key_speech(language))
            return _ask_for_key(
                call=call,
                prompt=texts.call_keys_speech(language),
                attempt=attempt + 1,
                settings=settings,
            )
        intent: Intent = "accept" if digits == "1" else "decline"
        # The sender row is locked as an inbound SMS locks it (dispatch.responses).
        volunteer = (
            await session.execute(
                select(Volunteer)
                .where(Volunteer.id == call.volunteer.id)
                .with_for_update(key_share=True)
            )
        ).scalar_one()
        # Then the incident and the alert, in the order apply_reply takes them: what the
        # key changed is read against the alert as it stood under the lock (an SMS YES
        # may have come first).
        incident = await lock_incident(session, alert.incident_id)
        await session.refresh(alert, with_for_update={"key_share": True})
        before = (alert.response, alert.responded_at)
        outcome = await apply_reply(
            session,
            volunteer=volunteer,
            reply=Reply(intent, code=alert.code),
            now=now,
            settings=settings,
        )
        answered_now = (alert.response, alert.responded_at) != before
        if intent == "decline":
            if answered_now and alert.response in ("declined", "withdrawn"):
                return _twiml_saying(language, texts.call_declined_speech(language))
            return _twiml_saying(language, texts.call_ended_speech(language))
        if not _holds_open(alert, incident):
            if answered_now and alert.response == "accepted":
                return _twiml_saying(language, texts.call_not_needed_speech(language))
            return _twiml_saying(language, texts.call_ended_speech(language))
        assert incident is not None
        if not answered_now:
            # Accepted by SMS meanwhile: the instructions went with that answer.
            return await _where_to_go(session, incident=incident, alert=alert, language=language)
        await queue_sms(
            session,
            [
                OutboundSms(
                    phone=volunteer.phone or "",
                    body=outcome.answer,
                    purpose="instructions",
                    volunteer_id=volunteer.id,
                    incident_id=incident.id,
                    alert_id=alert.id,
                )
            ],
            now=now,
        )
        return await _where_to_go(session, incident=incident, alert=alert, language=language)

    return await _once(session, webhook=webhook, now=now, act=act)


async def _where_to_go(
    session: AsyncSession, *, incident: Incident, alert: Alert, language: str
) -> str:
    """A responder's role and where to go, said twice: the TwiML that ends the call."""
    aed = await session.get(Aed, alert.aed_id) if alert.aed_id is not None else None
    said = texts.call_accepted_speech(
        language,
        role=alert.role or "cpr",
        address=incident.address,
        access_notes=incident.access_notes,
        aed_address=aed.address if aed else None,
        aed_description=aed.description if aed else None,
    )
    return _twiml_saying(language, said, said)


async def call_status(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    call_sid: str,
    status: str,
    answered_by: str | None,
    now: datetime,
) -> None:
    """A status callback: the call's status and its delivery only move forward."""
    call = await _load_call(session, message_id)
    if call is None or status not in CALL_STATUS_RANK:
        return
    await _note_call(session, call=call, answered_by=answered_by, now=now, status=status)
    await _advance(session, call=call, status=CALL_DELIVERY[status], now=now, sid=call_sid)


async def _advance(
    session: AsyncSession,
    *,
    call: _Call,
    status: str,
    now: datetime,
    sid: str,
    reason: str | None = None,
) -> None:
    await advance_message(
        session,
        message_id=call.message.id,
        status=status,
        now=now,
        provider_sid=sid[:64],
        failure_reason=reason,
    )


async def _note_call(
    session: AsyncSession,
    *,
    call: _Call,
    answered_by: str | None,
    now: datetime,
    status: str | None = None,
) -> None:
    """Store what Twilio said about the call; an alert call's new status is an event.

    The incident is locked first, the order every writer of an incident keeps.
    """
    message = call.message
    if message.incident_id is not None:
        await lock_incident(session, message.incident_id)
    values: dict[str, Any] = {"updated_at": now}
    if answered_by:
        values["answered_by"] = answered_by[:30]
    rank = case(CALL_STATUS_RANK, value=Message.call_status, else_=-1)
    moved = False
    if status is not None:
        moved = (
            await session.execute(
                update(Message)
                .where(Message.id == message.id, rank < CALL_STATUS_RANK[status])
                .values(call_status=status, **values)
                .returning(Message.id)
            )
        ).scalar_one_or_none() is not None
    if not moved and answered_by:
        await session.execute(update(Message).where(Message.id == message.id).values(values))
    if moved and message.alert_id is not None and message.incident_id is not None:
        await record_event(
            session,
            incident_id=message.incident_id,
            type="alert.call",
            data={
                "alert_id": str(message.alert_id),
                "call_status": status,
                "answered_by": answered_by,
                "at": now.isoformat(),
            },
        )
