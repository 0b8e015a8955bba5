"""Certification review: the pending queue, renewals, verify / reject / revoke."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import AdminDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.certifications import (
    CertificationOut,
    CertificationStatus,
    DecisionRequest,
    RevokeRequest,
)
from app.api.schemas.common import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, page_of
from app.registry import certifications

router = APIRouter(prefix="/v1/certifications", tags=["certifications"])

AUTH = (401, 403, 429)
DECIDE = error_responses(*AUTH, 404, 409, 413, 415, 422)


@router.get("", response_model=Page[CertificationOut], responses=error_responses(*AUTH, 422))
async def list_certifications(
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    status: CertificationStatus | None = None,
    expiring_within_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
    volunteer_id: uuid.UUID | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Page[CertificationOut]:
    """``status=pending`` is the review queue; ``expiring_within_days=N`` lists verified
    certifications expiring from today (``TIMEZONE``) to N days ahead."""
    today = runtime.clock.now().astimezone(runtime.settings.zone).date()
    page = await certifications.list_certifications(
        session,
        status=status,
        expiring_within_days=expiring_within_days,
        volunteer_id=volunteer_id,
        today=today,
        cursor=cursor,
        limit=limit,
    )
    return page_of(page, CertificationOut.model_validate)


@router.post("/{certification_id}/verify", response_model=CertificationOut, responses=DECIDE)
async def verify_certification(
    certification_id: uuid.UUID,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    body: DecisionRequest | None = None,
) -> CertificationOut:
    """pending → verified; anything else is a 409."""
    certification = await certifications.decide(
        session,
        certification_id=certification_id,
        decision="verify",
        reason=body.reason if body else None,
        actor=admin,
        now=runtime.clock.now(),
    )
    return CertificationOut.model_validate(certification)


@router.post("/{certification_id}/reject", response_model=CertificationOut, responses=DECIDE)
async def reject_certification(
    certification_id: uuid.UUID,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    body: DecisionRequest | None = None,
) -> CertificationOut:
    """pending → rejected; anything else is a 409."""
    certification = await certifications.decide(
        session,
        certification_id=certification_id,
        decision="reject",
        reason=body.reason if body else None,
        actor=admin,
        now=runtime.clock.now(),
    )
    return CertificationOut.model_validate(certification)


@router.post("/{certification_id}/revoke", response_model=CertificationOut, responses=DECIDE)
async def revoke_certification(
    certification_id: uuid.UUID,
    body: RevokeRequest,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> CertificationOut:
    """verified → revoked, with a reason; the volunteer stops being alertable at once."""
    certification = await certifications.decide(
        session,
        certification_id=certification_id,
        decision="revoke",
        reason=body.reason,
        actor=admin,
        now=runtime.clock.now(),
    )
    return CertificationOut.model_validate(certification)
