"""The coordinators' page of after-alert reports: who gave CPR, used the AED, arrived
before the ambulance, and who asked to be contacted (aftercare comes first)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import RuntimeDep, SessionDep
from app.registry.access import PersonalRead, record_reads
from app.registry.reports import recent_reports
from app.registry.staff import principal_of
from app.web.auth import CoordinatorDep
from app.web.pages import CONSOLE, render

router = APIRouter(prefix=CONSOLE, include_in_schema=False)

SHOWN = 100


@router.get("/reports")
async def reports(
    request: Request,
    staff: CoordinatorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    contact: bool = Query(default=False, description="only those who asked to be contacted"),
) -> Response:
    rows = await recent_reports(session, wants_contact_only=contact, limit=SHOWN)
    await record_reads(
        session,
        reader=principal_of(staff.user),
        reads=[
            PersonalRead(row.volunteer_id, "contacts", row.alert_id)
            for row in rows
            if row.wants_contact
        ],
        now=runtime.clock.now(),
        zone=runtime.settings.zone,
    )
    return render(request, "reports.html", {"reports": rows, "contact": contact})
