"""Admin registry of volunteers: CRUD, suspension, erasure, places, tokens, import."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import AdminDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.certifications import CertificationCreate, CertificationOut
from app.api.schemas.common import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, page_of
from app.api.schemas.places import PlaceCreate, PlaceOut
from app.api.schemas.volunteers import (
    ImportReport,
    SuspendRequest,
    TokenInfo,
    TokenOut,
    VolunteerCreate,
    VolunteerDetail,
    VolunteerOut,
    VolunteerUpdate,
)
from app.api.uploads import read_upload, upload_body
from app.registry import certifications, places, volunteers
from app.registry.access import PersonalRead, record_reads
from app.registry.keys import Principal
from app.runtime import Runtime
from dispatch.responses import erase_and_release, release_if_unalertable

router = APIRouter(prefix="/v1/volunteers", tags=["volunteers"])

AUTH = (401, 403, 429)
CSV_TYPES = ("text/csv",)


async def _log_profile_read(
    session: AsyncSession, runtime: Runtime, admin: Principal, volunteer_id: uuid.UUID
) -> None:
    """Who looked: an administrator's first opening of this volunteer today is logged."""
    await record_reads(
        session,
        reader=admin,
        reads=[PersonalRead(volunteer_id, "profile")],
        now=runtime.clock.now(),
        zone=runtime.settings.zone,
    )


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
    consent: Literal["recorded", "missing"] | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[VolunteerOut]:
    """Newest first; ``phone`` finds one volunteer by number (any accepted format);
    ``consent=missing`` lists those whose consent is still to be collected."""
    page = await volunteers.list_volunteers(
        session,
        status=status,
        phone=phone,
        consent=consent,
        region=runtime.settings.default_region,
        cursor=cursor,
        limit=limit,
    )
    return page_of(page, VolunteerOut.model_validate)


EXPORT_MAX = 10_000


@router.get(
    "/export",
    response_class=Response,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "The import's format; X-Next-Cursor names the next page, if any",
        },
        **error_responses(*AUTH, 422),
    },
)
async def export_volunteers(
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    status: Literal["active", "suspended"] | None = None,
    consent: Literal["recorded", "missing"] | None = None,
    limit: Annotated[int, Query(ge=1, le=EXPORT_MAX)] = EXPORT_MAX,
    cursor: CursorQuery = None,
) -> Response:
    """Volunteers as CSV in the import's own columns, newest first, for a spreadsheet:
    a cell that would run as a formula (``=``, ``+``, ``-``, ``@``) starts with ``'``."""
    page = await volunteers.list_volunteers(
        session,
        status=status,
        phone=None,
        consent=consent,
        region=runtime.settings.default_region,
        cursor=cursor,
        limit=limit,
    )
    headers = {"X-Next-Cursor": page.next_cursor} if page.next_cursor else None
    return Response(volunteers.export_csv(page.rows), media_type="text/csv", headers=headers)


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
    """The volunteer with certifications, places and whether they can be alerted now.

    Each administrator's first opening of a volunteer a day is logged (who looked).
    """
    volunteer = await volunteers.get_volunteer(session, volunteer_id)
    now = runtime.clock.now()
    await _log_profile_read(session, runtime, admin, volunteer_id)
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
    changes = body.to_changes()
    volunteer = await volunteers.update_volunteer(
        session,
        volunteer_id=volunteer_id,
        changes=changes,
        actor=admin,
        region=runtime.settings.default_region,
    )
    if "paused_until" in changes:
        await release_if_unalertable(
            session, volunteer_id=volunteer_id, now=runtime.clock.now(), settings=runtime.settings
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
    """Erase personal data; anonymous alert statistics remain. Then 404 for this id.

    A role they held is given up as after WITHDRAW (the slot reopens).
    """
    await erase_and_release(
        session,
        volunteer_id=volunteer_id,
        actor=admin,
        now=runtime.clock.now(),
        settings=runtime.settings,
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
    volunteer_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, admin: AdminDep
) -> list[PlaceOut]:
    """Where the volunteer lives and works: logged like opening the volunteer."""
    await volunteers.get_volunteer(session, volunteer_id)
    await _log_profile_read(session, runtime, admin, volunteer_id)
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
    responses=error_responses(*AUTH, 404, 409, 422),
)
async def issue_token(volunteer_id: uuid.UUID, session: SessionDep, admin: AdminDep) -> TokenOut:
    """A companion-app token for this active volunteer (role volunteer), shown once."""
    token, record = await volunteers.issue_volunteer_token(
        session, volunteer_id=volunteer_id, actor=admin
    )
    return TokenOut(id=record.id, token=token)


@router.get(
    "/{volunteer_id}/tokens",
    response_model=list[TokenInfo],
    responses=error_responses(*AUTH, 404, 422),
)
async def list_tokens(
    volunteer_id: uuid.UUID, session: SessionDep, admin: AdminDep
) -> list[TokenInfo]:
    """Every app token of the volunteer, revoked ones too; never the secret."""
    tokens = await volunteers.volunteer_tokens(session, volunteer_id=volunteer_id)
    return [TokenInfo.model_validate(token) for token in tokens]


@router.delete(
    "/{volunteer_id}/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*AUTH, 404, 422),
)
async def revoke_token(
    volunteer_id: uuid.UUID, token_id: uuid.UUID, session: SessionDep, admin: AdminDep
) -> None:
    """Revoked at once: the token's next request is a 401. Repeating it is harmless."""
    await volunteers.revoke_volunteer_token(
        session, volunteer_id=volunteer_id, token_id=token_id, actor=admin
    )
