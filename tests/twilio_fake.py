"""A local Twilio-compatible HTTP server: the outside world, faked at its edge only.

The real ``twilio`` client talks to it over HTTP (``RESPONDER_TWILIO_API_BASE``).
It answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``…/Calls.json``
the way Twilio does (201 with a JSON message or call resource), records every
request, can be scripted to answer 429 / 500 / an error code, or to hang before
answering, and signs status callbacks, inbound SMS and a call's webhooks (answered,
a key pressed, its status) exactly as Twilio would, for the webhooks under test.
"""

from __future__ import annotations

import functools
import html
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jsonschema
import yaml
from twilio.request_validator import RequestValidator

from app.core.clock import Clock
from app.core.settings import Settings
from tests.factories import make_settings
from tests.local_server import LocalServer, answer, last_values, read_form_values

ACCOUNT_SID = "AC" + "a" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
MESSAGING_SERVICE_SID = "MG" + "b" * 32
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")
_CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls\.json$")


@dataclass(frozen=True)
class Behaviour:
    """What the next request gets: ``status``/``code`` for an error, ``hang_s`` to stall,
    ``hold`` to stall until the test sets the event (the provider answers only then),
    ``drop`` to close the connection without reading on or answering: what a server
    closing an idle keep-alive connection does to a request that races the close. A
    dropped request is not recorded (the provider never processed it)."""

    status: int = 201
    code: int | None = None
    hang_s: float = 0.0
    hold: threading.Event | None = None
    drop: bool = False


OK = Behaviour()
TOO_MANY = Behaviour(status=429, code=20429)
SERVER_ERROR = Behaviour(status=500)
OPTED_OUT = Behaviour(status=400, code=21610)
AUTH_FAILED = Behaviour(status=401, code=20003)
DROPPED = Behaviour(drop=True)


def hang(seconds: float) -> Behaviour:
    return Behaviour(hang_s=seconds)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    sid: str | None = None
    answered: int = 0
    lists: dict[str, list[str]] = field(default_factory=dict)
    """Every value of a repeated parameter (a call's ``StatusCallbackEvent``)."""


