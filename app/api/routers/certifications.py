"""Certification review: the pending queue, renewals, verify / reject / revoke."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.api.deps import AdminDep, RuntimeDep, SessionDep
from app.api.problems import error_responses
from app.api.schemas.certifications import (
    CertificationOut,
    CertificationStatus,
    DecisionRequest,
    RevokeRequest,
)
from app.api.schemas.common import DEFAULT_LIMIT, CursorQuery, LimitQuery, Page, page_of
from app.registry import attachments, certifications

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


async def _decide(
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
    certification_id: uuid.UUID,
    decision: certifications.Decision,
    reason: str | None,
) -> CertificationOut:
    certification = await certifications.decide(
        session,
        certification_id=certification_id,
        decision=decision,
        reason=reason,
        actor=admin,
        now=runtime.clock.now(),
    )
    return CertificationOut.model_validate(certification)


def _add_review_route(decision: Literal["verify", "reject"], outcome: str) -> None:
    """Verify and reject are one rule (decide a pending certification, optional note)
    under two paths, so that each decision keeps its own operation in the OpenAPI."""

    async def review(
        certification_id: uuid.UUID,
        session: SessionDep,
        runtime: RuntimeDep,
        admin: AdminDep,
        body: DecisionRequest | None = None,
    ) -> CertificationOut:
        reason = body.reason if body else None
        return await _decide(session, runtime, admin, certification_id, decision, reason)

    router.add_api_route(
        f"/{{certification_id}}/{decision}",
        review,
        methods=["POST"],
        name=f"{decision}_certification",
        response_model=CertificationOut,
        responses=DECIDE,
        description=f"pending → {outcome}; anything else is a 409.",
    )


_add_review_route("verify", "verified")
_add_review_route("reject", "rejected")


@router.post("/{certification_id}/revoke", response_model=CertificationOut, responses=DECIDE)
async def revoke_certification(
    certification_id: uuid.UUID,
    body: RevokeRequest,
    session: SessionDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> CertificationOut:
    """verified → revoked, with a reason; the volunteer stops being alertable at once."""
    return await _decide(session, runtime, admin, certification_id, "revoke", body.reason)


@router.get(
    "/{certification_id}/attachment",
    response_class=Response,
    responses={
        200: {
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in attachments.EXTENSIONS
            },
            "description": "the photo or PDF the volunteer attached, as a download",
        },
        **error_responses(*AUTH, 404, 422),
    },
)
async def get_attachment(
    certification_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep, admin: AdminDep
) -> Response:
    """The certificate's attachment, for review; each coordinator's first read a day is logged.

    Always a download with the type judged from its bytes, never rendered on our origin.
    """
    file = await attachments.read_attachment(
        session,
        certification_id=certification_id,
        reader=admin,
        now=runtime.clock.now(),
        settings=runtime.settings,
    )
    return attachment_response(file)


def attachment_response(file: attachments.AttachmentFile) -> Response:
    """The file as a download that is never rendered, sniffed or cached (API and console)."""
    return Response(
        file.content,
        media_type=file.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{file.filename}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "no-store",
        },
    )
