"""Where a request's time goes, as phases the HTTP layer reports in ``Server-Timing``.

The benchmark needs the alert path's POST broken down (selection, AED, inserts,
commit, …) from inside the service, because a client only sees the whole. A phase
is timed with ``phase("selection")``; the durations are collected only while a
request's collector is active (``RESPONDER_SERVER_TIMING``, off by default: the
header tells a caller how long our queries took), otherwise ``phase`` costs one
context-variable lookup. The collector is one mutable object per request, so a
phase timed in a dependency's teardown (the commit) or in a copied context still
lands in it. Beside each phase's wall time, ``<name>-cpu`` is the CPU time the
event loop's thread spent meanwhile (``time.thread_time``): its own work plus that of
any other task that ran during the phase's awaits, so a phase whose wall time is far
above its CPU time was waiting (on the database, or for the loop). Standard header
(W3C Server Timing) rather than a metric: it pairs each breakdown with the very
request the client timed, which a histogram cannot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Timings:
    """One request's phases: name → milliseconds, summed when a phase repeats."""

    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.thread_time)
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float, cpu_seconds: float) -> None:
        for key, value in ((name, seconds), (f"{name}-cpu", cpu_seconds)):
            self.phases[key] = self.phases.get(key, 0.0) + value * 1000

    def since_start(self, name: str) -> None:
        """Record ``name`` as the time from the collector's start to now (an offset)."""
        self.phases[name] = (time.perf_counter() - self.started) * 1000
        self.phases[f"{name}-cpu"] = (time.thread_time() - self.cpu_started) * 1000

    def header(self) -> str:
        """The ``Server-Timing`` value: ``name;dur=1.23`` per phase, in recorded order."""
        return ", ".join(f"{name};dur={ms:.2f}" for name, ms in self.phases.items())


_current: ContextVar[Timings | None] = ContextVar("responder_timings", default=None)


def collect() -> Timings:
    """Start collecting for the current request (the HTTP layer calls this)."""
    timings = Timings()
    _current.set(timings)
    return timings


def current() -> Timings | None:
    return _current.get()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as ``name`` when a collector is active; free otherwise."""
    timings = _current.get()
    if timings is None:
        yield
        return
    started, cpu_started = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        timings.add(name, time.perf_counter() - started, time.thread_time() - cpu_started)


def mark(name: str) -> None:
    """Record the offset of this moment from the request's start (``handler`` start)."""
    timings = _current.get()
    if timings is not None:
        timings.since_start(name)
