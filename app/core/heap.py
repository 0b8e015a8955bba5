"""The garbage collector set for a long-running service process.

Measured in the ``serve`` process during the benchmark's location updates (a
``gc.callbacks`` hook timing each collection's CPU, docs/benchmarks.md, "third
pass"), CPython's default collector cost a fifth of every update's CPU, 260–280 µs:

- **Full collections** (the oldest generation), every ~750 requests, walked all of
  the ~210,000 objects start-up leaves alive (modules, SQLAlchemy's mappings,
  pydantic's validators, FastAPI's routes): 190–210 µs per update. None of them
  is ever garbage while the process serves, so they are moved to the permanent
  generation (``gc.freeze``, the standard library's mechanism for exactly this),
  after a collection that frees what start-up left over: 9–19 µs.
- **Young collections**, every 700 net allocations (CPython's default since the
  1990s), ran once every six or seven updates, each walking the objects of every
  request in flight: 50–75 µs per update with the next generation's. Almost everything a
  request allocates is freed by reference counting when it ends, so a threshold of
  ``YOUNG_THRESHOLD`` is crossed about once per 6,000 updates: under 1 µs.

What requests allocate is still collected; a cycle of garbage waits at most
``YOUNG_THRESHOLD`` allocations longer. On the way out the collector is set back
(``gc.unfreeze``, the previous thresholds), so a process that builds and stops
apps repeatedly (the tests) collects the stopped ones.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000
"""Net allocations of container objects between two young-generation collections."""


@contextmanager
def serving_heap() -> Iterator[None]:
    """Exclude everything alive now from later collections and collect the young
    generation less often, until the block ends."""
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
