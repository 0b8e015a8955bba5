"""Place bodies: a volunteer's registered location with an optional weekly schedule."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from app.api.schemas.common import (
    Coordinates,
    Schedule,
    StrictInput,
    TimeZoneName,
    schedule_windows,
)
from app.registry.places import NewPlace, StoredPlace


class PlaceCreate(StrictInput):
    label: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    location: Coordinates
    timezone: TimeZoneName | None = Field(
        default=None, description="IANA zone of the schedule; default the TIMEZONE setting"
    )
    schedule: Schedule | None = Field(default=None, description="none = always")

    def to_domain(self) -> NewPlace:
        return NewPlace(
            label=self.label,
            location=self.location.to_latlon(),
            timezone=self.timezone,
            schedule=schedule_windows(self.schedule) if self.schedule else None,
        )


class PlaceOut(BaseModel):
    id: uuid.UUID
    volunteer_id: uuid.UUID
    label: str
    location: Coordinates
    timezone: str
    schedule: list[dict[str, Any]] | None
    created_at: datetime

    @classmethod
    def of(cls, place: StoredPlace) -> PlaceOut:
        return cls(
            id=place.id,
            volunteer_id=place.volunteer_id,
            label=place.label,
            location=Coordinates.from_latlon(place.location),
            timezone=place.timezone,
            schedule=place.schedule,
            created_at=place.created_at,
        )
