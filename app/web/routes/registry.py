"""Coordinator pages of the registry: certifications, AEDs (and volunteers, below).

Each form is turned into the API's input schema and handed to the same
``app.registry`` service; what the service refuses is shown next to its field.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import RuntimeDep, SessionDep
from app.api.routers.certifications import attachment_response
from app.api.schemas.aeds import AedCreate, AedUpdate, validate_aed_entries
from app.api.schemas.certifications import DecisionRequest, RevokeRequest
from app.api.schemas.volunteers import VolunteerUpdate
from app.api.uploads import MAX_IMPORT_BYTES
from app.core.errors import Conflict, InvalidInput, PayloadTooLarge
from app.registry.access import PersonalRead, record_reads
from app.registry.aeds import (
    create_aed,
    get_aed,
    import_aeds,
    list_aeds,
    parse_access,
    read_aed_file,
    update_aed,
)
from app.registry.attachments import attachment_types, read_attachment
from app.registry.certifications import (
    Decision,
    certifications_of,
    decide,
    list_certifications,
)
from app.registry.directory import (
    VolunteerFilter,
    latest_alerts,
    search_volunteers,
    volunteer_names,
)
from app.registry.phones import normalise_phone
from app.registry.places import places_of
from app.registry.staff import principal_of
from app.registry.volunteers import (
    get_volunteer,
    is_volunteer_eligible,
    set_status,
    update_volunteer,
)
from app.web.auth import CoordinatorDep, see_other
from app.web.forms import FormErrors, form_data, number, text_field, upload_field, validate
from app.web.i18n import _
from app.web.labels import (
    access_text,
    aed_statuses,
    certification_kinds,
    certification_statuses,
    contact_preference_names,
    role_names,
    volunteer_filters,
    volunteer_status,
)
from app.web.pages import CONSOLE, render
from app.web.routes.account import safe_next
from dispatch.responses import erase_and_release

router = APIRouter(prefix=CONSOLE, include_in_schema=False)

PAGE = 50
DEFAULT_RENEWAL_DAYS = 30
MAP_CENTRE = (59.3326, 18.0649)
ALERTS_SHOWN = 20
REASON_MAX = 1000
COORDINATES = {"location.lat": "lat", "location.lon": "lon", "location": "lat"}


def certification_labels() -> dict[str, Any]:
    return {"cert_kinds": certification_kinds(), "cert_statuses": certification_statuses()}


@router.get("/certifications")
async def certifications(
    request: Request,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    view: str = Query(default="pending", pattern="^(pending|renewals)$"),
    days: int = Query(default=DEFAULT_RENEWAL_DAYS, ge=0, le=3650),
    cursor: str | None = Query(default=None, max_length=200),
) -> Response:
    today = runtime.clock.now().astimezone(runtime.settings.zone).date()
    page = await list_certifications(
        session,
        status="pending" if view == "pending" else None,
        expiring_within_days=days if view == "renewals" else None,
        volunteer_id=None,
        today=today,
        cursor=cursor,
        limit=PAGE,
    )
    next_url = None
    if page.next_cursor:
        next_url = f"{CONSOLE}/certifications?" + urlencode(
            {"view": view, "days": days, "cursor": page.next_cursor}
        )
    context = {
        "certifications": page.rows,
        "attachments": await attachment_types(session, [row.id for row in page.rows]),
        "names": await volunteer_names(session, (row.volunteer_id for row in page.rows)),
        "show_volunteer": True,
        "view": view,
        "days": days,
        "errors": {},
        "next_url": next_url,
        "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **certification_labels(),
    }
    return render(request, "certifications.html", context)


@router.get("/certifications/{certification_id}/attachment")
async def certification_attachment(
    certification_id: uuid.UUID, staff: CoordinatorDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """The photo or PDF a volunteer attached, as a download (never shown inline); logged."""
    file = await read_attachment(
        session,
        certification_id=certification_id,
        reader=principal_of(staff.user),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return attachment_response(file)


@router.post("/certifications/{certification_id}/{decision}")
async def decide_certification(
    request: Request,
    certification_id: uuid.UUID,
    decision: Decision,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    """Verify, reject or revoke (a reason is required to revoke), then back to the list."""
    form = await form_data(request)
    back = safe_next(text_field(form, "back"))
    schema: type[RevokeRequest | DecisionRequest] = (
        RevokeRequest if decision == "revoke" else DecisionRequest
    )
    try:
        body = validate(schema, {"reason": text_field(form, "reason") or None})
        await decide(
            session,
            certification_id=certification_id,
            decision=decision,
            reason=body.reason,
            actor=principal_of(staff.user),
            now=runtime.clock.now(),
        )
    except FormErrors:
        return refusal(request, _("Give a reason for revoking."), back, status=422)
    except Conflict:
        message = _("Someone changed this in the meantime. Reload the page and look again.")
        return refusal(request, message, back, status=409)
    return see_other(request, back)


def refusal(request: Request, message: str, back: str, *, status: int) -> Response:
    """A refused action whose form sits in a list: the reason, and the way back."""
    return render(request, "refusal.html", {"message": message, "back": back}, status=status)


AED_FIELDS = ("lat", "lon", "address", "description", "access", "status")


def _typed_aed(form: Any) -> dict[str, str]:
    """What was typed, kept on the page when something is refused."""
    return {name: text_field(form, name) for name in AED_FIELDS}


def _aed_body(form: Any, typed: dict[str, str]) -> dict[str, Any]:
    """The API's AED body from the form; opening hours in the CSV import's syntax."""
    try:
        access: Any = parse_access(typed["access"])
    except ValueError as exc:
        raise FormErrors({"access": _(str(exc))}) from None
    return {
        "location": {"lat": number(form, "lat"), "lon": number(form, "lon")},
        "address": typed["address"],
        "description": typed["description"] or None,
        "access": access,
        "status": typed["status"] or "active",
    }


async def _aeds_page(
    request: Request,
    session: SessionDep,
    *,
    cursor: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    **extra: Any,
) -> Response:
    page = await list_aeds(session, status=None, cursor=cursor, limit=PAGE)
    markers = [
        {"lat": aed.location.lat, "lon": aed.location.lon, "label": aed.address, "kind": "aed"}
        for aed in page.rows
    ]
    context = {
        "aeds": page.rows,
        "markers": markers,
        "centre_lat": MAP_CENTRE[0],
        "centre_lon": MAP_CENTRE[1],
        "next_url": f"{CONSOLE}/aeds?{urlencode({'cursor': page.next_cursor})}"
        if page.next_cursor
        else None,
        "form": form
        or {
            "lat": "",
            "lon": "",
            "address": "",
            "description": "",
            "access": "always",
            "status": "active",
        },
        "errors": errors or {},
        "aed_statuses": aed_statuses(),
        "access_text": access_text,
        "report": None,
        "notice": None,
    } | extra
    return render(request, "aeds.html", context, status=status)


@router.get("/aeds")
async def aeds(
    request: Request,
    staff: CoordinatorDep,
    session: SessionDep,
    cursor: str | None = Query(default=None, max_length=200),
) -> Response:
    return await _aeds_page(request, session, cursor=cursor)


@router.post("/aeds")
async def add_aed(request: Request, staff: CoordinatorDep, session: SessionDep) -> Response:
    form = await form_data(request)
    typed = _typed_aed(form)
    try:
        data = validate(AedCreate, _aed_body(form, typed), aliases=COORDINATES)
        async with session.begin_nested():
            created = await create_aed(
                session, data=data.to_domain(), actor=principal_of(staff.user)
            )
    except FormErrors as invalid:
        return await _aeds_page(request, session, form=typed, errors=invalid.errors, status=422)
    except InvalidInput as invalid:
        return await _aeds_page(
            request, session, form=typed, errors=FormErrors.of(invalid).errors, status=422
        )
    notice = _("AED at %(address)s added.") % {"address": created.address}
    return await _aeds_page(request, session, notice=notice)


@router.post("/aeds/import")
async def import_aed_file(request: Request, staff: CoordinatorDep, session: SessionDep) -> Response:
    form = await form_data(request)
    upload = upload_field(form, "file")
    if upload is None or not upload.filename:
        if upload is not None:
            await upload.close()
        return await _aeds_page(request, session, errors={"file": _("Choose a file.")}, status=422)
    try:
        data = await upload.read(MAX_IMPORT_BYTES + 1)
    finally:
        await upload.close()
    if len(data) > MAX_IMPORT_BYTES:
        raise PayloadTooLarge(f"the file exceeds {MAX_IMPORT_BYTES} bytes")
    geojson = upload.filename.lower().endswith((".geojson", ".json"))
    try:
        async with session.begin_nested():
            entries = read_aed_file(data, geojson=geojson)
            valid = validate_aed_entries(entries.entries, errors=entries.errors)
            report = await import_aeds(
                session, aeds=valid, refused=entries.errors, actor=principal_of(staff.user)
            )
    except InvalidInput as invalid:
        message = _("The file could not be read: %(problem)s") % {"problem": invalid.detail}
        return await _aeds_page(request, session, errors={"form": message}, status=422)
    return await _aeds_page(request, session, report=report)


async def _aed_page(
    request: Request,
    session: SessionDep,
    aed_id: uuid.UUID,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    aed = await get_aed(session, aed_id)
    context = {
        "aed": aed,
        "markers": [
            {"lat": aed.location.lat, "lon": aed.location.lon, "label": aed.address, "kind": "aed"}
        ],
        "form": form
        or {
            "lat": str(aed.location.lat),
            "lon": str(aed.location.lon),
            "address": aed.address,
            "description": aed.description or "",
            "access": access_text(aed.access),
            "status": aed.status,
        },
        "errors": errors or {},
        "aed_statuses": aed_statuses(),
    }
    return render(request, "aed.html", context, status=status)


@router.get("/aeds/{aed_id}")
async def aed(
    request: Request, aed_id: uuid.UUID, staff: CoordinatorDep, session: SessionDep
) -> Response:
    return await _aed_page(request, session, aed_id)


@router.post("/aeds/{aed_id}")
async def edit_aed(
    request: Request, aed_id: uuid.UUID, staff: CoordinatorDep, session: SessionDep
) -> Response:
    form = await form_data(request)
    typed = _typed_aed(form)
    try:
        changes = validate(AedUpdate, _aed_body(form, typed), aliases=COORDINATES)
        async with session.begin_nested():
            await update_aed(
                session, aed_id=aed_id, changes=changes.to_changes(), actor=principal_of(staff.user)
            )
    except FormErrors as invalid:
        return await _aed_page(
            request, session, aed_id, form=typed, errors=invalid.errors, status=422
        )
    except InvalidInput as invalid:
        errors = FormErrors.of(invalid).errors
        return await _aed_page(request, session, aed_id, form=typed, errors=errors, status=422)
    return see_other(request, f"{CONSOLE}/aeds")


def _volunteer_labels() -> dict[str, Any]:
    return {
        "volunteer_status": volunteer_status,
        "filter_names": volunteer_filters(),
        "access_text": access_text,
        "roles": role_names(),
        "contact_preferences": contact_preference_names(),
    }


@router.get("/volunteers")
async def volunteers(
    request: Request,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    q: str = Query(default="", max_length=200),
    only: VolunteerFilter = "",
    days: str = Query(default=str(DEFAULT_RENEWAL_DAYS), max_length=5),
    cursor: str | None = Query(default=None, max_length=200),
) -> Response:
    """Search by name, or by number when what was typed is a phone number."""
    now = runtime.clock.now()
    errors: dict[str, str] = {}
    within = int(days) if days.isdigit() else DEFAULT_RENEWAL_DAYS
    if not days.isdigit():
        errors["days"] = _("Enter a whole number.")
    phone = None
    text = q.strip()
    if text and any(char.isdigit() for char in text):
        try:
            phone = normalise_phone(text, region=runtime.settings.default_region)
            text = ""
        except ValueError:
            phone = None
    rows, next_cursor = await search_volunteers(
        session,
        text=text or None,
        phone=phone,
        only=only,
        expiring_within_days=within,
        now=now,
        today=now.astimezone(runtime.settings.zone).date(),
        cursor=cursor,
        limit=PAGE,
    )
    next_url = None
    if next_cursor:
        next_url = f"{CONSOLE}/volunteers?" + urlencode(
            {"q": q, "only": only, "days": days, "cursor": next_cursor}
        )
    context = {
        "volunteers": rows,
        "filters": {"q": q, "only": only, "days": days},
        "errors": errors,
        "next_url": next_url,
        **_volunteer_labels(),
    }
    return render(request, "volunteers.html", context, status=422 if errors else 200)


async def _volunteer_page(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    volunteer_id: uuid.UUID,
    *,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    volunteer = await get_volunteer(session, volunteer_id)
    now = runtime.clock.now()
    places = await places_of(session, volunteer_id)
    held = await certifications_of(session, volunteer_id)
    context = {
        "volunteer": volunteer,
        "eligible": await is_volunteer_eligible(
            session, volunteer_id, now=now, today=now.astimezone(runtime.settings.zone).date()
        ),
        "certifications": held,
        "attachments": await attachment_types(session, [item.id for item in held]),
        "names": {volunteer.id: volunteer.name or ""},
        "show_volunteer": False,
        "back": request.url.path,
        "places": places,
        "markers": [
            {
                "lat": place.location.lat,
                "lon": place.location.lon,
                "label": place.label,
                "kind": "place",
            }
            for place in places
        ],
        "alerts": await latest_alerts(session, volunteer_id=volunteer_id, limit=ALERTS_SHOWN),
        "errors": errors or {},
        **certification_labels(),
        **_volunteer_labels(),
    }
    return render(request, "volunteer.html", context, status=status)


@router.get("/volunteers/{volunteer_id}")
async def volunteer(
    request: Request,
    volunteer_id: uuid.UUID,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    await record_reads(
        session,
        reader=principal_of(staff.user),
        reads=[PersonalRead(volunteer_id, "profile")],
        now=runtime.clock.now(),
        zone=runtime.settings.zone,
    )
    return await _volunteer_page(request, session, runtime, volunteer_id)


@router.post("/volunteers/{volunteer_id}/erase")
async def erase(
    request: Request,
    volunteer_id: uuid.UUID,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    """Only when the coordinator typed the volunteer's number: erasure cannot be undone."""
    form = await form_data(request)
    volunteer = await get_volunteer(session, volunteer_id)
    if text_field(form, "confirm").replace(" ", "") != volunteer.phone:
        errors = {"confirm": _("Type the phone number exactly as shown.")}
        return await _volunteer_page(
            request, session, runtime, volunteer_id, errors=errors, status=422
        )
    await erase_and_release(
        session,
        volunteer_id=volunteer_id,
        actor=principal_of(staff.user),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return see_other(request, f"{CONSOLE}/volunteers")


@router.post("/volunteers/{volunteer_id}/contact")
async def change_contact_preference(
    request: Request,
    volunteer_id: uuid.UUID,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    """How alerts reach the volunteer, validated as ``PATCH /v1/volunteers`` validates it."""
    form = await form_data(request)
    field = "contact_preference"
    try:
        changes = validate(VolunteerUpdate, {field: text_field(form, field)})
    except FormErrors as exc:
        return await _volunteer_page(
            request, session, runtime, volunteer_id, errors=exc.errors, status=422
        )
    await update_volunteer(
        session,
        volunteer_id=volunteer_id,
        changes=changes.to_changes(),
        actor=principal_of(staff.user),
        region=runtime.settings.default_region,
    )
    return see_other(request, f"{CONSOLE}/volunteers/{volunteer_id}")


@router.post("/volunteers/{volunteer_id}/{change}")
async def change_status(
    request: Request,
    volunteer_id: uuid.UUID,
    change: Literal["suspend", "reinstate"],
    staff: CoordinatorDep,
    session: SessionDep,
) -> Response:
    form = await form_data(request)
    reason = text_field(form, "reason") or None
    if reason is not None and len(reason) > REASON_MAX:
        return refusal(request, _("Too long."), f"{CONSOLE}/volunteers/{volunteer_id}", status=422)
    await set_status(
        session,
        volunteer_id=volunteer_id,
        status="suspended" if change == "suspend" else "active",
        reason=reason if change == "suspend" else None,
        actor=principal_of(staff.user),
    )
    return see_other(request, f"{CONSOLE}/volunteers/{volunteer_id}")
