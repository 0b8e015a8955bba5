"""Twilio's voice webhooks: a call answered, a key pressed, the call's status.

Signed and checked exactly as the SMS webhooks (``webhooks.signed_form``: the
signature over ``PUBLIC_BASE_URL`` + path + query, 403 otherwise). Each names our
message in its query (we built the URLs when placing the call); the answer and
the keys reply with TwiML, stored per (CallSid, step) so a retry changes nothing
(``dispatch.voice``).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Response

from app.api.deps import RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.routers.webhooks import TWIML, BadWebhook, SignedForm
from dispatch.voice import KEY_ATTEMPTS, CallWebhook, answer_call, call_status, press_key

router = APIRouter(prefix="/webhooks/twilio/voice", tags=["webhooks"])

TWIML_RESPONSES = {
    200: {"content": {TWIML: {}}, "description": "What the call says next, as TwiML"},
    **error_responses(400, 403, 413, 422, 429),
}


def _call_sid(form: dict[str, str]) -> str:
    sid = form.get("CallSid", "")
    if not sid or not sid.isprintable():
        raise BadWebhook("CallSid is required")
    return sid


def _answered_by(form: dict[str, str]) -> str | None:
    value = form.get("AnsweredBy")
    return value if value and value.isprintable() else None


@router.post("/answer", response_class=Response, responses=TWIML_RESPONSES)
async def call_answered(
    form: SignedForm, session: SessionDep, runtime: RuntimeDep, message_id: uuid.UUID
) -> Response:
    """The call was answered (by a person or a machine): what it says."""
    twiml = await answer_call(
        session,
        webhook=CallWebhook(message_id, _call_sid(form), "answer"),
        answered_by=_answered_by(form),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return Response(twiml, media_type=TWIML)


@router.post("/digits", response_class=Response, responses=TWIML_RESPONSES)
async def key_pressed(
    form: SignedForm,
    session: SessionDep,
    runtime: RuntimeDep,
    message_id: uuid.UUID,
    attempt: int = Query(default=1, ge=1, le=KEY_ATTEMPTS),
) -> Response:
    """A key pressed in answer to the prompt: 1 accepts, 2 declines."""
    twiml = await press_key(
        session,
        webhook=CallWebhook(message_id, _call_sid(form), f"digits:{attempt}"),
        digits=form.get("Digits", ""),
        attempt=attempt,
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return Response(twiml, media_type=TWIML)


@router.post(
    "/status",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 403, 413, 422, 429),
)
async def call_status_changed(
    form: SignedForm, session: SessionDep, runtime: RuntimeDep, message_id: uuid.UUID
) -> Response:
    """initiated, ringing, answered (in-progress), completed, or why it ended."""
    await call_status(
        session,
        message_id=message_id,
        call_sid=_call_sid(form),
        status=form.get("CallStatus", "").lower(),
        answered_by=_answered_by(form),
        now=runtime.clock.now(),
    )
    return Response(status_code=204)
