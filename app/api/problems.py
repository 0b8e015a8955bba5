"""Every error a client can see, rendered once as ``application/problem+json``.

Also the guards that run before a route: request id, body size and content type.
No stack trace ever reaches a client; unexpected errors are logged once with the
request id and answered with a bare 500 problem (``InternalErrors``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.ratelimit import limit_failed_authentication
from app.core.db import database_unreachable
from app.core.errors import (
    PayloadTooLarge,
    RateLimited,
    ResponderError,
    Unauthorized,
    UnsupportedMediaType,
)

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with ``errors`` for validation failures."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update({key: value for key, value in extra.items() if value is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def _validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return problem_response(400, "Malformed JSON", "the request body is not valid JSON")
    fields = [
        {"field": _field_name(error.get("loc", ())), "message": str(error.get("msg", ""))}
        for error in errors
    ]
    detail = "; ".join(f"{item['field']}: {item['message']}" for item in fields[:5])
    return problem_response(422, "Validation failed", detail, errors=fields)


ErrorPage = Callable[[Request, int, str, str | None, dict[str, str] | None], Awaitable[Response]]
"""Renders an error for a person (an HTML page) instead of problem+json."""

PAGE_PREFIXES = ("/console", "/join", "/me/")
"""Where people read pages (the console, the volunteers' own pages): errors there are
pages, never problem+json. ``/me/``, not ``/me``: ``/metrics`` is the API's."""


def install_problem_handlers(
    app: FastAPI,
    *,
    error_page: ErrorPage | None = None,
    page_prefix: str | tuple[str, ...] = PAGE_PREFIXES,
) -> None:
    """problem+json for the API; under ``page_prefix``, ``error_page`` answers instead."""

    async def respond(
        request: Request,
        status: int,
        title: str,
        detail: str | None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Response:
        if error_page is not None and request.url.path.startswith(page_prefix):
            return await error_page(request, status, title, detail, headers)
        return problem_response(status, title, detail, headers=headers, **extra)

    @app.exception_handler(ResponderError)
    async def _domain(request: Request, exc: ResponderError) -> Response:
        if isinstance(exc, Unauthorized):
            try:
                await limit_failed_authentication(request)
            except RateLimited as limited:
                exc = limited
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return await respond(request, exc.status_code, exc.title, exc.detail, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if error_page is not None and request.url.path.startswith(page_prefix):
            # A page's forms validate themselves; this is a malformed link (a bad id).
            return await error_page(request, 404, "Not found", None, None)
        return _validation_problem(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, PayloadTooLarge):  # FastAPI wraps body-read errors in a 400
            return await _domain(request, exc.__cause__)
        titles = {404: "Not found", 405: "Method not allowed"}
        title = titles.get(exc.status_code, "Error")
        return await respond(
            request, exc.status_code, title, str(exc.detail), getattr(exc, "headers", None)
        )

    # Handled here, by class, rather than only in the catch-all below: Starlette runs the
    # catch-all in its outermost middleware, which re-raises after answering, and uvicorn
    # then closes the keep-alive connection under a client that is about to retry on it.
    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)
    async def _database(request: Request, exc: Exception) -> Response:
        if not database_unreachable(exc):
            raise exc
        return _database_unreachable(request.url.path, exc)


def _database_unreachable(path: str, exc: BaseException) -> JSONResponse:
    log.warning("database unreachable", path=path, error=type(exc).__name__)
    return problem_response(
        503,
        "Service unavailable",
        "the database is unreachable; nothing was stored, retry",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


DATABASE_RETRY_AFTER_S = 2


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""A client's own request id is kept only if it is short and plain: it is echoed in a
header and written in every log record of the request."""


class RequestGuards:
    """Pure ASGI middleware: request id, body size limit and content type.

    Enforced while the body streams in, so an oversized upload is refused without
    being buffered, whether or not it declares a Content-Length.
    """

    JSON_EXEMPT_SUFFIXES = ("/import",)
    JSON_EXEMPT_PREFIXES = ("/webhooks/",)

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        error_page: ErrorPage | None = None,
        page_prefix: str | tuple[str, ...] = PAGE_PREFIXES,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.error_page = error_page
        self.page_prefix = page_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        request_id = headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        refusal: Response | None = self._refuse_early(scope, headers)
        if refusal is not None:
            if self.error_page is not None and scope["path"].startswith(self.page_prefix):
                status = refusal.status_code
                refusal = await self.error_page(Request(scope), status, "", None, None)
            await refusal(scope, receive, send_with_id)
            return

        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            return message

        await self.app(scope, limited_receive, send_with_id)

    def _refuse_early(self, scope: Scope, headers: dict[str, str]) -> JSONResponse | None:
        declared = headers.get("content-length")
        path: str = scope["path"]
        # A webhook refuses its own oversized bodies, before its signature is checked,
        # so that they count against the unsigned-webhook limit (app/api/routers/webhooks.py).
        if declared is not None and not path.startswith(self.JSON_EXEMPT_PREFIXES):
            if not declared.isdigit():
                return problem_response(400, "Bad request", "invalid Content-Length")
            if int(declared) > self.max_body_bytes:
                exc = PayloadTooLarge(f"request body exceeds {self.max_body_bytes} bytes")
                return problem_response(413, exc.title, exc.detail)
        method = scope["method"]
        has_body = declared not in (None, "0") or "transfer-encoding" in headers
        if (
            method in ("POST", "PUT", "PATCH")
            and has_body
            and path.startswith("/v1/")
            and not path.endswith(self.JSON_EXEMPT_SUFFIXES)
        ):
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                exc415 = UnsupportedMediaType("send the body as application/json")
                return problem_response(415, exc415.title, exc415.detail)
        return None


class InternalErrors:
    """Pure ASGI middleware, innermost: an unexpected error becomes a bare 500, logged once.

    Starlette's own catch-all (``ServerErrorMiddleware``, outermost) answers and then
    re-raises, so uvicorn logs the error a second time and closes the keep-alive
    connection under a client that is about to send its next request on it. Here the
    exception ends: one brief record with the request id (``app/logging.py`` keeps
    it free of data), a 500 problem naming the request id, the connection kept.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        error_page: ErrorPage | None = None,
        page_prefix: str | tuple[str, ...] = PAGE_PREFIXES,
    ) -> None:
        self.app = app
        self.error_page = error_page
        self.page_prefix = page_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
            response: Response
            if database_unreachable(exc):
                response = _database_unreachable(scope["path"], exc)
            else:
                log.error(
                    "unhandled error", method=scope["method"], path=scope["path"], exc_info=exc
                )
                request_id = structlog.contextvars.get_contextvars().get("request_id")
                response = problem_response(
                    500, "Internal error", "the error was logged", request_id=request_id
                )
            if self.error_page is not None and scope["path"].startswith(self.page_prefix):
                response = await self.error_page(
                    Request(scope), response.status_code, "", None, None
                )
            if not started:  # a streamed answer already under way can only be cut off
                await response(scope, receive, send)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries so the document lists each status a route answers."""
    descriptions = {
        400: "Malformed request",
        401: "Missing or wrong API key",
        403: "Right key, wrong role",
        404: "Not found",
        409: "Conflict with stored state",
        413: "Body too large",
        415: "Wrong content type",
        422: "Validation failed",
        429: "Rate limited; see Retry-After",
        503: "Service unavailable",
    }
    return {
        status: {
            "description": descriptions.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


GUARDED_BODY_METHODS = ("post", "put", "patch")


def complete_operation_responses(schema: dict[str, Any]) -> None:
    """Add the statuses that shared machinery can answer on every route, in place.

    Authentication, rate limiting, the request guards and a lost database (503)
    concern whole classes of routes; listing their statuses here keeps /openapi.json
    true even when a route forgets them. FastAPI's default 422 entry is replaced:
    ours is problem+json.
    """
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses: list[int] = [503] if path.startswith(("/v1/", "/webhooks/")) else []
            if operation.get("security"):
                statuses += [401, 403, 429]
            if method in GUARDED_BODY_METHODS and "requestBody" in operation:
                statuses += [400, 413]
                if path.startswith("/v1/"):
                    statuses.append(415)
            responses: dict[str, Any] = operation["responses"]
            for status, entry in error_responses(*statuses).items():
                responses.setdefault(str(status), entry)
            if "422" in responses:
                responses["422"] = error_responses(422)[422]
