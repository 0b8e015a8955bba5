"""Requests that act on an incident after creation: update, cancel, close."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from app.api.schemas.common import Coordinates, EmsEta, StrictInput
from dispatch.lifecycle import IncidentChanges

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class FlagsUpdate(StrictInput):
    """Only the flags named change; an unknown flag is refused."""

    patient_under_8: bool | None = None
    trauma: bool | None = None
    intoxication: bool | None = None
    suicide: bool | None = None
    unsafe_scene: bool | None = None
    healthcare_facility: bool | None = None


class IncidentUpdate(StrictInput):
    """Fields left out are unchanged; ``"access_notes": null`` clears the notes."""

    address: Annotated[Text, Field(max_length=300)] | None = None
    access_notes: Annotated[str, Field(max_length=2000)] | None = None
    flags: FlagsUpdate | None = None
    location: Coordinates | None = None
    ems_eta_s: EmsEta | None = None
    ems_arrived: Annotated[
        bool,
        Field(description="true: the ambulance is there; pending volunteers are stood down"),
    ] = False

    def to_changes(self) -> IncidentChanges:
        flags = None
        if self.flags is not None:
            flags = {
                name: value for name, value in self.flags.model_dump().items() if value is not None
            }
        return IncidentChanges(
            address=self.address,
            access_notes=self.access_notes,
            clear_access_notes="access_notes" in self.model_fields_set
            and self.access_notes is None,
            flags=flags,
            location=self.location.to_latlon() if self.location is not None else None,
            ems_eta_s=self.ems_eta_s,
            ems_arrived=self.ems_arrived,
        )


class CancelRequest(StrictInput):
    reason: Annotated[str, Field(max_length=500)] | None = None


class CloseRequest(StrictInput):
    outcome: Annotated[str, Field(max_length=500)] | None = None
