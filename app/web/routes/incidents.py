"""The dispatcher's pages: the centre's board, an incident with its map, and its actions.

Every action goes through the API's own schema and the same dispatch service
(``create_incident``, ``update_incident``, ``cancel_incident``, ``close_incident``);
another centre's incident is "not found", as in the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import RuntimeDep, SessionDep
from app.api.schemas.incident_actions import CancelRequest, CloseRequest, IncidentUpdate
from app.api.schemas.incidents import IncidentCreate
from app.core.errors import Conflict, InvalidInput
from app.registry.audit import record_audit
from app.registry.staff import principal_of
from app.registry.web_sessions import StaffSession
from app.runtime import Runtime
from app.web.auth import DispatcherStaffDep, see_other
from app.web.forms import FormErrors, form_data, number, text_field, validate
from app.web.i18n import _
from app.web.labels import (
    band_names,
    event_text,
    flag_names,
    kind_names,
    not_alerted_reason,
    role_names,
    status_names,
)
from app.web.live import event_stream, live_updates
from app.web.pages import CONSOLE, render, render_html
from dispatch.alerting import SCENE_FLAGS, create_incident
from dispatch.board import aed_position, board_incident_ids, distance_bands, events_after
from dispatch.lifecycle import cancel_incident, close_incident, update_incident
from dispatch.views import IncidentSnapshot, incident_view, incident_views, visible_incident

router = APIRouter(prefix=f"{CONSOLE}/incidents", include_in_schema=False)

RECENT = 20
TIMELINE_BATCH = 500
COORDINATE_FIELDS = {"location.lat": "lat", "location.lon": "lon", "location": "lat"}


def _centre(staff: StaffSession) -> str:
    assert staff.user.centre is not None  # the schema requires one for a dispatcher
    return staff.user.centre


def _labels() -> dict[str, Any]:
    return {
        "kinds": kind_names(),
        "statuses": status_names(),
        "roles": role_names(),
        "band_names": band_names(),
        "flags": flag_names(),
        "reason": not_alerted_reason,
        "event_text": event_text,
    }


async def _board(session: AsyncSession, centre: str) -> dict[str, Any]:
    open_ids, recent_ids = await board_incident_ids(session, centre=centre, recent_limit=RECENT)
    views = {
        view.id: view for view in await incident_views(session, incident_ids=open_ids + recent_ids)
    }
    return {
        "open": [views[i] for i in open_ids if i in views],
        "recent": [views[i] for i in recent_ids if i in views],
        **_labels(),
    }


@router.get("")
async def board(request: Request, staff: DispatcherStaffDep, session: SessionDep) -> Response:
    return render(request, "incidents.html", await _board(session, _centre(staff)))


@router.get("/stream")
async def board_stream(
    request: Request, staff: DispatcherStaffDep, runtime: RuntimeDep
) -> Response:
    centre = _centre(staff)

    async def updates(session: AsyncSession) -> list[tuple[str, str, str, int | None]]:
        html = render_html(request, "partials/board.html", await _board(session, centre))
        return [("board", "replace", html, None)]

    return event_stream(live_updates(request, runtime, incident_id=None, render=updates))


def _new_form(now: datetime) -> dict[str, Any]:
    return {
        "external_ref": f"C-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}",
        "kind": "cardiac_arrest",
        "address": "",
        "access_notes": "",
        "lat": "",
        "lon": "",
        "flags": [],
    }


def _new_page(
    request: Request, form: dict[str, Any], errors: dict[str, str], status: int = 200
) -> Response:
    context = {
        "form": form,
        "errors": errors,
        "centre_lat": 59.3326,
        "centre_lon": 18.0649,
        **_labels(),
    }
    return render(request, "incident_new.html", context, status=status)


@router.get("/new")
async def new_incident(
    request: Request, staff: DispatcherStaffDep, runtime: RuntimeDep
) -> Response:
    return _new_page(request, _new_form(runtime.clock.now()), {})


@router.post("")
async def post_incident(
    request: Request, staff: DispatcherStaffDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    typed = {
        "external_ref": text_field(form, "external_ref"),
        "kind": text_field(form, "kind"),
        "address": text_field(form, "address"),
        "access_notes": text_field(form, "access_notes"),
        "lat": text_field(form, "lat"),
        "lon": text_field(form, "lon"),
        "flags": [flag for flag in form.getlist("flags") if flag in SCENE_FLAGS],
    }
    try:
        body = validate(
            IncidentCreate,
            {
                "external_ref": typed["external_ref"],
                "kind": typed["kind"],
                "address": typed["address"],
                "access_notes": typed["access_notes"] or None,
                "location": {"lat": number(form, "lat"), "lon": number(form, "lon")},
                "flags": dict.fromkeys(typed["flags"], True),
            },
            aliases=COORDINATE_FIELDS,
        )
        result = await create_incident(
            session,
            centre=_centre(staff),
            request=body.to_request(),
            settings=runtime.settings,
            now=runtime.clock.now(),
            created_by=staff.user.id,
        )
        if result.created:
            await record_audit(
                session,
                actor=principal_of(staff.user),
                action="incident.create",
                target_type="incident",
                target_id=result.incident.id,
            )
    except FormErrors as invalid:
        return _new_page(request, typed, invalid.errors, status=422)
    except Conflict:
        errors = {"external_ref": _("This reference is already used for another incident.")}
        return _new_page(request, typed, errors, status=409)
    return see_other(request, f"{CONSOLE}/incidents/{result.incident.id}")


async def _incident_page(
    request: Request,
    session: AsyncSession,
    staff: StaffSession,
    incident_id: uuid.UUID,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    await visible_incident(session, incident_id=incident_id, caller=principal_of(staff.user))
    view = await incident_view(session, incident_id=incident_id)
    events = await events_after(session, incident_id=incident_id, after_id=0, limit=TIMELINE_BATCH)
    markers: list[dict[str, Any]] = [
        {
            "lat": view.location.lat,
            "lon": view.location.lon,
            "label": view.address,
            "kind": "incident",
            "radius": view.radius_m,
        }
    ]
    aed = await aed_position(
        session, aed_id=view.nearest_aed.id if view.nearest_aed is not None else None
    )
    if aed is not None and view.nearest_aed is not None:
        markers.append(
            {"lat": aed.lat, "lon": aed.lon, "label": view.nearest_aed.address, "kind": "aed"}
        )
    context = {
        "incident": view,
        "bands": await distance_bands(session, incident_id=incident_id),
        "events": events,
        "last_event_id": events[-1].id if events else 0,
        "markers": markers,
        "form": form
        or {
            "address": view.address,
            "access_notes": view.access_notes or "",
            "lat": view.location.lat,
            "lon": view.location.lon,
        },
        "errors": errors or {},
        **_labels(),
    }
    return render(request, "incident.html", context, status=status)


@router.get("/{incident_id}")
async def incident(
    request: Request, incident_id: uuid.UUID, staff: DispatcherStaffDep, session: SessionDep
) -> Response:
    return await _incident_page(request, session, staff, incident_id)


@router.get("/{incident_id}/stream")
async def incident_stream(
    request: Request,
    incident_id: uuid.UUID,
    staff: DispatcherStaffDep,
    session: SessionDep,
    runtime: RuntimeDep,
    after: int = 0,
) -> Response:
    await visible_incident(session, incident_id=incident_id, caller=principal_of(staff.user))
    last_id = after
    if (resumed := request.headers.get("last-event-id", "")).isdigit():
        last_id = int(resumed)

    async def updates(session: AsyncSession) -> list[tuple[str, str, str, int | None]]:
        nonlocal last_id
        view: IncidentSnapshot = await incident_view(session, incident_id=incident_id)
        context = {
            "incident": view,
            "bands": await distance_bands(session, incident_id=incident_id),
            **_labels(),
        }
        out: list[tuple[str, str, str, int | None]] = [
            (
                "summary",
                "replace",
                render_html(request, "partials/incident_summary.html", context),
                None,
            )
        ]
        events = await events_after(
            session, incident_id=incident_id, after_id=last_id, limit=TIMELINE_BATCH
        )
        if events:
            last_id = events[-1].id
            html = render_html(request, "partials/timeline.html", {"events": events, **_labels()})
            out.append(("timeline", "append", html, last_id))
        return out

    return event_stream(live_updates(request, runtime, incident_id=incident_id, render=updates))


async def _act(
    request: Request,
    session: AsyncSession,
    staff: StaffSession,
    incident_id: uuid.UUID,
    action: Any,
    typed: dict[str, Any],
    *,
    audit: str,
) -> Response:
    """Run one action, audited with the person; a refusal is shown with what was typed."""
    await visible_incident(session, incident_id=incident_id, caller=principal_of(staff.user))
    try:
        async with session.begin_nested():
            await action()
            await record_audit(
                session,
                actor=principal_of(staff.user),
                action=audit,
                target_type="incident",
                target_id=incident_id,
            )
    except FormErrors as invalid:
        return await _incident_page(
            request, session, staff, incident_id, form=typed, errors=invalid.errors, status=422
        )
    except InvalidInput as invalid:
        errors = FormErrors.of(invalid).errors
        return await _incident_page(
            request, session, staff, incident_id, form=typed, errors=errors, status=422
        )
    except Conflict as conflict:
        errors = {"form": _(conflict.detail)}
        return await _incident_page(
            request, session, staff, incident_id, form=typed, errors=errors, status=409
        )
    return see_other(request, f"{CONSOLE}/incidents/{incident_id}")


async def _update(
    request: Request,
    session: AsyncSession,
    staff: StaffSession,
    runtime: Runtime,
    incident_id: uuid.UUID,
    typed: dict[str, Any],
    changes: Callable[[], IncidentUpdate],
    *,
    audit: str,
) -> Response:
    """An update through the API's own schema and ``dispatch.lifecycle.update_incident``."""

    async def action() -> None:
        await update_incident(
            session,
            incident_id=incident_id,
            centre=_centre(staff),
            changes=changes().to_changes(),
            now=runtime.clock.now(),
            settings=runtime.settings,
        )

    return await _act(request, session, staff, incident_id, action, typed, audit=audit)


