"""Volunteer registry bodies and answers (SPEC section 5)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from app.api.schemas.certifications import CertificationOut
from app.api.schemas.common import StrictInput
from app.api.schemas.places import PlaceOut
from app.registry.uploads import ImportOutcome
from app.registry.volunteers import NewVolunteer, VolunteerChanges

Language = Literal["sv", "en"]
ContactPreference = Literal["sms", "voice", "sms_then_voice"]
CONTACT_PREFERENCE = (
    "how alerts reach the volunteer: sms; voice (a call instead of the alert SMS, e.g. "
    "a landline); sms_then_voice (a call when the SMS got no answer within CALL_AFTER)"
)
VolunteerStatus = Literal["active", "suspended"]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
PhoneInput = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=40)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
]


class VolunteerCreate(StrictInput):
    name: Name
    phone: PhoneInput = Field(description="E.164, or national format in DEFAULT_REGION")
    language: Language = "sv"
    email: Email | None = None
    consent: Literal[True] = Field(
        description="the volunteer agreed to be alerted by SMS; registration needs it"
    )
    contact_preference: ContactPreference = Field(default="sms", description=CONTACT_PREFERENCE)

    def to_domain(self) -> NewVolunteer:
        return NewVolunteer(
            name=self.name,
            phone=self.phone,
            language=self.language,
            email=self.email,
            contact_preference=self.contact_preference,
        )


class VolunteerUpdate(StrictInput):
    """Fields present are changed; status changes go through suspend/reinstate."""

    name: Name | None = None
    phone: PhoneInput | None = None
    language: Language | None = None
    email: Email | None = None
    paused_until: AwareDatetime | None = None
    contact_preference: ContactPreference | None = Field(
        default=None, description=CONTACT_PREFERENCE
    )

    def to_changes(self) -> VolunteerChanges:
        return cast(VolunteerChanges, self.model_dump(exclude_unset=True))


class SuspendRequest(StrictInput):
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None


class VolunteerOut(BaseModel):
    # Read off the ORM row: ``VolunteerOut.model_validate(row)``.
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str | None
    phone: str | None
    email: str | None
    language: Language
    status: Literal["active", "suspended", "erased"]
    opted_out: bool
    paused_until: datetime | None
    consent_at: datetime | None
    consent_requested_at: datetime | None = Field(
        description="asked by SMS (import without recorded consent); YES records consent_at"
    )
    contact_preference: ContactPreference = Field(description=CONTACT_PREFERENCE)
    suspended_reason: str | None
    created_at: datetime
    updated_at: datetime


class VolunteerDetail(VolunteerOut):
    eligible: bool = Field(description="alertable now, by the one eligibility rule")
    certifications: list[CertificationOut]
    places: list[PlaceOut]


class TokenOut(BaseModel):
    id: uuid.UUID = Field(description="for listing and revoking it later")
    token: str = Field(description="shown once; only its hash is stored")


class TokenInfo(BaseModel):
    """A volunteer's app token as stored: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    prefix: str = Field(description="the token's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ImportLineError(BaseModel):
    line: int = Field(description="1-based line (or GeoJSON feature index) in the upload")
    field: str | None
    message: str


class ImportReport(BaseModel):
    created: int
    rejected: int = Field(description="every refused line, counted")
    errors: list[ImportLineError] = Field(description="the first 100 refused lines, in file order")

    @classmethod
    def of(cls, outcome: ImportOutcome) -> ImportReport:
        return cls(
            created=outcome.created,
            rejected=outcome.rejected,
            errors=[
                ImportLineError(line=error.line, field=error.field, message=error.message)
                for error in outcome.errors
            ],
        )
