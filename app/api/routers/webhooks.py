"""The providers' webhooks: inbound SMS and delivery receipts, for Twilio and 46elks.

Twilio's check ``X-Twilio-Signature`` as the twilio package's ``RequestValidator``
does (:func:`signed_by_twilio`) against the URL Twilio was given, built from
``PUBLIC_BASE_URL`` (behind a proxy the request's own URL would differ). 46elks
signs nothing: its webhooks carry HTTP basic auth whose password is
``ELKS_WEBHOOK_SECRET`` (in the URLs we give it), and a delivery receipt's URL also
a token binding it to its message (``dispatch.gateway.elks_status_token``); both
are compared in constant time. A provider without its secret configured has no
genuine webhooks: all get 403.

Both providers' payloads are translated into the same two domain calls,
``handle_inbound_sms`` and ``advance_message``; an inbound SMS is answered through
the provider it came by (TwiML for Twilio, a plain-text body for 46elks).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import uuid
from typing import Annotated
from urllib.parse import parse_qsl, urlparse
from xml.sax.saxutils import escape

from fastapi import APIRouter, Depends, Request, Response
from twilio.request_validator import add_port, remove_port

from app.api.deps import RuntimeDep, SessionDep, TransactionsDep
from app.api.problems import error_responses
from app.api.ratelimit import limit_unsigned_webhook
from app.core import texts
from app.core.errors import Forbidden, PayloadTooLarge, ResponderError
from dispatch.delivery import PROVIDER_STATUS, advance_message
from dispatch.gateway import (
    ELKS_WEBHOOK_USER,
    OPTED_OUT_CODE,
    ElksGateway,
    TwilioGateway,
    elks_status_token,
)
from dispatch.replies import Intent, parse_reply
from dispatch.responses import InboundSms, carrier_opt_out, handle_inbound_sms

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"])
elks_router = APIRouter(prefix="/webhooks/46elks", tags=["webhooks"])

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
    params = await _read_form(request)
    url = runtime.settings.public_base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not signed_by_twilio(token.get_secret_value(), url, params, signature):
        raise Forbidden("missing or invalid X-Twilio-Signature")
    return params


@functools.lru_cache(maxsize=256)
def _signed_urls(url: str) -> tuple[str, str]:
    """``url`` without and with its port, as Twilio may have signed either (its
    ``RequestValidator`` tries both); the same few URLs arrive on every SMS."""
    parsed = urlparse(url)
    return remove_port(parsed), add_port(parsed)


def signed_by_twilio(token: str, url: str, params: dict[str, str], signature: str) -> bool:
    """Whether ``signature`` is Twilio's HMAC-SHA1 of ``url`` and the form ``params``.

    What the twilio package's ``RequestValidator.validate`` decides for a form (the
    URL with and without its port), in a fifth of its CPU: the parameters are joined
    once, the second URL is tried only when the first fails, and the URL variants
    are cached (``test_the_signature_check_decides_as_the_twilio_package``).
    Compared in constant time.
    """
    payload = "".join(name + params[name] for name in sorted(params))
    given = signature.encode()
    key = token.encode()
    return any(
        hmac.compare_digest(
            base64.b64encode(hmac.digest(key, (signed + payload).encode(), hashlib.sha1)), given
        )
        for signed in _signed_urls(url)
    )


async def elks_form(request: Request, runtime: RuntimeDep) -> dict[str, str]:
    """The form parameters of a request that knows the 46elks webhook secret (403 otherwise).

    Counted against the unsigned-webhook limit when refused, as for Twilio.
    """
    try:
        secret = runtime.settings.elks_webhook_secret
        if secret is None or not _basic_auth_is(
            request.headers.get("authorization", ""), ELKS_WEBHOOK_USER, secret.get_secret_value()
        ):
            raise Forbidden("missing or invalid 46elks webhook credentials")
        return await _read_form(request)
    except (Forbidden, PayloadTooLarge, BadWebhook):
        await limit_unsigned_webhook(request)
        raise


def _basic_auth_is(header: str, user: str, password: str) -> bool:
    """Whether ``header`` is HTTP basic auth for exactly ``user:password``, in constant time."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"{user}:{password}".encode())


async def _read_form(request: Request) -> dict[str, str]:
    """A webhook's form body, refused when larger than ``WEBHOOK_MAX_BYTES`` or not a form."""
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
    return params


def _storable(text: str) -> str:
    """The text with NUL characters as spaces: PostgreSQL text cannot hold a NUL.

    A space, not nothing, so ``YES\\x004821`` still reads as ``YES 4821``.
    """
    return text.replace("\x00", " ")


ANSWERED_BY_TWILIO: dict[str, Intent] = {"STOP": "stop", "START": "start", "HELP": "help"}
"""Twilio's ``OptOutType`` values (Advanced Opt-Out) and the intent each one answers."""


def answered_by_twilio(form: dict[str, str]) -> bool:
    """Whether Twilio's Advanced Opt-Out already answered this SMS (docs/deployment.md).

    Twilio posts a keyword it handles with ``OptOutType`` and sends its own configured
    reply: our answer would be a second one. Only when we read the same keyword: a
    YES that a Messaging Service still lists as an opt-in word arrives as ``START``,
    and must get its instructions whatever Twilio also sent.
    """
    intent = ANSWERED_BY_TWILIO.get(form.get("OptOutType", "").upper())
    return intent is not None and parse_reply(form.get("Body", "")).intent == intent


