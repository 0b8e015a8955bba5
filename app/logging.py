"""Structured logs (structlog) carrying the request id of their cause, and nothing secret.

Every record, ours or a library's (uvicorn, SQLAlchemy, asyncpg, twilio), passes the
same processors in the one handler before a byte is written, so redaction happens at
the logger, not at each call site:

- values under sensitive keys (``authorization``, ``token``, ``phone``, ``name``,
  ``body`` …) are replaced, and in every other string API keys and volunteer tokens
  (``rsp_…``), ``Bearer``/``Basic`` credentials, e-mail addresses and phone numbers
  are masked;
- an exception is its type, the first line of its message with every quoted value
  masked (drivers and validators quote the offending input; PostgreSQL's ``DETAIL``
  line, which holds a failing row, is never kept) and at most ``MAX_FRAMES`` frames
  as ``file:line in function`` (our own, and the innermost): no local variables,
  no source lines;
- at most ``TRACEBACKS_PER_MINUTE`` records per process carry frames; beyond that an
  error is one line, so a burst of errors costs little time and little disk;
- every string is cut at ``MAX_VALUE_CHARS``.

Names and SMS bodies have no recognisable shape, so they are kept out by the keys
and by never logging exception messages beyond their first line; code logs ids.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

MAX_FRAMES = 12
INNERMOST_FRAMES = 3
MAX_CHAINED = 3
MAX_VALUE_CHARS = 1000
MAX_EXCEPTION_MESSAGE_CHARS = 200
TRACEBACKS_PER_MINUTE = 10
REDACTED = "[redacted]"

_SENSITIVE_KEY_PARTS = ("authorization", "password", "secret", "token", "cookie", "phone", "email")
_SENSITIVE_KEYS = frozenset({"name", "body", "text", "to", "from", "key", "api_key", "sms"})
_UNTOUCHED_KEYS = frozenset({"timestamp", "level", "logger"})
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"rsp_[A-Za-z0-9_-]+"), "rsp_" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"), REDACTED),
    # Eight or more digits, optionally after "+", with single spaces, dashes or brackets
    # between them: E.164 and national formats (070-123 45 67); not dates, uuids or ids.
    (re.compile(r"(?<![\w+.-])(?!\d{4}-\d\d-\d\d)\+?\d(?:[ ()-]?\d){7,16}(?![\w-])"), REDACTED),
)
# A quote left open by a cut is masked to the end.
_QUOTED = re.compile(r"'[^']*(?:'|$)|\"[^\"]*(?:\"|$)")
MASKED_PREFIX_CHARS = 10 * MAX_VALUE_CHARS


def redact_text(value: str) -> str:
    """The text masked, then cut at ``MAX_VALUE_CHARS``.

    Every pattern is bounded (no nested or open-ended repetition that could
    backtrack), and runs over a bounded prefix that reaches well past the cut: a
    megabyte-long value costs what ten thousand characters do, and a secret that
    straddles the cut was masked before it.
    """
    length = len(value)
    value = value[:MASKED_PREFIX_CHARS]
    for pattern, replacement in _MASKS:
        value = pattern.sub(replacement, value)
    if length > MAX_VALUE_CHARS:
        value = f"{value[:MAX_VALUE_CHARS]}…[cut; {length} chars in all]"
    return value


def _sensitive(key: object) -> bool:
    name = str(key).lower()
    return name in _SENSITIVE_KEYS or any(part in name for part in _SENSITIVE_KEY_PARTS)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {
            key: REDACTED if _sensitive(key) else _redact_value(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return redact_text(str(value))


def redact(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Mask secrets and personal data in every value of the record, nested ones too."""
    return {
        key: value
        if key in _UNTOUCHED_KEYS
        else REDACTED
        if key != "event" and _sensitive(key)
        else _redact_value(value)
        for key, value in event_dict.items()
    }


