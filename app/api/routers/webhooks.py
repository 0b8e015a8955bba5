"""Twilio's webhooks: inbound SMS (answered with TwiML) and delivery status callbacks.

Both check ``X-Twilio-Signature`` with the twilio package's ``RequestValidator``
against the URL Twilio was given, built from ``PUBLIC_BASE_URL`` (behind a proxy
the request's own URL would differ). No auth token configured (console gateway)
means no request can be genuine: every webhook is refused with 403.
"""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from app.api.deps import RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.ratelimit import limit_unsigned_webhook
from app.core import texts
from app.core.errors import Forbidden, PayloadTooLarge, ResponderError
from dispatch.delivery import PROVIDER_STATUS, advance_message
from dispatch.responses import InboundSms, handle_inbound_sms

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"])

WEBHOOK_MAX_BYTES = 16 * 1024
DEFAULT_LANGUAGE = "sv"
TWIML = "application/xml"


class BadWebhook(ResponderError):
    status_code = 400
    title = "Bad webhook"


async def signed_form(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    """The form parameters of a request Twilio provably sent (403 otherwise).

    Whatever is refused before its signature is proven (403, an oversized 413, a
    malformed 400) counts against the client's unsigned-webhook limit: otherwise a
    flood of big or broken bodies would never be limited.
    """
    try:
        return await _verified_form(request, runtime)
    except (Forbidden, PayloadTooLarge, BadWebhook):
        await limit_unsigned_webhook(request)
        raise


async def _verified_form(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    token = runtime.settings.twilio_auth_token
    signature = request.headers.get("x-twilio-signature")
    if token is None or not signature:
        raise Forbidden("missing or invalid X-Twilio-Signature")
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit():
        raise BadWebhook("invalid Content-Length")
    if int(declared) > WEBHOOK_MAX_BYTES:
        raise PayloadTooLarge(f"webhook body exceeds {WEBHOOK_MAX_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > WEBHOOK_MAX_BYTES:
            raise PayloadTooLarge(f"webhook body exceeds {WEBHOOK_MAX_BYTES} bytes")
    try:
        text = bytes(raw).decode("utf-8")
        params = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadWebhook("the body is not a UTF-8 form") from exc
    url = runtime.settings.public_base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not RequestValidator(token.get_secret_value()).validate(url, params, signature):
        raise Forbidden("missing or invalid X-Twilio-Signature")
    return params


def _storable(text: str) -> str:
    """The text with NUL characters as spaces: PostgreSQL text cannot hold a NUL.

    A space, not nothing, so ``YES\\x004821`` still reads as ``YES 4821``.
    """
    return text.replace("\x00", " ")


SignedForm = Annotated[dict[str, str], Depends(signed_form)]


@router.post(
    "/sms",
    response_class=Response,
    responses={
        200: {"content": {TWIML: {}}, "description": "The answer to the volunteer, as TwiML"},
        **error_responses(400, 403, 413, 429),
    },
)
async def inbound_sms(form: SignedForm, session: SessionDep, runtime: RuntimeDep) -> Response:
    """A volunteer's SMS: applied once per MessageSid, answered as TwiML."""
    message_sid = form.get("MessageSid") or form.get("SmsSid")
    sender = form.get("From")
    if not message_sid or not sender:
        raise BadWebhook("MessageSid and From are required")
    if not (message_sid.isprintable() and sender.isprintable()):
        # Signed, yet no provider id or number looks like this: nobody to look up and
        # no id to store it under. The help answers it; nothing is stored or changed.
        answer = texts.help_text(DEFAULT_LANGUAGE)
    else:
        answer = await handle_inbound_sms(
            session,
            sms=InboundSms(
                message_sid=message_sid, from_phone=sender, body=_storable(form.get("Body", ""))
            ),
            now=runtime.clock.now(),
            settings=runtime.settings,
        )
    twiml = MessagingResponse()
    twiml.message(answer)
    return Response(str(twiml), media_type=TWIML)


@router.post(
    "/status",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 403, 413, 429),
)
async def delivery_status(
    form: SignedForm,
    session: SessionDep,
    runtime: RuntimeDep,
    message_id: uuid.UUID | None = None,
) -> Response:
    """A delivery receipt: the status only moves forward; duplicates change nothing."""
    status = PROVIDER_STATUS.get(form.get("MessageStatus", "").lower())
    provider_sid = form.get("MessageSid") or None
    if provider_sid is not None and not provider_sid.isprintable():
        raise BadWebhook("MessageSid is not a provider id")
    if status is not None and message_id is not None:
        code = form.get("ErrorCode")
        await advance_message(
            session,
            message_id=message_id,
            status=status,
            now=runtime.clock.now(),
            provider_sid=provider_sid,
            error_code=int(code) if code and code.isdigit() else None,
        )
    return Response(status_code=204)
