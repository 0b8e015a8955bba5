"""The canary: an exercise incident that alerts one test phone (``responder canary``).

Administrators only: a run enrols the test phone as a canary volunteer (or finds
it) and posts the exercise, both audited in one transaction. The run is then
followed with ``GET /v1/incidents/{id}/alerts`` and ended with ``close`` here,
which ends only canary incidents. Canary incidents belong to the centre
``canary``, so no dispatch centre's list or duplicate rule ever sees them.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from app.api.deps import AdminDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.canary import CanaryRun
from app.api.schemas.incidents import IncidentView
from app.registry.canary import enrol_canary
from dispatch.alerting import NewIncident, create_incident
from dispatch.lifecycle import close_incident
from dispatch.views import incident_view

CANARY_CENTRE = "canary"
CANARY_ADDRESS = "Canary: a test phone, not a patient"

router = APIRouter(prefix="/v1/canary", tags=["canary"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IncidentView,
    responses=error_responses(400, 401, 403, 409, 413, 415, 422),
)
async def post_canary(
    body: CanaryRun, caller: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> IncidentView:
    """Enrol (or find) the canary volunteer of the phone and alert it, and it alone."""
    settings = runtime.settings
    now = runtime.clock.now()
    location = body.location.to_latlon()
    volunteer = await enrol_canary(
        session,
        phone=body.phone,
        location=location,
        actor=caller,
        region=settings.default_region,
        timezone=settings.timezone,
        now=now,
    )
    result = await create_incident(
        session,
        centre=CANARY_CENTRE,
        request=NewIncident(
            external_ref=f"canary-{uuid.uuid4()}",
            kind="cardiac_arrest",
            location=location,
            address=CANARY_ADDRESS,
            exercise=True,
            canary_volunteer_id=volunteer.id,
        ),
        settings=settings,
        now=now,
        created_by=caller.key_id,
    )
    return IncidentView.model_validate(await incident_view(session, incident_id=result.incident.id))


@router.post(
    "/{incident_id}/close",
    response_model=IncidentView,
    responses=error_responses(401, 403, 404, 422),
)
async def close_canary(
    incident_id: uuid.UUID, caller: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> IncidentView:
    """End a canary incident without a text (a canary never holds a role); 404 for
    any other incident. Closing again changes nothing."""
    await close_incident(
        session,
        incident_id=incident_id,
        centre=CANARY_CENTRE,
        outcome="canary",
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return IncidentView.model_validate(await incident_view(session, incident_id=incident_id))
