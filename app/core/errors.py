"""The one error hierarchy: domain code raises these, the API renders them once.

Nothing here imports FastAPI, so ``dispatch`` and ``geo`` raise the same errors
that the HTTP layer turns into ``application/problem+json`` (RFC 9457).
"""

from __future__ import annotations

from typing import Any


class ResponderError(Exception):
    status_code = 400
    title = "Bad request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class Unauthorized(ResponderError):
    status_code = 401
    title = "Unauthorized"


class Forbidden(ResponderError):
    status_code = 403
    title = "Forbidden"


class NotFound(ResponderError):
    status_code = 404
    title = "Not found"


class Conflict(ResponderError):
    status_code = 409
    title = "Conflict"


class PayloadTooLarge(ResponderError):
    status_code = 413
    title = "Payload too large"


class UnsupportedMediaType(ResponderError):
    status_code = 415
    title = "Unsupported media type"


class InvalidInput(ResponderError):
    """A field-level problem found after schema validation (e.g. a phone number)."""

    status_code = 422
    title = "Validation failed"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]}
        )
        self.field = field


class RateLimited(ResponderError):
    status_code = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(ResponderError):
    status_code = 503
    title = "Service unavailable"
