"""Admin registry of volunteers: CRUD, suspension, erasure, places, tokens, import."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response, status

from app.api.deps import AdminDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.certifications import CertificationCreate, CertificationOut
from app.api.schemas.common import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, page_of
from app.api.schemas.places import PlaceCreate, PlaceOut
from app.api.schemas.volunteers import (
    ImportReport,
    SuspendRequest,
    TokenOut,
    VolunteerCreate,
    VolunteerDetail,
    VolunteerOut,
    VolunteerUpdate,
)
from app.api.uploads import read_upload, upload_body
from app.registry import certifications, places, volunteers

router = APIRouter(prefix="/v1/volunteers", tags=["volunteers"])

AUTH = (401, 403, 429)
CSV_TYPES = ("text/csv",)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=VolunteerOut,
    responses=error_responses(*AUTH, 409, 413, 415, 422),
)
async def register_volunteer(
    body: VolunteerCreate, session: SessionDep, runtime: RuntimeDep, admin: AdminDep
) -> VolunteerOut:
    """Register a volunteer; consent is recorded now. A phone already registered: 409."""
    volunteer = await volunteers.create_volunteer(
        session,
        data=body.to_domain(),
        actor=admin,
        now=runtime.clock.now(),
        region=runtime.settings.default_region,
    )
    return VolunteerOut.model_validate(volunteer)


@router.get("", response_model=Page[VolunteerOut], responses=error_responses(*AUTH, 422))
async def list_volunteers(
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    status: Literal["active", "suspended"] | None = None,
    phone: str | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[VolunteerOut]:
    """Newest first; ``phone`` finds one volunteer by number (any accepted format)."""
    page = await volunteers.list_volunteers(
        session,
        status=status,
        phone=phone,
        region=runtime.settings.default_region,
        cursor=cursor,
        limit=limit,
    )
    return page_of(page, VolunteerOut.model_validate)


@router.post(
    "/import",
    response_model=ImportReport,
    responses=error_responses(*AUTH, 413, 415, 422),
    openapi_extra=upload_body(*CSV_TYPES),
)
async def import_volunteers(
    request: Request, session: SessionDep, runtime: RuntimeDep, admin: AdminDep
) -> ImportReport:
    """A UTF-8 CSV body (``text/csv``) with the header ``name,phone,language,email``.

    Valid lines are registered; each invalid line is reported with its number. A
    file that is not UTF-8 CSV with that header is refused whole (422); over 2 MB,
    413.
    """
    _, data = await read_upload(request, media_types=CSV_TYPES)
    outcome = await volunteers.import_volunteers(
        session,
        data=data,
        actor=admin,
        now=runtime.clock.now(),
        region=runtime.settings.default_region,
    )
    return ImportReport.of(outcome)


@router.get(
    "/{volunteer_id}", response_model=VolunteerDetail, responses=error_responses(*AUTH, 404, 422)
)
async def get_volunteer(
    volunteer_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, admin: AdminDep
) -> VolunteerDetail:
    """The volunteer with certifications, places and whether they can be alerted now."""
    volunteer = await volunteers.get_volunteer(session, volunteer_id)
    now = runtime.clock.now()
    return VolunteerDetail(
        **VolunteerOut.model_validate(volunteer).model_dump(),
        eligible=await volunteers.is_volunteer_eligible(
            session, volunteer_id, now=now, today=now.astimezone(runtime.settings.zone).date()
        ),
        certifications=[
            CertificationOut.model_validate(certification)
            for certification in await certifications.certifications_of(session, volunteer_id)
        ],
        places=[PlaceOut.of(place) for place in await places.places_of(session, volunteer_id)],
    )


@router.patch(
    "/{volunteer_id}",
    response_model=VolunteerOut,
    responses=error_responses(*AUTH, 404, 409, 413, 415, 422),
)
async def update_volunteer(
    volunteer_id: uuid.UUID,
    body: VolunteerUpdate,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> VolunteerOut:
    volunteer = await volunteers.update_volunteer(
        session,
        volunteer_id=volunteer_id,
        changes=body.to_changes(),
        actor=admin,
        region=runtime.settings.default_region,
    )
    return VolunteerOut.model_validate(volunteer)


@router.delete(
    "/{volunteer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*AUTH, 404, 422),
)
async def erase_volunteer(
    volunteer_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, admin: AdminDep
) -> None:
    """Erase personal data; anonymous alert statistics remain. Then 404 for this id."""
    await volunteers.erase_volunteer(
        session, volunteer_id=volunteer_id, actor=admin, now=runtime.clock.now()
    )


@router.post(
    "/{volunteer_id}/suspend",
    response_model=VolunteerOut,
    responses=error_responses(*AUTH, 404, 413, 415, 422),
)
async def suspend_volunteer(
    volunteer_id: uuid.UUID,
    session: SessionDep,
    admin: AdminDep,
    body: SuspendRequest | None = None,
) -> VolunteerOut:
    """No alerts until reinstated; the optional reason is kept."""
    volunteer = await volunteers.set_status(
        session,
        volunteer_id=volunteer_id,
        status="suspended",
        reason=body.reason if body else None,
        actor=admin,
    )
    return VolunteerOut.model_validate(volunteer)


@router.post(
    "/{volunteer_id}/reinstate",
    response_model=VolunteerOut,
    responses=error_responses(*AUTH, 404, 422),
)
async def reinstate_volunteer(
    volunteer_id: uuid.UUID, session: SessionDep, admin: AdminDep
) -> VolunteerOut:
    volunteer = await volunteers.set_status(
        session, volunteer_id=volunteer_id, status="active", reason=None, actor=admin
    )
    return VolunteerOut.model_validate(volunteer)


@router.post(
    "/{volunteer_id}/certifications",
    status_code=status.HTTP_201_CREATED,
    response_model=CertificationOut,
    responses=error_responses(*AUTH, 404, 413, 415, 422),
)
async def add_certification(
    volunteer_id: uuid.UUID, body: CertificationCreate, session: SessionDep, admin: AdminDep
) -> CertificationOut:
    """Recorded as pending until an administrator verifies it."""
    certification = await certifications.add_certification(
        session, volunteer_id=volunteer_id, data=body.to_domain(), actor=admin
    )
    return CertificationOut.model_validate(certification)


@router.get(
    "/{volunteer_id}/places",
    response_model=list[PlaceOut],
    responses=error_responses(*AUTH, 404, 422),
)
async def list_places(
    volunteer_id: uuid.UUID, session: SessionDep, admin: AdminDep
) -> list[PlaceOut]:
    await volunteers.get_volunteer(session, volunteer_id)
    return [PlaceOut.of(place) for place in await places.places_of(session, volunteer_id)]


@router.post(
    "/{volunteer_id}/places",
    status_code=status.HTTP_201_CREATED,
    response_model=PlaceOut,
    responses=error_responses(*AUTH, 404, 413, 415, 422),
)
async def add_place(
    volunteer_id: uuid.UUID,
    body: PlaceCreate,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> PlaceOut:
    """No schedule means always; the schedule is read in the place's time zone."""
    place = await places.add_place(
        session,
        volunteer_id=volunteer_id,
        data=body.to_domain(),
        actor=admin,
        default_timezone=runtime.settings.timezone,
    )
    return PlaceOut.of(place)


@router.delete(
    "/{volunteer_id}/places/{place_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*AUTH, 404, 422),
)
async def delete_place(
    volunteer_id: uuid.UUID, place_id: uuid.UUID, session: SessionDep, admin: AdminDep
) -> None:
    await places.delete_place(session, volunteer_id=volunteer_id, place_id=place_id, actor=admin)


@router.post(
    "/{volunteer_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenOut,
    responses=error_responses(*AUTH, 404, 422),
)
async def issue_token(volunteer_id: uuid.UUID, session: SessionDep, admin: AdminDep) -> TokenOut:
    """A companion-app token for this volunteer (role volunteer), shown once."""
    token = await volunteers.issue_volunteer_token(session, volunteer_id=volunteer_id, actor=admin)
    return TokenOut(token=token)
