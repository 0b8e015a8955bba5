"""Incidents: created by a dispatch centre, read by it and by administrators.

A dispatcher sees only its own centre's incidents (another centre's answer 404, so
their existence is not revealed); an administrator sees all. ``explain`` is for
administrators only: distances reveal where people live.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, BackgroundTasks, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import AdminDep, DispatcherDep, ReaderDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.common import CursorQuery, LimitQuery, Page, page_of
from app.api.schemas.incidents import (
    AlertView,
    IncidentCreate,
    IncidentView,
    SelectionExplanation,
)
from app.core.db import unit_of_work, when_transaction_ends
from app.core.timing import mark, phase
from app.registry.access import PersonalRead, record_reads
from app.registry.keys import Principal
from app.runtime import DetachedTasks, Runtime
from dispatch.alerting import create_incident
from dispatch.selection import explain_selection, record_selection, selection_ran
from dispatch.views import (
    IncidentSnapshot,
    alert_views,
    incident_view,
    new_incident_view,
    visible_incident,
)
from dispatch.views import list_incidents as list_visible_incidents

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

IncidentStatus = Annotated[
    str | None,
    Query(pattern="^(alerting|not_alerted|cancelled|closed)$", description="only this status"),
]


async def _log_contact_reads(
    session: AsyncSession,
    runtime: Runtime,
    caller: Principal,
    contacts: list[tuple[uuid.UUID, uuid.UUID]],
) -> None:
    """Who looked: ``caller`` saw these (incident, volunteer) names and phone numbers."""
    await record_reads(
        session,
        reader=caller,
        reads=[
            PersonalRead(volunteer_id, "contacts", incident_id)
            for incident_id, volunteer_id in contacts
        ],
        now=runtime.clock.now(),
        zone=runtime.settings.zone,
    )


def _responder_contacts(
    views: Sequence[IncidentSnapshot],
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    return [
        (view.id, responder.volunteer_id)
        for view in views
        for responder in view.responders
        if responder.phone is not None
    ]


SELECTION_RECORD_AFTER_S = 2.0
"""The record waits until the incident's alerts are out. Its CPU (as much as the POST's
own, docs/benchmarks.md) would otherwise share ``serve``'s event loop with the
in-process worker building those very requests; ``/explain`` writes a record that is
not there yet itself, and shutdown starts a waiting one at once."""


async def _record_selection_after_commit(
    runtime: Runtime, incident_id: uuid.UUID, selected_at: datetime
) -> None:
    """Background: a failure here costs an explanation (rebuilt on demand), never an alert."""
    try:
        async with unit_of_work(runtime.session_factory) as session:
            await record_selection(
                session, incident_id=incident_id, settings=runtime.settings, now=selected_at
            )
    except Exception:  # noqa: BLE001 - logged; explain rebuilds the record when asked
        log.exception("selection record not written", incident_id=str(incident_id))


async def _detach_selection_record(
    detached: DetachedTasks, runtime: Runtime, incident_id: uuid.UUID, selected_at: datetime
) -> None:
    """Async so Starlette calls it on the loop (a sync task would run in a thread)."""
    detached.spawn(
        _record_selection_after_commit(runtime, incident_id, selected_at),
        after_s=SELECTION_RECORD_AFTER_S,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IncidentView,
    responses={
        200: {"model": IncidentView, "description": "Same external_ref and body: the stored one"},
        **error_responses(400, 401, 403, 409, 413, 415, 422),
    },
)
async def post_incident(
    body: IncidentCreate,
    caller: DispatcherDep,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
    background: BackgroundTasks,
) -> IncidentView:
    """Create the incident and queue its alerts in one transaction (committed before 201)."""
    assert caller.centre is not None
    mark("handler")
    now = runtime.clock.now()
    request = body.to_request()
    # This process's worker sends the burst the moment the transaction commits.
    worker = runtime.worker
    lease = None if worker is None else worker.reserve(runtime.settings.batch)
    if worker is not None and lease is not None:
        when_transaction_ends(session, functools.partial(worker.start_leased, lease))
    result = await create_incident(
        session,
        centre=caller.centre,
        request=request,
        settings=runtime.settings,
        now=now,
        created_by=caller.key_id,
        lease=lease,
    )
    incident = result.incident
    response.headers["Location"] = f"/v1/incidents/{incident.id}"
    if not result.created:
        response.status_code = status.HTTP_200_OK
    elif selection_ran(incident):
        # After the commit (a BackgroundTask runs once the response is sent), but
        # detached: a CAD reusing its connection never waits behind the record.
        detached = runtime.detached
        if detached is None:
            background.add_task(_record_selection_after_commit, runtime, incident.id, now)
        else:
            background.add_task(_detach_selection_record, detached, runtime, incident.id, now)
    with phase("view"):
        view = (
            new_incident_view(
                incident, location=request.location, aed=result.aed, alerted=result.alerted
            )
            if result.created
            else await incident_view(session, incident_id=incident.id)
        )
    return IncidentView.model_validate(view)


@router.get(
    "",
    response_model=Page[IncidentView],
    responses=error_responses(401, 403, 422),
)
async def list_incidents(
    caller: ReaderDep,
    session: SessionDep,
    runtime: RuntimeDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status_filter: Annotated[IncidentStatus, Query(alias="status")] = None,
) -> Page[IncidentView]:
    """Newest first."""
    page = await list_visible_incidents(
        session, caller=caller, status=status_filter, cursor=cursor, limit=limit
    )
    await _log_contact_reads(session, runtime, caller, _responder_contacts(page.rows))
    return page_of(page, IncidentView.model_validate)


@router.get(
    "/{incident_id}",
    response_model=IncidentView,
    responses=error_responses(401, 403, 404, 422),
)
async def get_incident(
    incident_id: uuid.UUID, caller: ReaderDep, session: SessionDep, runtime: RuntimeDep
) -> IncidentView:
    """The incident now; the first read of each responder's contact a day is logged."""
    await visible_incident(session, incident_id=incident_id, caller=caller)
    view = await incident_view(session, incident_id=incident_id)
    await _log_contact_reads(session, runtime, caller, _responder_contacts([view]))
    return IncidentView.model_validate(view)


