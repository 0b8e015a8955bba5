"""Certification bodies: add (pending), verify, reject, revoke; the review queue."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationInfo, field_validator

from app.api.schemas.common import StrictInput
from app.registry.certifications import NewCertification

CertificationKind = Literal["cpr", "cpr_aed", "first_aid", "healthcare_professional"]
CertificationStatus = Literal["pending", "verified", "rejected", "revoked"]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class CertificationCreate(StrictInput):
    kind: CertificationKind
    issued_on: date
    expires_on: date
    issuer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    reference: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = (
        None
    )

    @field_validator("expires_on")
    @classmethod
    def _expiry_after_issue(cls, value: date, info: ValidationInfo) -> date:
        issued_on = info.data.get("issued_on")
        if issued_on is not None and value < issued_on:
            raise ValueError("expires_on is before issued_on")
        return value

    def to_domain(self) -> NewCertification:
        return NewCertification(
            kind=self.kind,
            issued_on=self.issued_on,
            expires_on=self.expires_on,
            issuer=self.issuer,
            reference=self.reference,
        )


class DecisionRequest(StrictInput):
    """Optional note on verify or reject."""

    reason: Reason | None = None


class RevokeRequest(StrictInput):
    reason: Reason


class CertificationOut(BaseModel):
    # Read off the ORM row: ``CertificationOut.model_validate(row)``.
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    volunteer_id: uuid.UUID
    kind: CertificationKind
    issued_on: date
    expires_on: date
    issuer: str
    reference: str | None
    status: CertificationStatus
    status_reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    reminder_sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
