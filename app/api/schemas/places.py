"""Place bodies: a volunteer's registered location with an optional weekly schedule."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from app.api.schemas.common import Coordinates, Schedule, StrictInput, TimeZoneName


class PlaceCreate(StrictInput):
    label: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    location: Coordinates
    timezone: TimeZoneName | None = Field(
        default=None, description="IANA zone of the schedule; default the TIMEZONE setting"
    )
    schedule: Schedule | None = Field(default=None, description="none = always")


class PlaceOut(BaseModel):
    id: uuid.UUID
    volunteer_id: uuid.UUID
    label: str
    location: Coordinates
    timezone: str
    schedule: list[dict[str, Any]] | None
    created_at: datetime
