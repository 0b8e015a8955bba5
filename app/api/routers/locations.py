"""The positioning feed: many volunteers' current positions in one request."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import LocatorDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.locations import BulkLocations, BulkResult, bulk_result, validate_feed
from app.registry.locations import record_locations

router = APIRouter(prefix="/v1/locations", tags=["locations"])


@router.post(
    "/bulk",
    response_model=BulkResult,
    responses=error_responses(401, 403, 413, 415, 422, 429),
)
async def post_locations(
    body: BulkLocations, session: SessionDep, runtime: RuntimeDep, locator: LocatorDep
) -> BulkResult:
    """Up to 10,000 fixes, each naming ``volunteer_id`` or ``phone``.

    Each item is judged on its own: ``accepted`` counts the stored ones, ``stale``
    lists (by index) fixes older than the stored one, a newer one for the same
    volunteer in this request, or older than the retention; ``errors`` lists
    invalid items and unknown volunteers. One bad item never refuses the others.
    """
    valid, invalid = validate_feed(body.locations)
    outcome = await record_locations(
        session,
        items=valid,
        now=runtime.clock.now(),
        retention=runtime.settings.live_location_retention,
        region=runtime.settings.default_region,
    )
    return bulk_result(outcome, invalid)
