"""SMS gateways: how a queued ``message`` row leaves the building.

Three implementations behind one protocol: :class:`TwilioGateway` (the official
``twilio`` package's async client, one per process), :class:`ElksGateway` (the
optional secondary, 46elks, over its plain REST API) and :class:`ConsoleGateway`
(the embedded default, which prints each SMS readably). The worker only sees
:class:`SendResult` or :class:`SendFailure`; the failure's ``kind`` decides what it
does next, and whether the secondary takes over, so the retry and failover policy
lives in one place (``dispatch.worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal, Protocol, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
import structlog
import yarl
from twilio.base.exceptions import TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from app.core.settings import Settings

log = structlog.get_logger(__name__)

TWILIO_API_BASE = "https://api.twilio.com"
OPTED_OUT_CODE = 21610
REFUSAL_CODES = frozenset({20003, 20005, 20008, 30002})
"""Authentication failed, account suspended or not active: every send will fail."""

T = TypeVar("T")
FailureKind = Literal["retry", "unknown", "refused", "opted_out", "rejected"]


@dataclass(frozen=True)
class SendRequest:
    message_id: uuid.UUID
    alert_id: uuid.UUID | None
    to: str
    body: str
    validity_s: int | None
    """Seconds the provider may hold the SMS in its queue before dropping it."""


@dataclass(frozen=True)
class SendResult:
    provider_sid: str
    status: str


class SendFailure(Exception):
    """A send that did not succeed, classified for the worker.

    - ``retry``: 429, 5xx, connection refused: certainly not sent; try again.
    - ``unknown``: timed out or the connection broke after the request left: the
      provider may have accepted it; a status callback may still reconcile it.
    - ``refused``: the provider refuses the account (authentication, suspended).
    - ``opted_out``: the recipient has opted out at the carrier (21610).
    - ``rejected``: any other 4xx; sending again would fail the same way.
    """

    def __init__(
        self, kind: FailureKind, reason: str, *, code: int | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.kind: FailureKind = kind
        self.reason = reason
        self.code = code
        self.status = status


class SmsGateway(Protocol):
    name: str

    async def send(self, request: SendRequest) -> SendResult: ...

    async def close(self) -> None: ...


def status_callback_url(public_base_url: str, request: SendRequest) -> str:
    """The URL Twilio posts delivery receipts to; it names our message (and alert)."""
    url = f"{public_base_url}/webhooks/twilio/status?message_id={request.message_id}"
    if request.alert_id is not None:
        url += f"&alert_id={request.alert_id}"
    return url


RESEND_ON_CLOSED_CONNECTION = 1
"""Immediate resends of a request whose connection closed before any answer.

