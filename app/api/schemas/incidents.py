"""Incident requests and responses.

The request is strict: unknown fields or flags, an unknown kind, a string where a
number belongs, out-of-range or NaN coordinates are a 422 naming the field. The
response models live in ``dispatch.views`` (the same shape feeds the SSE stream).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from app.api.schemas.common import Coordinates, EmsEta, StrictInput
from app.core.settings import IncidentKind
from dispatch.alerting import SCENE_FLAGS, NewIncident
from dispatch.views import AlertView, IncidentView

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
        )


class SelectionExplanation(BaseModel):
    """Why one volunteer was or was not alerted, from the recorded selection.

    ``outcome`` is ``alerted``, an eligibility rule (``not_active``, ``opted_out``,
    ``paused``, ``no_valid_certification``), ``no_usable_location``, ``cooldown``,
    ``busy``, ``slower_than_ems`` (would arrive after the ambulance), ``over_cap``, or
    ``not_within_radius``; ``selection_ran`` is false when the incident was not
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


__all__ = ["AlertView", "IncidentCreate", "IncidentView", "SceneFlags", "SelectionExplanation"]