_TWIML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def twiml(answer: str | None) -> str:
    """The TwiML that sends ``answer`` back (``None``: none), exactly as the twilio
    package's ``MessagingResponse`` writes it: built from a string, not an XML tree
    (15 µs a reply, measured, for a document that is always one element)."""
    if answer is None:
        return _TWIML_HEAD + "<Response />"
    if not answer:
        return _TWIML_HEAD + "<Response><Message /></Response>"
    return f"{_TWIML_HEAD}<Response><Message>{escape(answer)}</Message></Response>"


SignedForm = Annotated[dict[str, str], Depends(signed_form)]
ElksForm = Annotated[dict[str, str], Depends(elks_form)]


async def _answer(
    transactions: TransactionsDep,
    runtime: RuntimeDep,
    *,
    provider: str,
    sid: str,
    sender: str,
    body: str,
) -> str:
    """The answer to an inbound SMS, whichever provider brought it."""
    if not (sid.isprintable() and sender.isprintable()):
        # Authentic, yet no provider id or number looks like this: nobody to look up
        # and no id to store it under. The help answers it; nothing is stored or changed.
        return texts.help_text(DEFAULT_LANGUAGE)
    return await handle_inbound_sms(
        transactions,
        sms=InboundSms(message_sid=sid, from_phone=sender, body=_storable(body), provider=provider),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )


async def _receipt(
    session: SessionDep,
    runtime: RuntimeDep,
    *,
    provider: str,
    message_id: uuid.UUID | None,
    provider_status: str,
    provider_sid: str | None,
    error_code: int | None = None,
) -> None:
    """A delivery receipt, whichever provider sent it: forward-only, duplicates change nothing."""
    if provider_sid is not None and not provider_sid.isprintable():
        raise BadWebhook("the message id is not a provider id")
    status = PROVIDER_STATUS.get(provider_status.lower())
    if status is not None and message_id is not None:
        if error_code == OPTED_OUT_CODE:
            await carrier_opt_out(
                session, message_id=message_id, now=runtime.clock.now(), settings=runtime.settings
            )
        await advance_message(
            session,
            message_id=message_id,
            status=status,
            now=runtime.clock.now(),
            provider_sid=provider_sid,
            error_code=error_code,
            provider=provider,
        )


@router.post(
    "/sms",
    response_class=Response,
    responses={
        200: {"content": {TWIML: {}}, "description": "The answer to the volunteer, as TwiML"},
        **error_responses(400, 403, 413, 429),
    },
)
async def inbound_sms(
    form: SignedForm, transactions: TransactionsDep, runtime: RuntimeDep
) -> Response:
    """A volunteer's SMS: applied once per MessageSid, answered as TwiML (an empty
    ``<Response/>`` when Twilio's Advanced Opt-Out has answered the keyword itself)."""
    message_sid = form.get("MessageSid") or form.get("SmsSid")
    sender = form.get("From")
    if not message_sid or not sender:
        raise BadWebhook("MessageSid and From are required")
    answer = await _answer(
        transactions,
        runtime,
        provider=TwilioGateway.name,
        sid=message_sid,
        sender=sender,
        body=form.get("Body", ""),
    )
    return Response(twiml(None if answered_by_twilio(form) else answer), media_type=TWIML)


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
    code = form.get("ErrorCode")
    await _receipt(
        session,
        runtime,
        provider=TwilioGateway.name,
        message_id=message_id,
        provider_status=form.get("MessageStatus", ""),
        provider_sid=form.get("MessageSid") or None,
        error_code=int(code) if code and code.isdigit() else None,
    )
    return Response(status_code=204)


@elks_router.post(
    "/sms",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "The answer, sent back by 46elks"},
        **error_responses(400, 403, 413, 429),
    },
)
async def elks_inbound_sms(
    form: ElksForm, transactions: TransactionsDep, runtime: RuntimeDep
) -> Response:
    """A volunteer's SMS to the 46elks number: applied once per 46elks id, answered in the body.

    46elks sends a plain-text answer body back to the sender as an SMS.
    """
    sms_id, sender = form.get("id"), form.get("from")
    if not sms_id or not sender:
        raise BadWebhook("id and from are required")
    answer = await _answer(
        transactions,
        runtime,
        provider=ElksGateway.name,
        sid=sms_id,
        sender=sender,
        body=form.get("message", ""),
    )
    return Response(answer, media_type="text/plain")


@elks_router.post(
    "/status",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 403, 413, 429),
)
async def elks_delivery_status(
    form: ElksForm,
    session: SessionDep,
    runtime: RuntimeDep,
    request: Request,
    message_id: uuid.UUID,
    token: str,
) -> Response:
    """A 46elks delivery receipt (``sent``, ``delivered`` or ``failed``) for one message.

    Its URL's token must be the one issued for ``message_id`` (403 otherwise).
    """
    secret = runtime.settings.elks_webhook_secret
    assert secret is not None  # elks_form refused the request otherwise
    expected = elks_status_token(secret.get_secret_value(), str(message_id))
    if not hmac.compare_digest(token.encode(), expected.encode()):
        await limit_unsigned_webhook(request)
        raise Forbidden("invalid 46elks receipt token")
    await _receipt(
        session,
        runtime,
        provider=ElksGateway.name,
        message_id=message_id,
        provider_status=form.get("status", ""),
        provider_sid=form.get("id") or None,
    )
    return Response(status_code=204)