That is the keep-alive race: the provider closes a pooled connection that has been
idle for its timeout just as we send on it, and never reads the request. Waiting
``UNKNOWN_OUTCOME_GRACE`` (5 s) before the worker's retry, as for a real unknown
outcome, delayed a whole incident's alerts by 5 s once per benchmark run. The price:
if a provider did process a request and then dropped the connection without a byte
of answer, the SMS goes out twice (the duplicate window in docs/dispatch.md)."""


def form_body(data: dict[str, object]) -> bytes:
    """Twilio's form fields as an ``application/x-www-form-urlencoded`` body.

    Encoded by yarl (aiohttp's own URL library, in C): aiohttp's ``FormData`` wraps
    the standard library's ``urlencode`` (pure Python, byte by byte) in a payload
    object per field, together a quarter of a send's CPU (docs/benchmarks.md). yarl
    leaves ``:``, ``/``, ``,`` and ``?`` as they are, which a form decoder reads the
    same. Twilio's client names the body's ``Content-Type`` itself, and hands over
    ``str`` and ``int`` values or lists of them (a repeated field).
    """
    fields = {
        name: [str(item) for item in value] if isinstance(value, list) else str(value)
        for name, value in data.items()
    }
    return yarl.URL.build(query=fields).raw_query_string.encode()


class TwilioHttpClient(AsyncHttpClient):  # type: ignore[misc]
    """The twilio package's async HTTP interface on one pooled aiohttp session.

    Requests for api.twilio.com go to ``api_base`` instead (a local
    Twilio-compatible server in tests and benchmarks). The session is opened on
    first use, inside the running event loop.
    """

    def __init__(self, api_base: str = TWILIO_API_BASE) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), True, None)
        self.api_base = api_base.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if url.startswith(TWILIO_API_BASE):
            url = self.api_base + url.removeprefix(TWILIO_API_BASE)
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        body = form_body(data) if data else None
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        for attempt in range(1, RESEND_ON_CLOSED_CONNECTION + 2):
            try:
                async with self._session.request(
                    method.upper(),
                    url,
                    params={key: str(value) for key, value in params.items()} if params else None,
                    data=body,
                    headers=headers,
                    allow_redirects=allow_redirects,
                    timeout=aiohttp.ClientTimeout(total=timeout) if timeout else None,
                ) as response:
                    return Response(response.status, await response.text(), response.headers)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):
                    raise  # never connected: certainly not sent, the worker retries it
                if attempt > RESEND_ON_CLOSED_CONNECTION:
                    raise
                log.info(
                    "provider closed the connection without answering; resending at once",
                    error=type(exc).__name__,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def classify_twilio_error(exc: TwilioRestException) -> SendFailure:
    status = int(exc.status)
    code = int(exc.code) if exc.code is not None else None
    reason = f"twilio {status}" + (f" code {code}" if code is not None else "")
    if code == OPTED_OUT_CODE:
        return SendFailure("opted_out", reason, code=code, status=status)
    if status == 401 or code in REFUSAL_CODES:
        return SendFailure("refused", reason, code=code, status=status)
    if status == 429 or status >= 500:
        return SendFailure("retry", reason, code=code, status=status)
    return SendFailure("rejected", reason, code=code, status=status)


@contextlib.contextmanager
def transport_failures(provider: str) -> Iterator[None]:
    """Classify what went wrong on the way to ``provider`` (not its answer).

    Never connected: certainly not sent (``retry``). Timed out or broken after the
    request left: the provider may have it (``unknown``).
    """
    try:
        yield
    except TimeoutError as exc:
        raise SendFailure("unknown", f"timed out waiting for {provider}") from exc
    except aiohttp.ClientConnectorError as exc:
        raise SendFailure("retry", f"cannot connect: {exc.os_error}") from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise SendFailure("unknown", f"connection failed: {type(exc).__name__}") from exc


async def create_with_twilio(create: Awaitable[T], *, timeout_s: float) -> T:
    """Await one create request (a message, a call), its failures classified for the worker."""
    try:
        with transport_failures("Twilio"):
            async with asyncio.timeout(timeout_s):
                return await create
    except TwilioRestException as exc:
        raise classify_twilio_error(exc) from exc


class TwilioGateway:
    """Sends with ``messages.create_async``; one instance (one HTTP pool) per process."""

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        public_base_url: str,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        api_base: str = TWILIO_API_BASE,
        timeout_s: float = 10.0,
    ) -> None:
        if not (messaging_service_sid or from_number):
            raise ValueError("Twilio needs a messaging service SID or a from-number")
        self._http = TwilioHttpClient(api_base)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._public_base_url = public_base_url.rstrip("/")
        self._messaging_service_sid = messaging_service_sid
        self._from = from_number
        self._timeout_s = timeout_s

    async def send(self, request: SendRequest) -> SendResult:
        options: dict[str, Any] = {
            "to": request.to,
            "body": request.body,
            "status_callback": status_callback_url(self._public_base_url, request),
        }
        if self._messaging_service_sid:
            options["messaging_service_sid"] = self._messaging_service_sid
        else:
            options["from_"] = self._from
        if request.validity_s is not None:
            options["validity_period"] = max(1, min(36000, request.validity_s))
        message = await create_with_twilio(
            self._client.messages.create_async(**options), timeout_s=self._timeout_s
        )
        return SendResult(provider_sid=str(message.sid), status=str(message.status or "queued"))

    async def close(self) -> None:
        await self._http.close()


class ConsoleGateway:
    """The embedded default: every SMS is printed, readably, and counts as delivered."""

    name = "console"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    async def send(self, request: SendRequest) -> SendResult:
        stream = self._stream or sys.stdout
        rule = "─" * 60
        stream.write(f"\n{rule}\nSMS to {request.to}\n{request.body}\n{rule}\n")
        stream.flush()
        return SendResult(provider_sid=f"CONSOLE{request.message_id.hex}", status="delivered")

    async def close(self) -> None:
        return None


ELKS_API_BASE = "https://api.46elks.com"
ELKS_WEBHOOK_USER = "46elks"
"""The basic-auth user name in the URLs 46elks posts webhooks to (the secret is the
password); docs/deployment.md says how to configure the number's ``sms_url``."""


def elks_status_token(secret: str, message_id: str) -> str:
    """The token in a 46elks delivery-receipt URL: our message id, keyed by the secret.

    46elks signs no webhook. The basic auth proves the caller knows the secret; this
    token also binds the receipt to the one message it was issued for, so a URL seen
    in one receipt cannot move another message's status.
    """
    return hmac.new(secret.encode(), message_id.encode(), hashlib.sha256).hexdigest()


def with_basic_auth(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` in it: how 46elks is told to use basic auth."""
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def classify_http_status(provider: str, status: int, body: str) -> SendFailure:
    """A provider's error answer by its HTTP status, for an API without error codes."""
    reason = f"{provider} {status}: {body.strip()[:80]}"
    if status in (401, 402, 403):
        return SendFailure("refused", reason, status=status)
    if status == 429 or status >= 500:
        return SendFailure("retry", reason, status=status)
    return SendFailure("rejected", reason, status=status)


class ElksGateway:
    """The secondary: ``POST /a1/sms`` of 46elks' documented REST API, on one aiohttp pool.

    46elks publishes no official Python SDK; its API is one form POST with basic auth,
    so plain aiohttp (already the Twilio client's transport) is all it takes. Each
    SMS names its delivery-receipt URL (``whendelivered``), authenticated by basic
    auth and :func:`elks_status_token`.
    """

    name = "46elks"

    def __init__(
        self,
        *,
        api_username: str,
        api_password: str,
        from_number: str,
        webhook_secret: str,
        public_base_url: str,
        api_base: str = ELKS_API_BASE,
        timeout_s: float = 10.0,
    ) -> None:
        self._headers = {"Authorization": aiohttp.encode_basic_auth(api_username, api_password)}
        self._from = from_number
        self._secret = webhook_secret
        self._public_base_url = public_base_url.rstrip("/")
        self._url = f"{api_base.rstrip('/')}/a1/sms"
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def status_url(self, request: SendRequest) -> str:
        message_id = str(request.message_id)
        query = urlencode(
            {"message_id": message_id, "token": elks_status_token(self._secret, message_id)}
        )
        url = f"{self._public_base_url}/webhooks/46elks/status?{query}"
        return with_basic_auth(url, ELKS_WEBHOOK_USER, self._secret)

    async def send(self, request: SendRequest) -> SendResult:
        form = {
            "from": self._from,
            "to": request.to,
            "message": request.body,
            "whendelivered": self.status_url(request),
        }
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        with transport_failures("46elks"):
            async with (
                asyncio.timeout(self._timeout_s),
                self._session.post(self._url, data=form, headers=self._headers) as response,
            ):
                status, body = response.status, await response.text()
            if status >= 300:
                raise classify_http_status("46elks", status, body)
            answer = json.loads(body)
        sid = answer.get("id") if isinstance(answer, dict) else None
        if not sid:
            raise SendFailure("unknown", "46elks accepted the request without an SMS id")
        return SendResult(provider_sid=str(sid), status=str(answer.get("status", "")))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def create_gateway(settings: Settings) -> SmsGateway:
    """Twilio when credentials are configured, else the console (the embedded default)."""
    if settings.twilio_enabled and settings.twilio_auth_token is not None:
        return TwilioGateway(
            account_sid=settings.twilio_account_sid or "",
            auth_token=settings.twilio_auth_token.get_secret_value(),
            public_base_url=settings.public_base_url,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            from_number=settings.twilio_from,
            api_base=settings.twilio_api_base,
            timeout_s=settings.send_timeout_s,
        )
    return ConsoleGateway()


def create_secondary_gateway(settings: Settings) -> SmsGateway | None:
    """46elks when configured: it takes over alert SMS the primary fails (``dispatch.worker``)."""
    password, secret = settings.elks_api_password, settings.elks_webhook_secret
    if not settings.elks_enabled or password is None or secret is None:
        return None  # the settings refuse a username without the other two
    return ElksGateway(
        api_username=settings.elks_api_username or "",
        api_password=password.get_secret_value(),
        from_number=settings.elks_from or "",
        webhook_secret=secret.get_secret_value(),
        public_base_url=settings.public_base_url,
        api_base=settings.elks_api_base,
        timeout_s=settings.send_timeout_s,
    )