@router.post("/{incident_id}/details")
async def update_details(
    request: Request,
    incident_id: uuid.UUID,
    staff: DispatcherStaffDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await form_data(request)
    typed = {
        "address": text_field(form, "address"),
        "access_notes": text_field(form, "access_notes"),
        "lat": "",
        "lon": "",
    }

    return await _update(
        request,
        session,
        staff,
        runtime,
        incident_id,
        typed,
        lambda: validate(
            IncidentUpdate,
            {"address": typed["address"], "access_notes": typed["access_notes"] or None},
        ),
        audit="incident.update",
    )


@router.post("/{incident_id}/location")
async def move_pin(
    request: Request,
    incident_id: uuid.UUID,
    staff: DispatcherStaffDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await form_data(request)
    current = await incident_view(session, incident_id=incident_id)
    typed = {
        "address": current.address,
        "access_notes": current.access_notes or "",
        "lat": text_field(form, "lat"),
        "lon": text_field(form, "lon"),
    }

    return await _update(
        request,
        session,
        staff,
        runtime,
        incident_id,
        typed,
        lambda: validate(
            IncidentUpdate,
            {"location": {"lat": number(form, "lat"), "lon": number(form, "lon")}},
            aliases=COORDINATE_FIELDS,
        ),
        audit="incident.move",
    )


@router.post("/{incident_id}/cancel")
async def cancel(
    request: Request,
    incident_id: uuid.UUID,
    staff: DispatcherStaffDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await form_data(request)

    async def action() -> None:
        body = validate(CancelRequest, {"reason": text_field(form, "reason") or None})
        await cancel_incident(
            session,
            incident_id=incident_id,
            centre=_centre(staff),
            reason=body.reason,
            now=runtime.clock.now(),
        )

    return await _act(request, session, staff, incident_id, action, {}, audit="incident.cancel")


@router.post("/{incident_id}/close")
async def close(
    request: Request,
    incident_id: uuid.UUID,
    staff: DispatcherStaffDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await form_data(request)

    async def action() -> None:
        body = validate(CloseRequest, {"outcome": text_field(form, "outcome") or None})
        await close_incident(
            session,
            incident_id=incident_id,
            centre=_centre(staff),
            outcome=body.outcome,
            now=runtime.clock.now(),
            settings=runtime.settings,
        )

    return await _act(request, session, staff, incident_id, action, {}, audit="incident.close")
