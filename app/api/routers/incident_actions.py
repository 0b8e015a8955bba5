"""Acting on an incident after creation: update, cancel, close, and its event stream.

Changes are the dispatch centre's (a dispatcher of another centre gets 404); the
event stream is readable by the centre and by administrators.

The stream is server-sent events over a plain ``StreamingResponse`` (no extra
dependency): each ``incident_event`` row is one SSE event whose id is its number
within the incident (``seq``, in commit order: ``dispatch.events``), so
``Last-Event-ID`` replays exactly what a reconnecting client missed. New events
are announced through the database (``NOTIFY responder_events``), so a change made
by any process reaches every stream; the process's :class:`EventHub` holds the one
LISTEN connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.deps import DispatcherDep, ReaderDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.events import event_stream_schema
from app.api.schemas.incident_actions import CancelRequest, CloseRequest, IncidentUpdate
from app.api.schemas.incidents import IncidentView
from app.core.models import IncidentEvent
from dispatch.events import EventHub, events_after
from dispatch.lifecycle import cancel_incident, close_incident, update_incident
from dispatch.views import incident_view, visible_incident

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

KEEPALIVE_S = 15.0
FALLBACK_POLL_S = 2.0
REPLAY_BATCH = 500
ACTION_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422)


async def _current_view(session: AsyncSession, incident_id: uuid.UUID) -> IncidentView:
    """Every action answers with the incident as it is after the action."""
    return IncidentView.model_validate(await incident_view(session, incident_id=incident_id))


@router.patch(
    "/{incident_id}",
    response_model=IncidentView,
    responses=ACTION_ERRORS,
)
async def patch_incident(
    incident_id: uuid.UUID,
    body: IncidentUpdate,
    caller: DispatcherDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> IncidentView:
    """Address or access notes reach responders by SMS; an excluding flag stands all down."""
    await update_incident(
        session,
        incident_id=incident_id,
        centre=caller.centre,
        changes=body.to_changes(),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return await _current_view(session, incident_id)


@router.post(
    "/{incident_id}/cancel",
    response_model=IncidentView,
    responses=ACTION_ERRORS,
)
async def cancel(
    incident_id: uuid.UUID,
    caller: DispatcherDep,
    session: SessionDep,
    runtime: RuntimeDep,
    body: CancelRequest | None = None,
) -> IncidentView:
    """Every open alert gets a cancellation SMS; cancelling again changes nothing."""
    await cancel_incident(
        session,
        incident_id=incident_id,
        centre=caller.centre,
        reason=body.reason if body else None,
        now=runtime.clock.now(),
    )
    return await _current_view(session, incident_id)


@router.post(
    "/{incident_id}/close",
    response_model=IncidentView,
    responses=ACTION_ERRORS,
)
async def close(
    incident_id: uuid.UUID,
    caller: DispatcherDep,
    session: SessionDep,
    runtime: RuntimeDep,
    body: CloseRequest | None = None,
) -> IncidentView:
    """The incident ends; responders are thanked with the follow-up contact."""
    await close_incident(
        session,
        incident_id=incident_id,
        centre=caller.centre,
        outcome=body.outcome if body else None,
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return await _current_view(session, incident_id)


def format_event(event: IncidentEvent) -> str:
    data = json.dumps(
        {"type": event.type, "at": event.created_at.isoformat(), **event.data},
        separators=(",", ":"),
    )
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n"


async def incident_event_stream(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    incident_id: uuid.UUID,
    after_seq: int,
    hub: EventHub | None,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[str]:
    """Events numbered after ``after_seq``, then each new one as it commits, until cancelled."""
    waiter = hub.subscribe(incident_id) if hub is not None else None
    last_seq = after_seq
    try:
        yield "retry: 2000\n\n"
        while hub is None or not hub.stopping:
            if waiter is not None:
                waiter.clear()
            async with session_factory() as session:
                events = await events_after(
                    session, incident_id=incident_id, after_seq=last_seq, limit=REPLAY_BATCH
                )
            for event in events:
                last_seq = event.seq
                yield format_event(event)
            if len(events) == REPLAY_BATCH:
                continue
            if waiter is None:
                await asyncio.sleep(FALLBACK_POLL_S)
                continue
            try:
                await asyncio.wait_for(waiter.wait(), keepalive_s)
            except TimeoutError:
                yield ": keep-alive\n\n"
    finally:
        if hub is not None and waiter is not None:
            hub.unsubscribe(incident_id, waiter)


@router.get(
    "/{incident_id}/events",
    response_class=Response,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": event_stream_schema()}},
            "description": "Server-sent events: one per alert or incident change, with ids",
        },
        **error_responses(401, 403, 404, 422),
    },
)
async def incident_events(
    incident_id: uuid.UUID,
    caller: ReaderDep,
    session: SessionDep,
    runtime: RuntimeDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Every change as it happens; send ``Last-Event-ID`` to replay what was missed."""
    await visible_incident(session, incident_id=incident_id, caller=caller)
    after_seq = 0
    if last_event_id is not None:
        with contextlib.suppress(ValueError):
            after_seq = max(0, int(last_event_id.strip()))
    stream = incident_event_stream(
        runtime.session_factory, incident_id=incident_id, after_seq=after_seq, hub=runtime.events
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
