"""The volunteers' own pages: ``/join`` (sign-up), the SMS code, ``/me`` (my page).

Thin, like the console: each form is read into the API's own schema
(``VolunteerCreate``, ``CertificationCreate``, ``PlaceCreate``, ``ReportIn``), the
same registry service as the API does the work, and a template shows the result.
An error re-renders the page with the message next to its field and what was
typed kept; the request's transaction rolls back, except for a wrong code, whose
try must count (``check_code`` returns rather than raises).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from app.api.deps import RuntimeDep, SessionDep
from app.api.schemas.certifications import CertificationCreate
from app.api.schemas.me import ReportIn
from app.api.schemas.places import PlaceCreate
from app.api.schemas.volunteers import VolunteerCreate, VolunteerUpdate
from app.core.errors import InvalidInput, PayloadTooLarge, RateLimited
from app.core.schedule import DAYS
from app.registry import (
    certifications,
    eligibility,
    export,
    places,
    reports,
    signup,
    volunteers,
)
from app.registry.audit import VolunteerSelf
from app.registry.web_sessions import VolunteerSession, open_volunteer_session, revoke_session
from app.runtime import Runtime
from app.web.auth import see_other
from app.web.forms import FormErrors, form_data, number, text_field, upload_field, validate
from app.web.i18n import _
from app.web.labels import contact_preference_names
from app.web.pages import JOIN, ME, ME_HOME, render
from app.web.volunteer_auth import (
    ME_COOKIE,
    PagesCsrfDep,
    VolunteerSessionDep,
    clear_volunteer_cookie,
    set_volunteer_cookie,
)
from dispatch.responses import erase_and_release, release_if_unalertable

router = APIRouter(include_in_schema=False)

MAX_PAUSE_HOURS = 24 * 30


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _choice(form: FormData, name: str) -> bool | None:
    """A yes / no / not answered radio group."""
    return {"yes": True, "no": False}.get(text_field(form, name))


# -- sign-up and login ------------------------------------------------------------


def _join_page(
    request: Request,
    runtime: Runtime,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    settings = runtime.settings
    language = values.get("language") or "en"
    consent = settings.consent_text_sv if language == "sv" else settings.consent_text_en
    return render(
        request,
        "me/join.html",
        {"values": values, "errors": errors, "consent_text": consent},
        status=status,
    )


def _code_page(
    request: Request, *, phone: str, errors: dict[str, str], status: int = 200
) -> Response:
    return render(request, "me/code.html", {"phone": phone, "errors": errors}, status=status)


@router.get(JOIN)
async def join_page(request: Request, runtime: RuntimeDep, csrf: PagesCsrfDep) -> Response:
    language = request.query_params.get("lang") or ""
    return _join_page(request, runtime, values={"language": language}, errors={})


@router.post(JOIN)
async def join(
    request: Request, csrf: PagesCsrfDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    values = {name: text_field(form, name) for name in ("name", "phone", "language", "email")}
    values["consent"] = text_field(form, "consent")
    try:
        data = validate(
            VolunteerCreate,
            {
                "name": values["name"],
                "phone": values["phone"],
                "language": values["language"] or "en",
                "email": values["email"] or None,
                "consent": values["consent"] == "yes",
            },
        )
        phone = await signup.request_code(
            session,
            phone=data.phone,
            signup=signup.SignupDetails(
                name=data.name,
                language=data.language,
                email=data.email,
                consent_version=runtime.settings.consent_version,
            ),
            client_ip=client_ip(request),
            now=runtime.clock.now(),
            settings=runtime.settings,
        )
    except FormErrors as exc:
        errors = exc.errors
        if "consent" in errors:
            errors["consent"] = _("You must agree to sign up.")
        return _join_page(request, runtime, values=values, errors=errors, status=422)
    except InvalidInput as exc:
        errors = FormErrors.of(exc).errors
        return _join_page(request, runtime, values=values, errors=errors, status=422)
    except RateLimited as exc:
        errors = {"form": _too_many(exc)}
        return _join_page(request, runtime, values=values, errors=errors, status=429)
    return _code_page(request, phone=phone, errors={})


def _too_many(exc: RateLimited) -> str:
    minutes = exc.retry_after // 60 + 1
    return _("Too many codes were asked for. Try again in %(minutes)s minutes.") % {
        "minutes": minutes
    }


@router.get(f"{ME}/login")
async def login_page(request: Request, csrf: PagesCsrfDep) -> Response:
    return render(request, "me/login.html", {"phone": "", "errors": {}})


@router.post(f"{ME}/login")
async def login(
    request: Request, csrf: PagesCsrfDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    raw = text_field(form, "phone")
    try:
        phone = await signup.request_code(
            session,
            phone=raw,
            signup=None,
            client_ip=client_ip(request),
            now=runtime.clock.now(),
            settings=runtime.settings,
        )
    except InvalidInput as exc:
        context = {"phone": raw, "errors": FormErrors.of(exc).errors}
        return render(request, "me/login.html", context, status=422)
    except RateLimited as exc:
        context = {"phone": raw, "errors": {"form": _too_many(exc)}}
        return render(request, "me/login.html", context, status=429)
    return _code_page(request, phone=phone, errors={})


@router.post(f"{ME}/code")
async def enter_code(
    request: Request, csrf: PagesCsrfDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    phone, code = text_field(form, "phone"), text_field(form, "code")
    try:
        check = await signup.check_code(
            session, phone=phone, code=code, now=runtime.clock.now(), settings=runtime.settings
        )
    except InvalidInput as exc:
        return _code_page(request, phone=phone, errors=FormErrors.of(exc).errors, status=422)
    if check.outcome != "accepted" or check.volunteer_id is None:
        messages = {
            "wrong": _("That code is not right. Tries left: %(left)s.")
            % {"left": check.tries_left},
            "locked": _("Too many wrong tries: this code no longer works. Ask for a new code."),
            "expired": _("This code has expired. Ask for a new code."),
        }
        message = messages.get(check.outcome, _("This code no longer works. Ask for a new code."))
        return _code_page(request, phone=phone, errors={"code": message}, status=422)
    token = await open_volunteer_session(
        session, volunteer_id=check.volunteer_id, now=runtime.clock.now(), settings=runtime.settings
    )
    response = see_other(request, ME_HOME)
    set_volunteer_cookie(response, runtime.settings, token)
    return response


# -- my page ----------------------------------------------------------------------


async def _me_context(
    session: AsyncSession, runtime: Runtime, volunteer_id: uuid.UUID
) -> dict[str, Any]:
    settings = runtime.settings
    now = runtime.clock.now()
    volunteer = await volunteers.get_volunteer(session, volunteer_id)
    reasons = await eligibility.hindrances(session, volunteer_id, now=now, settings=settings)
    my_places = await places.places_of(session, volunteer_id)
    return {
        "volunteer": volunteer,
        "paused": volunteer.paused_until is not None and volunteer.paused_until > now,
        "reasons": [
            eligibility.describe(reason, language=volunteer.language, settings=settings)
            for reason in reasons
        ],
        "reply_number": settings.reply_number,
        "certifications": await certifications.certifications_of(session, volunteer_id),
        "places": my_places,
        "markers": json.dumps(
            [
                {"lat": p.location.lat, "lon": p.location.lon, "label": p.label, "kind": "place"}
                for p in my_places
            ]
        ),
        "alerts": await export.alert_history(session, volunteer_id, limit=10),
        "days": DAYS,
        "values": {},
        "errors": {},
    }


async def _my_page(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    me: VolunteerSession,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    context = await _me_context(session, runtime, me.volunteer_id)
    context["errors"] = errors or {}
    context["values"] = values or {}
    context["contact_preferences"] = list(contact_preference_names().items())
    return render(request, "me/me.html", context, status=status)


@router.get(ME)
async def to_my_page(request: Request) -> Response:
    """``/me`` is ``/me/``: the pages live under ``/me/`` (``/metrics`` is the API's)."""
    return see_other(request, ME_HOME)


@router.get(ME_HOME)
async def my_page(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    return await _my_page(request, session, runtime, me)


async def _change(
    session: AsyncSession, runtime: Runtime, me: VolunteerSession, changes: VolunteerUpdate
) -> None:
    await volunteers.update_volunteer(
        session,
        volunteer_id=me.volunteer_id,
        changes=changes.to_changes(),
        actor=VolunteerSelf(me.volunteer_id),
        region=runtime.settings.default_region,
    )


async def _release_if_unalertable(
    session: AsyncSession, runtime: Runtime, me: VolunteerSession
) -> None:
    """Pausing or turning SMS off here ends open alerts as PAUSE or STOP by SMS does."""
    await release_if_unalertable(
        session, volunteer_id=me.volunteer_id, now=runtime.clock.now(), settings=runtime.settings
    )


@router.post(f"{ME}/pause")
async def pause(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    hours = number(form, "hours")
    if not isinstance(hours, float) or not 1 <= hours <= MAX_PAUSE_HOURS:
        errors = {"hours": _("Enter a number of hours from 1 to 720.")}
        values = {"hours": text_field(form, "hours")}
        return await _my_page(
            request, session, runtime, me, errors=errors, values=values, status=422
        )
    until = runtime.clock.now() + timedelta(hours=hours)
    await _change(session, runtime, me, VolunteerUpdate(paused_until=until))
    await _release_if_unalertable(session, runtime, me)
    return see_other(request, ME_HOME)


@router.post(f"{ME}/resume")
async def resume(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    await _change(session, runtime, me, VolunteerUpdate(paused_until=None))
    return see_other(request, ME_HOME)


@router.post(f"{ME}/language")
async def language(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    return await _change_field(request, session, runtime, me, "language")


@router.post(f"{ME}/contact")
async def contact(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """How alerts reach me: SMS, a call instead, or a call when I have not answered."""
    return await _change_field(request, session, runtime, me, "contact_preference")


async def _change_field(
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
    me: VolunteerSession,
    field: str,
) -> Response:
    """One field of my record from a form, validated as the API validates it."""
    form = await form_data(request)
    try:
        changes = validate(VolunteerUpdate, {field: text_field(form, field)})
    except FormErrors as exc:
        return await _my_page(request, session, runtime, me, errors=exc.errors, status=422)
    await _change(session, runtime, me, changes)
    return see_other(request, ME_HOME)


@router.post(f"{ME}/sms")
async def sms(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    await volunteers.set_sms_opt_out(
        session,
        volunteer_id=me.volunteer_id,
        opted_out=text_field(form, "choice") == "out",
        actor=VolunteerSelf(me.volunteer_id),
        now=runtime.clock.now(),
    )
    await _release_if_unalertable(session, runtime, me)
    return see_other(request, ME_HOME)


@router.post(f"{ME}/places")
async def add_place(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    values = {name: text_field(form, name) for name in ("label", "lat", "lon", "start", "end")}
    days = [day for day in DAYS if text_field(form, f"day_{day}")]
    values |= {f"day_{day}": "on" for day in days}
    schedule = None
    if days or values["start"] or values["end"]:
        schedule = [{"days": days, "start": values["start"], "end": values["end"]}]
    try:
        data = validate(
            PlaceCreate,
            {
                "label": values["label"],
                "location": {"lat": number(form, "lat"), "lon": number(form, "lon")},
                "schedule": schedule,
            },
            aliases={
                "location.lat": "lat",
                "location.lon": "lon",
                "location": "lat",
                "schedule.0.days": "days",
                "schedule.0.start": "start",
                "schedule.0.end": "end",
                "schedule": "days",
            },
        )
    except FormErrors as exc:
        return await _my_page(
            request, session, runtime, me, errors=exc.errors, values=values, status=422
        )
    await places.add_place(
        session,
        volunteer_id=me.volunteer_id,
        data=data.to_domain(),
        actor=VolunteerSelf(me.volunteer_id),
        default_timezone=runtime.settings.timezone,
    )
    return see_other(request, ME_HOME)


@router.post(f"{ME}/places/{{place_id}}/delete")
async def delete_place(
    place_id: uuid.UUID,
    request: Request,
    me: VolunteerSessionDep,
    session: SessionDep,
) -> Response:
    await places.delete_place(
        session,
        volunteer_id=me.volunteer_id,
        place_id=place_id,
        actor=VolunteerSelf(me.volunteer_id),
    )
    return see_other(request, ME_HOME)


@router.post(f"{ME}/certificates")
async def add_certificate(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    fields = ("kind", "issued_on", "expires_on", "issuer", "reference")
    values = {name: text_field(form, name) for name in fields}
    upload = upload_field(form, "attachment")
    limit = runtime.settings.attachment_max_bytes
    attachment = None
    if upload is not None:
        attachment = await upload.read(limit + 1) if upload.filename else None
        await upload.close()
    try:
        data = validate(
            CertificationCreate, {name: value or None for name, value in values.items()}
        )
        await certifications.submit_certification(
            session,
            volunteer_id=me.volunteer_id,
            data=data.to_domain(),
            attachment=attachment or None,
            now=runtime.clock.now(),
            settings=runtime.settings,
        )
    except FormErrors as exc:
        errors = exc.errors
    except InvalidInput:
        errors = {"attachment": _("The file is not a PDF or a photo (JPEG, PNG, WebP, HEIC).")}
    except PayloadTooLarge:
        errors = {
            "attachment": _("The file is larger than %(mb)s MB.") % {"mb": limit // (1024 * 1024)}
        }
    else:
        return see_other(request, ME_HOME)
    return await _my_page(request, session, runtime, me, errors=errors, values=values, status=422)


@router.post(f"{ME}/alerts/{{alert_id}}/report")
async def report(
    alert_id: uuid.UUID,
    request: Request,
    me: VolunteerSessionDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    form = await form_data(request)
    answers = ReportIn(
        gave_cpr=_choice(form, "gave_cpr"),
        aed_used=_choice(form, "aed_used"),
        arrived_before_ems=_choice(form, "arrived_before_ems"),
        wants_contact=text_field(form, "wants_contact") == "yes",
    )
    await reports.submit_report(
        session,
        volunteer_id=me.volunteer_id,
        alert_id=alert_id,
        answers=reports.ReportAnswers(**answers.model_dump()),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return see_other(request, ME_HOME)


@router.get(f"{ME}/export")
async def download(me: VolunteerSessionDep, session: SessionDep) -> Response:
    data = await export.export_volunteer(session, me.volunteer_id)
    return Response(
        json.dumps(data, ensure_ascii=False, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-responder-data.json"'},
    )


@router.get(f"{ME}/delete")
async def delete_page(request: Request, me: VolunteerSessionDep) -> Response:
    return render(request, "me/delete.html", {"errors": {}})


@router.post(f"{ME}/delete")
async def delete_account(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    form = await form_data(request)
    if text_field(form, "confirm") != "yes":
        errors = {"confirm": _("Tick the box to confirm that your account should be deleted.")}
        return render(request, "me/delete.html", {"errors": errors}, status=422)
    await erase_and_release(
        session,
        volunteer_id=me.volunteer_id,
        actor=VolunteerSelf(me.volunteer_id),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    request.state.volunteer = None
    response = render(request, "me/deleted.html", {})
    clear_volunteer_cookie(response, runtime.settings)
    return response


@router.post(f"{ME}/logout")
async def logout(
    request: Request, me: VolunteerSessionDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    await revoke_session(session, token=request.cookies.get(ME_COOKIE, ""), now=runtime.clock.now())
    response = see_other(request, f"{ME}/login")
    clear_volunteer_cookie(response, runtime.settings)
    return response