@dataclass
class FakeTwilio(LocalServer):
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    requests: list[RecordedRequest] = field(default_factory=list)
    arrivals: int = 0
    _script: deque[Behaviour] = field(default_factory=deque)
    _outage: tuple[Clock, datetime, Behaviour] | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def script(self, *behaviours: Behaviour) -> None:
        """The next requests get these answers, in order; later ones get 201."""
        with self._lock:
            self._script.extend(behaviours)

    def outage(self, clock: Clock, until: datetime, behaviour: Behaviour = SERVER_ERROR) -> None:
        """Every request gets ``behaviour`` while ``clock`` (the test's) is before ``until``."""
        with self._lock:
            self._outage = (clock, until, behaviour)

    def messages(self) -> list[RecordedRequest]:
        """The SMS accepted (201), in order of arrival."""
        with self._lock:
            return [request for request in self.requests if (request.sid or "").startswith("SM")]

    def calls(self) -> list[RecordedRequest]:
        """The calls placed (201), in order of arrival."""
        with self._lock:
            return [request for request in self.requests if (request.sid or "").startswith("CA")]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` requests have been received (any answer)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} of {count} requests after {timeout}s")
            return list(self.requests)

    def wait_for_arrivals(self, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` requests have arrived, answered or still held."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.arrivals >= count, timeout):
                raise TimeoutError(f"{self.arrivals} of {count} arrivals after {timeout}s")

    def _next(self) -> Behaviour:
        with self._lock:
            self.arrivals += 1
            self._lock.notify_all()
            if self._outage is not None and self._outage[0].now() < self._outage[1]:
                return self._outage[2]
            return self._script.popleft() if self._script else OK

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                lists = read_form_values(self)
                request = RecordedRequest(
                    "POST", self.path, dict(self.headers.items()), last_values(lists), lists=lists
                )
                behaviour = fake._next()
                if behaviour.drop:
                    self.close_connection = True
                    return
                call = _CALLS_PATH.match(self.path)
                match = call or _MESSAGES_PATH.match(self.path)
                if match is None or match.group(1) != fake.account_sid:
                    behaviour = Behaviour(status=404, code=20404)
                if behaviour.hang_s:
                    time.sleep(behaviour.hang_s)
                if behaviour.hold is not None:
                    behaviour.hold.wait(timeout=120)
                if behaviour.status == 201 and call is not None:
                    request.sid = "CA" + uuid.uuid4().hex
                    body = fake._call_resource(request)
                elif behaviour.status == 201:
                    request.sid = "SM" + uuid.uuid4().hex
                    body = fake._message_resource(request)
                else:
                    body = {
                        "code": behaviour.code or behaviour.status,
                        "message": "scripted failure",
                        "more_info": f"https://www.twilio.com/docs/errors/{behaviour.code}",
                        "status": behaviour.status,
                    }
                request.answered = behaviour.status
                fake._record(request)
                answer(self, behaviour.status, "application/json", json.dumps(body).encode())

        self.serve(Handler)
        return self

    def _message_resource(self, request: RecordedRequest) -> dict[str, Any]:
        return {
            "sid": request.sid,
            "account_sid": self.account_sid,
            "messaging_service_sid": request.form.get("MessagingServiceSid"),
            "from": request.form.get("From"),
            "to": request.form.get("To"),
            "body": request.form.get("Body"),
            "status": "accepted" if "MessagingServiceSid" in request.form else "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": "Tue, 24 Nov 2026 14:32:00 +0000",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{request.sid}.json",
        }

    def _call_resource(self, request: RecordedRequest) -> dict[str, Any]:
        return {
            "sid": request.sid,
            "account_sid": self.account_sid,
            "from": request.form.get("From"),
            "to": request.form.get("To"),
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": "Tue, 24 Nov 2026 14:32:00 +0000",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{request.sid}.json",
        }

    def _call_params(self, call: RecordedRequest, **more: str) -> dict[str, str]:
        return {
            "CallSid": call.sid or "",
            "AccountSid": self.account_sid,
            "From": call.form.get("From", ""),
            "To": call.form.get("To", ""),
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
            **more,
        }

    def call_answered(
        self, call: RecordedRequest, *, answered_by: str = "human"
    ) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of Twilio fetching the TwiML of an answered call.

        With ``MachineDetection=Enable`` Twilio waits for its verdict and sends it as
        ``AnsweredBy`` (``human``, ``machine_start``, ``fax``, ``unknown``).
        """
        params = self._call_params(call, CallStatus="in-progress", AnsweredBy=answered_by)
        url = call.form["Url"]
        return url, urlencode(params).encode(), self.sign(url, params)

    def key_pressed(
        self, call: RecordedRequest, twiml: str, digits: str
    ) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of the ``<Gather>`` in ``twiml`` posting the key pressed."""
        found = re.search(r'<Gather [^>]*action="([^"]+)"', twiml)
        assert found is not None, twiml
        url = html.unescape(found.group(1))
        params = self._call_params(call, CallStatus="in-progress", Digits=digits)
        return url, urlencode(params).encode(), self.sign(url, params)

    def call_status_callback(
        self, call: RecordedRequest, status: str
    ) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of a signed call status callback (``CallStatus``)."""
        params = self._call_params(call, CallStatus=status)
        url = call.form["StatusCallback"]
        return url, urlencode(params).encode(), self.sign(url, params)

    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        """The headers Twilio would send with a form POST of ``params`` to ``url``."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        return {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def status_callback(
        self, request: RecordedRequest, status: str, *, error_code: int | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of a signed status callback for a recorded send."""
        url = request.form["StatusCallback"]
        params = {
            "MessageSid": request.sid or "",
            "MessageStatus": status,
            "AccountSid": self.account_sid,
            "To": request.form.get("To", ""),
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return url, urlencode(params).encode(), self.sign(url, params)

    def inbound_sms(
        self,
        url: str,
        *,
        from_phone: str,
        body: str,
        message_sid: str | None = None,
        opt_out_type: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of a signed inbound-SMS webhook, as Twilio posts it.

        ``opt_out_type``: what Advanced Opt-Out adds to a keyword it handled itself.
        """
        params = {
            "MessageSid": message_sid or "SM" + uuid.uuid4().hex,
            "AccountSid": self.account_sid,
            "From": from_phone,
            "To": "+46700000000",
            "Body": body,
            "NumMedia": "0",
        }
        if opt_out_type is not None:
            params["OptOutType"] = opt_out_type
        return urlencode(params).encode(), self.sign(url, params)


