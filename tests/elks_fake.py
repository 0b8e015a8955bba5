"""A local 46elks-compatible HTTP server: the secondary SMS provider, faked at its edge.

It speaks 46elks' documented SMS API (https://46elks.com/docs/send-sms):
``POST /a1/sms`` with HTTP basic auth (the API username and password) and a form of
``from``, ``to`` (E.164), ``message`` and optionally ``whendelivered``, answered 200
with the SMS as JSON (``id``, ``status: created``, ...); 401 without valid
credentials; a plain-text 400 for a missing or malformed parameter. It records
every request, can be scripted to answer errors, and builds the webhooks 46elks
would post (delivery receipts to ``whendelivered``, inbound SMS to the number's
``sms_url``), with the basic auth that the ``user:password@`` of those URLs means.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from tests.local_server import LocalServer, answer, read_form

API_USERNAME = "u" + "c" * 32
API_PASSWORD = "elks-api-password-0123456789"
FROM_NUMBER = "+46766860000"
WEBHOOK_SECRET = "elks-webhook-secret-0123456789abcdef"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SENDER_ID = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,10}$")


@dataclass
class ElksRequest:
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    sms_id: str | None = None
    answered: int = 0


@dataclass
class FakeElks(LocalServer):
    username: str = API_USERNAME
    password: str = API_PASSWORD
    requests: list[ElksRequest] = field(default_factory=list)
    _script: deque[int] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *statuses: int) -> None:
        """The next requests are answered with these HTTP statuses; later ones succeed."""
        with self._lock:
            self._script.extend(statuses)

    def sent(self) -> list[ElksRequest]:
        """The SMS it accepted."""
        with self._lock:
            return [request for request in self.requests if request.sms_id is not None]

    def _answer(self, request: ElksRequest) -> tuple[int, str, str]:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return 401, "text/plain", "API access requires Basic HTTP authentication"
        if request.path.rstrip("/").lower() != "/a1/sms":
            return 404, "text/plain", "Not found"
        problem = _form_problem(request.form)
        if problem is not None:
            return 400, "text/plain", problem
        with self._lock:
            scripted = self._script.popleft() if self._script else 200
        if scripted != 200:
            return scripted, "text/plain", "scripted failure"
        request.sms_id = "s" + uuid.uuid4().hex
        return 200, "application/json", json.dumps(self._resource(request))

    def _resource(self, request: ElksRequest) -> dict[str, Any]:
        return {
            "status": "created",
            "direction": "outgoing",
            "from": request.form["from"],
            "created": "2026-12-01T10:30:00.000000",
            "parts": 1,
            "to": request.form["to"],
            "cost": 3500,
            "message": request.form["message"],
            "id": request.sms_id,
        }

    def start(self) -> FakeElks:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                request = ElksRequest(self.path, dict(self.headers.items()), read_form(self))
                status, content_type, body = fake._answer(request)
                request.answered = status
                with fake._lock:
                    fake.requests.append(request)
                answer(self, status, content_type, body.encode())

        self.serve(Handler)
        return self

    def delivery_report(
        self, request: ElksRequest, status: str
    ) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of the receipt 46elks posts to the SMS's ``whendelivered``."""
        params = {"id": request.sms_id or "", "status": status}
        if status == "delivered":
            params["delivered"] = "2026-12-01T10:30:02.000000"
        return _posted(request.form["whendelivered"], params)

    @staticmethod
    def inbound_sms(
        sms_url: str, *, from_phone: str, body: str, sms_id: str | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) of what 46elks posts to a number's ``sms_url``."""
        params = {
            "direction": "incoming",
            "id": sms_id or "s" + uuid.uuid4().hex,
            "from": from_phone,
            "to": FROM_NUMBER,
            "created": "2026-12-01T10:30:05.000000",
            "message": body,
        }
        return _posted(sms_url, params)


def _form_problem(form: dict[str, str]) -> str | None:
    for key in ("from", "to", "message"):
        if not form.get(key):
            return f"Missing key {key}"
    if not _E164.match(form["to"]):
        return "Invalid to number"
    if not (_E164.match(form["from"]) or _SENDER_ID.match(form["from"])):
        return "Invalid from"
    url = form.get("whendelivered")
    if url is not None and urlsplit(url).scheme not in ("http", "https"):
        return "Invalid whendelivered"
    return None


def _posted(url: str, params: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
    """A form POST to ``url`` as an HTTP client sends it: ``user:password@`` becomes
    an ``Authorization: Basic`` header and leaves the URL."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, urlencode(params).encode(), headers


def elks_settings_values(fake: FakeElks) -> dict[str, Any]:
    """Settings that point the secondary gateway at ``fake``."""
    return {
        "elks_api_username": fake.username,
        "elks_api_password": fake.password,
        "elks_from": FROM_NUMBER,
        "elks_api_base": fake.base_url,
        "elks_webhook_secret": WEBHOOK_SECRET,
    }
