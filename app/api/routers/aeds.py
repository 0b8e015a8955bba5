"""Admin registry of AEDs: create, read, change, import (CSV or GeoJSON)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from app.api.deps import AdminDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.aeds import AedCreate, AedOut, AedStatus, AedUpdate, validate_aed_entries
from app.api.schemas.common import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, page_of
from app.api.schemas.volunteers import ImportReport
from app.api.uploads import read_upload, upload_body
from app.registry import aeds

router = APIRouter(prefix="/v1/aeds", tags=["aeds"])

AUTH = (401, 403, 429)
IMPORT_TYPES = ("text/csv", "application/geo+json", "application/json")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AedOut,
    responses=error_responses(*AUTH, 413, 415, 422),
)
async def create_aed(body: AedCreate, session: SessionDep, admin: AdminDep) -> AedOut:
    return AedOut.of(await aeds.create_aed(session, data=body.to_domain(), actor=admin))


@router.get("", response_model=Page[AedOut], responses=error_responses(*AUTH, 422))
async def list_aeds(
    session: SessionDep,
    admin: AdminDep,
    status: AedStatus | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[AedOut]:
    page = await aeds.list_aeds(session, status=status, cursor=cursor, limit=limit)
    return page_of(page, AedOut.of)


@router.post(
    "/import",
    response_model=ImportReport,
    responses=error_responses(*AUTH, 413, 415, 422),
    openapi_extra=upload_body(*IMPORT_TYPES),
)
async def import_aeds(request: Request, session: SessionDep, admin: AdminDep) -> ImportReport:
    """``text/csv`` with the header ``lat,lon,address,description,access,status``, or a
    GeoJSON FeatureCollection of points (``application/geo+json``) whose properties
    carry the same fields. ``access`` is ``always``, a JSON list of windows, or
    ``mon-fri 06:00-22:00; sat 10:00-16:00``. Valid entries are kept, each invalid
    one is reported (CSV: line number; GeoJSON: feature index from 0)."""
    media, data = await read_upload(request, media_types=IMPORT_TYPES)
    upload = aeds.read_aed_file(data, geojson=media != "text/csv")
    valid = validate_aed_entries(upload.entries, errors=upload.errors)
    outcome = await aeds.import_aeds(session, aeds=valid, refused=upload.errors, actor=admin)
    return ImportReport.of(outcome)


@router.get("/{aed_id}", response_model=AedOut, responses=error_responses(*AUTH, 404, 422))
async def get_aed(aed_id: uuid.UUID, session: SessionDep, admin: AdminDep) -> AedOut:
    return AedOut.of(await aeds.get_aed(session, aed_id))


@router.patch(
    "/{aed_id}", response_model=AedOut, responses=error_responses(*AUTH, 404, 413, 415, 422)
)
async def update_aed(
    aed_id: uuid.UUID, body: AedUpdate, session: SessionDep, admin: AdminDep
) -> AedOut:
    """Fields present are changed, e.g. ``{"status": "out_of_service"}``."""
    aed = await aeds.update_aed(session, aed_id=aed_id, changes=body.to_changes(), actor=admin)
    return AedOut.of(aed)