def twilio_settings(fake: FakeTwilio, **overrides: Any) -> Settings:
    """Settings that point the real Twilio client at ``fake``."""
    values: dict[str, Any] = {
        "twilio_account_sid": fake.account_sid,
        "twilio_auth_token": fake.auth_token,
        "twilio_messaging_service_sid": MESSAGING_SERVICE_SID,
        "twilio_api_base": fake.base_url,
        "public_base_url": "https://responder.example.org",
        "send_timeout_s": 10.0,
    }
    values.update(overrides)
    return make_settings(**values)


TWILIO_SPEC = Path(__file__).resolve().parents[2] / "shared" / "twilio" / "twilio_api_v2010.yaml"
CONTRACTS = Path(__file__).resolve().parent / "contracts"
MESSAGES_OPERATION = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
CALLS_OPERATION = "/2010-04-01/Accounts/{AccountSid}/Calls.json"
VENDORED_CONTRACTS = {
    MESSAGES_OPERATION: CONTRACTS / "twilio_create_message.json",
    CALLS_OPERATION: CONTRACTS / "twilio_create_call.json",
}


def schema_from_twilio_spec(path: Path, operation: str = MESSAGES_OPERATION) -> dict[str, Any]:
    """An operation's form schema from Twilio's OpenAPI file, with the components it uses."""
    spec = yaml.safe_load(path.read_text())
    post = spec["paths"][operation]["post"]
    schema: dict[str, Any] = dict(
        post["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    )
    names = sorted(set(re.findall(r"#/components/schemas/(\w+)", json.dumps(schema))))
    schema["components"] = {
        "schemas": {name: spec["components"]["schemas"][name] for name in names}
    }
    return schema


@functools.cache
def vendored_schema(operation: str) -> dict[str, Any]:
    """The contract: Twilio's own schema of an operation, vendored so that a clean clone has it.

    ``tests/contracts/`` holds the extracts (CreateMessage, CreateCall, with Twilio's
    MIT licence); when Twilio's whole OpenAPI file is beside the project, a test
    checks the extracts still match it.
    """
    vendored: dict[str, Any] = json.loads(VENDORED_CONTRACTS[operation].read_text())["schema"]
    return vendored


def create_message_schema() -> dict[str, Any]:
    return vendored_schema(MESSAGES_OPERATION)


def contract_violations(request: RecordedRequest) -> list[str]:
    """What in a recorded send or call does not match Twilio's CreateMessage or CreateCall."""
    is_call = _CALLS_PATH.match(request.path) is not None
    schema = vendored_schema(CALLS_OPERATION if is_call else MESSAGES_OPERATION)
    properties: dict[str, Any] = schema["properties"]
    problems = [f"unknown parameter {name}" for name in request.form if name not in properties]
    if not is_call and not _MESSAGES_PATH.match(request.path):
        problems.append(f"not the Messages resource: {request.path}")
    if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        problems.append("body is not application/x-www-form-urlencoded")
    if not request.headers.get("Authorization", "").startswith("Basic "):
        problems.append("no HTTP basic authentication")
    typed: dict[str, Any] = {}
    for name, value in request.form.items():
        kind = properties.get(name, {}).get("type")
        if kind == "array":
            typed[name] = request.lists.get(name, [value])
            continue
        if kind == "boolean":
            typed[name] = {"true": True, "false": False}.get(value, value)
            continue
        try:
            typed[name] = {"integer": int, "number": float}.get(kind, str)(value)
        except ValueError:
            problems.append(f"{name} is not a {kind}: {value!r}")
    checker = jsonschema.FormatChecker()

    @checker.checks("phone-number")
    def _phone(value: object) -> bool:
        return isinstance(value, str) and re.fullmatch(r"\+[1-9]\d{6,14}", value) is not None

    # A call's To/From: a number, a SIP address or a client; we only ever dial numbers.
    checker.checks("endpoint")(_phone)

    @checker.checks("uri")
    def _uri(value: object) -> bool:
        parts = urlsplit(str(value))
        return parts.scheme in ("http", "https") and bool(parts.netloc)

    validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
    problems.extend(error.message for error in validator.iter_errors(typed))
    if is_call:
        if not ({"Url", "Twiml", "ApplicationSid"} & set(request.form)):
            problems.append("neither Url, Twiml nor ApplicationSid")
        return problems
    if not ({"From", "MessagingServiceSid"} & set(request.form)):
        problems.append("neither From nor MessagingServiceSid")
    if not ({"Body", "ContentSid", "MediaUrl"} & set(request.form)):
        problems.append("no Body")
    return problems
