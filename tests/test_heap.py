"""A serving process keeps its start-up objects out of the collector's way."""

from __future__ import annotations

import gc

from app.api.main import create_app
from app.core.heap import YOUNG_THRESHOLD
from tests.factories import make_settings


async def test_a_running_app_freezes_what_start_up_built_and_sets_the_collector_back_when_it_stops(
    database_url: str,
) -> None:
    before = gc.get_threshold()
    app = create_app(make_settings(), database_url=database_url, run_worker=False)
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        routes_tracked = any(route is app.routes[0] for route in gc.get_objects())
        young_threshold = gc.get_threshold()[0]
    assert frozen > 0
    assert not routes_tracked  # built before the start, so never walked by a collection
    assert young_threshold == YOUNG_THRESHOLD
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