def exception_message(exc_value: str) -> str:
    """The first line, quoted values masked: enough to recognise the error, no data."""
    first = exc_value.strip().split("\n", 1)[0][:MASKED_PREFIX_CHARS]
    masked = _QUOTED.sub("'…'", first)
    return masked[:MAX_EXCEPTION_MESSAGE_CHARS]


class TracebackBudget:
    """Lets ``per_minute`` records a minute keep their frames; the rest become one line.

    Extracting and writing frames is the expensive part of an error record; bounding
    how many are written keeps a burst of 500s from stalling the event loop or
    filling the disk, while the first ones of each minute still say where it broke.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window_start = clock()
        self._used = 0

    def take(self) -> bool:
        now = self._clock()
        if now - self._window_start >= 60:
            self._window_start, self._used = now, 0
        self._used += 1
        return self._used <= self.per_minute


class ExceptionSummary:
    """Turns ``exc_info`` into a bounded ``exception``: type, first line, frames.

    Frames are walked with ``traceback.walk_tb`` (code objects only: no source line
    is read and no local variable is touched), the error itself first, then at most
    ``MAX_CHAINED - 1`` of its causes.
    """

    def __init__(self, budget: TracebackBudget) -> None:
        self._budget = budget

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        exc_info = event_dict.pop("exc_info", None)
        if isinstance(exc_info, BaseException):
            exc: BaseException | None = exc_info
        elif exc_info is True:
            exc = sys.exc_info()[1]
        elif isinstance(exc_info, tuple):
            exc = exc_info[1]
        else:
            exc = None
        if exc is None:
            return event_dict
        if not self._budget.take():
            event_dict["exception"] = [
                {"type": type(exc).__name__, "message": exception_message(str(exc))}
            ]
            event_dict["frames_omitted"] = "traceback budget of this minute spent"
            return event_dict
        stacks: list[dict[str, Any]] = []
        seen: set[int] = set()
        chained: BaseException | None = exc
        while chained is not None and len(stacks) < MAX_CHAINED and id(chained) not in seen:
            seen.add(id(chained))
            frames = [
                (frame.f_code.co_filename, lineno, frame.f_code.co_name)
                for frame, lineno in traceback.walk_tb(chained.__traceback__)
            ]
            stacks.append(
                {
                    "type": type(chained).__name__,
                    "message": exception_message(str(chained)),
                    "frames": _where(frames),
                }
            )
            chained = chained.__cause__ or (
                None if chained.__suppress_context__ else chained.__context__
            )
        event_dict["exception"] = stacks
        return event_dict


def _where(frames: list[tuple[str, int, str]]) -> list[str]:
    """Our own frames and the innermost few, ``MAX_FRAMES`` at most, nearest the error kept.

    Library frames between our code and the failure (middleware, the driver's
    wrappers) say little; a recursion repeats the same few lines.
    """
    library = "site-packages/"
    last = len(frames) - INNERMOST_FRAMES
    chosen = [
        f"{filename.rpartition(library)[2]}:{lineno} in {name}"
        for index, (filename, lineno, name) in enumerate(frames)
        if index >= last or library not in filename
    ]
    return chosen[-MAX_FRAMES:]


def exception_as_text(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """For the console: the summary as a short indented block under the line."""
    stacks = event_dict.pop("exception", None)
    if stacks:
        lines = []
        for number, stack in enumerate(stacks):
            lines.append(f"{'caused by ' if number else ''}{stack['type']}: {stack['message']}")
            lines += [f"  at {frame}" for frame in stack.get("frames", [])]
        event_dict["exception"] = "\n".join(lines)
    return event_dict


def configure_logging(*, level: str = "INFO", fmt: str = "console") -> None:
    renderer: list[structlog.types.Processor] = (
        [structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [exception_as_text, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            # Run for every record, structlog's and the standard library's alike.
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                ExceptionSummary(TracebackBudget(TRACEBACKS_PER_MINUTE)),
                redact,
                *renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