@router.get(
    "/{incident_id}/alerts",
    response_model=list[AlertView],
    responses=error_responses(401, 403, 404, 422),
)
async def get_incident_alerts(
    incident_id: uuid.UUID, caller: ReaderDep, session: SessionDep, runtime: RuntimeDep
) -> list[AlertView]:
    """Every alert, nearest first; names and phones only of volunteers who accepted;
    for a dispatcher, identity and exact distance only of those, a band for the rest.
    The first read of each responder's contact a day is logged."""
    await visible_incident(session, incident_id=incident_id, caller=caller)
    alerts = await alert_views(session, incident_id=incident_id, caller=caller)
    contacts = [
        (incident_id, alert.volunteer_id)
        for alert in alerts
        if alert.phone is not None and alert.volunteer_id is not None
    ]
    await _log_contact_reads(session, runtime, caller, contacts)
    return [AlertView.model_validate(alert) for alert in alerts]


@router.get(
    "/{incident_id}/explain",
    response_model=SelectionExplanation,
    responses=error_responses(401, 403, 404, 422),
)
async def explain(
    incident_id: uuid.UUID,
    volunteer_id: Annotated[uuid.UUID, Query(description="the volunteer to explain")],
    caller: AdminDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> SelectionExplanation:
    """Alerted, or the first rule that excluded the volunteer, from the recorded selection."""
    incident = await visible_incident(session, incident_id=incident_id, caller=caller)
    await record_reads(
        session,
        reader=caller,
        reads=[PersonalRead(volunteer_id, "explain", incident_id)],
        now=runtime.clock.now(),
        zone=runtime.settings.zone,
    )
    answer = await explain_selection(
        session, incident=incident, volunteer_id=volunteer_id, settings=runtime.settings
    )
    return SelectionExplanation(
        incident_id=incident.id,
        volunteer_id=volunteer_id,
        outcome=answer.outcome,
        distance_m=None if answer.distance_m is None else round(answer.distance_m),
        selection_ran=answer.selection_ran,
        not_alerted_reason=incident.not_alerted_reason,
        alerted_as=answer.alerted_as,
        alerted_at=answer.alerted_at,
    )
