"""What a volunteer sees of themselves through the companion app."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from app.api.schemas.certifications import CertificationOut
from app.api.schemas.common import StrictInput
from app.api.schemas.locations import LiveLocationOut
from app.registry.eligibility import HindranceCode


class AvailabilityUpdate(StrictInput):
    paused_until: AwareDatetime | None = Field(description="no alerts until then; null resumes")


class HindranceOut(BaseModel):
    """One reason I cannot be alerted now, with the words my page shows."""

    code: HindranceCode
    text: str
    until: datetime | None = None
    on: date | None = None


class MeOut(BaseModel):
    id: uuid.UUID
    name: str | None
    phone: str | None
    language: Literal["sv", "en"]
    status: Literal["active", "suspended", "erased"]
    opted_out: bool
    paused_until: datetime | None
    eligible: bool
    not_alertable_because: list[HindranceOut] = Field(
        description="empty when I can be alerted now; else every reason, in my language"
    )
    certifications: list[CertificationOut]
    location: LiveLocationOut | None


class ReportIn(StrictInput):
    """After an alert I accepted; leave out what I do not want to answer."""

    gave_cpr: bool | None = None
    aed_used: bool | None = None
    arrived_before_ems: bool | None = None
    wants_contact: bool = Field(
        default=False, description="someone from the scheme should contact me to talk it over"
    )


class ReportOut(BaseModel):
    alert_id: uuid.UUID
    gave_cpr: bool | None
    aed_used: bool | None
    arrived_before_ems: bool | None
    wants_contact: bool
    submitted_at: datetime
    updated_at: datetime
