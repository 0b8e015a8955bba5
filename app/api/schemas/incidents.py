"""Incident requests and responses.

The request is strict: unknown fields or flags, an unknown kind, a string where a
number belongs, out-of-range or NaN coordinates are a 422 naming the field. The
responses render the read model of ``dispatch.views`` (``IncidentView.model_validate``
of an ``IncidentSnapshot``), attribute by attribute.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.api.schemas.common import Coordinates, EmsEta, StrictInput
from app.core.settings import IncidentKind
from dispatch.alerting import SCENE_FLAGS, NewIncident

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class SceneFlags(StrictInput):
    """Missing flags are false; an unknown flag is refused."""

    patient_under_8: bool = False
    trauma: bool = False
    intoxication: bool = False
    suicide: bool = False
    unsafe_scene: bool = False
    healthcare_facility: bool = False


class IncidentCreate(StrictInput):
    external_ref: Annotated[Text, Field(max_length=200, examples=["CAD-2026-000123"])]
    kind: IncidentKind
    location: Coordinates
    address: Annotated[Text, Field(max_length=300, examples=["Drottninggatan 1, Stockholm"])]
    access_notes: Annotated[str, Field(max_length=2000)] | None = None
    flags: SceneFlags = Field(default_factory=SceneFlags)
    alert: bool = True
    ems_eta_s: EmsEta | None = None
    exercise: bool = Field(
        default=False,
        description="A drill: the whole alert path runs, its texts start with EXERCISE "
        "(ÖVNING), and it is left out of every statistic.",
    )

    def to_request(self) -> NewIncident:
        return NewIncident(
            external_ref=self.external_ref,
            kind=self.kind,
            location=self.location.to_latlon(),
            address=self.address,
            access_notes=self.access_notes,
            flags={name: getattr(self.flags, name) for name in SCENE_FLAGS},
            alert=self.alert,
            ems_eta_s=self.ems_eta_s,
            exercise=self.exercise,
        )


class ReadModel(BaseModel):
    """A response read off a dispatch dataclass, attribute by attribute."""

    model_config = ConfigDict(from_attributes=True)


class PointView(ReadModel):
    lat: float
    lon: float


class NearestAedView(ReadModel):
    id: uuid.UUID
    distance_m: int
    address: str
    description: str | None


class Counts(ReadModel):
    alerted: int = 0
    delivered: int = 0
    accepted: int = 0
    declined: int = 0
    withdrawn: int = 0
    no_reply: int = 0
    failed: int = 0
    arrived: int = 0
    stood_down: int = 0


class ResponderView(ReadModel):
    volunteer_id: uuid.UUID
    name: str | None
    phone: str | None
    role: str
    distance_m: int
    accepted_at: datetime | None
    arrived_at: datetime | None
    estimated_arrival_at: datetime | None


class IncidentView(ReadModel):
    id: uuid.UUID
    external_ref: str
    kind: str
    status: str
    not_alerted_reason: str | None
    duplicate_of: uuid.UUID | None
    radius_m: int
    ems_eta_at: datetime | None
    ems_arrived_at: datetime | None
    location: PointView
    address: str
    access_notes: str | None
    flags: dict[str, bool]
    alert: bool
    exercise: bool
    nearest_aed: NearestAedView | None
    counts: Counts
    responders: list[ResponderView]
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    closed_at: datetime | None


class AlertView(ReadModel):
    """For a dispatcher, a volunteer who has not accepted is an alert id and a band."""

    id: uuid.UUID
    volunteer_id: uuid.UUID | None = Field(
        description="null for a dispatcher unless the volunteer accepted"
    )
    name: str | None
    phone: str | None
    distance_band: Literal["0-100", "100-250", "250-500", "500+"] = Field(
        description="metres from the incident, upper bounds inclusive"
    )
    distance_m: int | None = Field(description="null for a dispatcher unless accepted")
    location_source: str | None
    alerted_as: str
    aed_detour_m: int | None
    delivery_status: str
    delivery_updated_at: datetime | None
    call_status: str | None = Field(
        description="the alert's call (voice alerts, docs/dispatch.md): queued, initiated, "
        "ringing, in-progress, completed, busy, no-answer, failed or canceled; null: no call"
    )
    response: str
    responded_at: datetime | None
    role: str | None
    accepted_at: datetime | None
    arrived_at: datetime | None
    stood_down_at: datetime | None
    cancelled_at: datetime | None
    replaced_at: datetime | None
    created_at: datetime


class SelectionExplanation(BaseModel):
    """Why one volunteer was or was not alerted, from the recorded selection.

    ``outcome`` is ``alerted``, an eligibility rule (``not_active``, ``no_consent``,
    ``opted_out``,
    ``paused``, ``no_valid_certification``), ``no_usable_location``, ``cooldown``,
    ``busy``, ``slower_than_ems`` (would arrive after the ambulance), ``over_cap``,
    ``not_within_radius``, or ``record_purged`` (older than
    ``SELECTION_RECORD_RETENTION``); ``selection_ran`` is false when the incident was not
    alerted before selection (``not_alerted_reason`` says why). For an alerted
    volunteer, ``alerted_as`` says how (``selection``, ``rerun``, ``replacement``,
    ``widening``) and ``alerted_at`` when.
    """

    incident_id: uuid.UUID
    volunteer_id: uuid.UUID
    outcome: str
    distance_m: int | None
    selection_ran: bool
    not_alerted_reason: str | None
    alerted_as: str | None = None
    alerted_at: datetime | None = None
