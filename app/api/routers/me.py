"""The volunteer's own view, with a personal token: profile, location, availability,
export, erasure and the report after an alert."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status

from app.api.deps import (
    RuntimeDep,
    SessionDep,
    VolunteerDep,
    VolunteerOnConnectionDep,
    get_runtime,
)
from app.api.problems import error_responses
from app.api.schemas.certifications import CertificationOut
from app.api.schemas.locations import LiveLocationOut, LocationFix, LocationResult
from app.api.schemas.me import AvailabilityUpdate, HindranceOut, MeOut, ReportIn, ReportOut
from app.core.errors import Unauthorized
from app.registry import certifications, eligibility, export, locations, reports, volunteers
from app.registry.audit import VolunteerSelf
from app.runtime import Runtime
from dispatch.responses import erase_and_release, release_if_unalertable

router = APIRouter(prefix="/v1/me", tags=["me"])

AUTH = (401, 403, 429)


def _own_id(volunteer_id: uuid.UUID | None) -> uuid.UUID:
    if volunteer_id is None:
        raise Unauthorized("this key is not a volunteer token")
    return volunteer_id


async def _me(session: SessionDep, runtime: Runtime, volunteer_id: uuid.UUID) -> MeOut:
    volunteer = await volunteers.get_volunteer(session, volunteer_id)
    now = runtime.clock.now()
    settings = runtime.settings
    reasons = await eligibility.hindrances(session, volunteer_id, now=now, settings=settings)
    location = await locations.current_location(session, volunteer_id)
    return MeOut(
        id=volunteer.id,
        name=volunteer.name,
        phone=volunteer.phone,
        language=volunteer.language,
        status=volunteer.status,
        opted_out=volunteer.opted_out,
        paused_until=volunteer.paused_until,
        eligible=await volunteers.is_volunteer_eligible(
            session, volunteer_id, now=now, today=now.astimezone(runtime.settings.zone).date()
        ),
        not_alertable_because=[
            HindranceOut(
                code=reason.code,
                text=eligibility.describe(reason, language=volunteer.language, settings=settings),
                until=reason.until,
                on=reason.on,
            )
            for reason in reasons
        ],
        certifications=[
            CertificationOut.model_validate(certification)
            for certification in await certifications.certifications_of(session, volunteer_id)
        ],
        location=None if location is None else LiveLocationOut.model_validate(location),
    )


@router.get("", response_model=MeOut, responses=error_responses(*AUTH, 404))
async def get_me(session: SessionDep, runtime: RuntimeDep, me: VolunteerDep) -> MeOut:
    """Who I am to the service, and whether I can be alerted now."""
    return await _me(session, runtime, _own_id(me.volunteer_id))


_LOCATION_ANSWERS = {
    written: LocationResult(status="accepted" if written else "stale").model_dump_json().encode()
    for written in (True, False)
}


@router.put(
    "/location", response_model=LocationResult, responses=error_responses(*AUTH, 413, 415, 422)
)
async def put_location(
    body: LocationFix, request: Request, me: VolunteerOnConnectionDep
) -> Response:
    """Replaces the stored fix only if this one was recorded later (else ``stale``).

    The app sends this every few minutes from every volunteer's phone, so it is the
    service's busiest request: one dependency, two statements on a driver connection
    (the key with its rate-limit count, then the upsert) and an answer serialised once.
    """
    runtime = get_runtime(request)
    written = await locations.record_location(
        me.connection,
        volunteer_id=_own_id(me.principal.volunteer_id),
        fix=body.to_domain(),
        now=runtime.clock.now(),
        retention=runtime.settings.live_location_retention,
    )
    return Response(_LOCATION_ANSWERS[written], media_type="application/json")


@router.delete(
    "/location",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*AUTH),
)
async def delete_location(session: SessionDep, me: VolunteerDep) -> None:
    """Forget my position now (places still count)."""
    await locations.forget_location(session, volunteer_id=_own_id(me.volunteer_id))


@router.put(
    "/availability", response_model=MeOut, responses=error_responses(*AUTH, 404, 413, 415, 422)
)
async def put_availability(
    body: AvailabilityUpdate, session: SessionDep, runtime: RuntimeDep, me: VolunteerDep
) -> MeOut:
    """Pause alerts until a moment, or resume with ``null``.

    Pausing while holding a role gives it up, as a PAUSE by SMS does.
    """
    volunteer_id = _own_id(me.volunteer_id)
    volunteer = await volunteers.lock_volunteer(session, volunteer_id)
    volunteer.paused_until = body.paused_until
    await session.flush()
    await release_if_unalertable(
        session, volunteer_id=volunteer_id, now=runtime.clock.now(), settings=runtime.settings
    )
    return await _me(session, runtime, volunteer_id)


@router.get("/export", responses=error_responses(*AUTH, 404))
async def export_me(session: SessionDep, me: VolunteerDep) -> dict[str, Any]:
    """Everything the service holds about me, including who read it and when."""
    return await export.export_volunteer(session, _own_id(me.volunteer_id))


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*AUTH, 404),
)
async def delete_me(session: SessionDep, runtime: RuntimeDep, me: VolunteerDep) -> None:
    """Erase my account: the same erasure as an administrator's DELETE (this token too)."""
    volunteer_id = _own_id(me.volunteer_id)
    await erase_and_release(
        session,
        volunteer_id=volunteer_id,
        actor=VolunteerSelf(volunteer_id),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )


@router.put(
    "/alerts/{alert_id}/report",
    response_model=ReportOut,
    responses=error_responses(*AUTH, 404, 409, 413, 415, 422),
)
async def put_report(
    alert_id: uuid.UUID, body: ReportIn, session: SessionDep, runtime: RuntimeDep, me: VolunteerDep
) -> ReportOut:
    """My report on an alert I accepted; asking to be contacted reaches the follow-up contact."""
    report = await reports.submit_report(
        session,
        volunteer_id=_own_id(me.volunteer_id),
        alert_id=alert_id,
        answers=reports.ReportAnswers(
            gave_cpr=body.gave_cpr,
            aed_used=body.aed_used,
            arrived_before_ems=body.arrived_before_ems,
            wants_contact=body.wants_contact,
        ),
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return ReportOut.model_validate(report, from_attributes=True)
