"""Live-location bodies: one fix from the app, many from the positioning feed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from app.api.schemas.common import Latitude, Longitude, StrictInput
from app.registry import locations

MAX_BULK_ITEMS = 10_000
Accuracy = Annotated[float, Field(strict=True, ge=0, le=100_000, allow_inf_nan=False)]


class LocationFix(StrictInput):
    lat: Latitude
    lon: Longitude
    accuracy_m: Accuracy = Field(description="radius of the 68 % confidence circle, metres")
    recorded_at: AwareDatetime = Field(description="when the device measured it")

    def to_domain(self) -> locations.LocationFix:
        return locations.LocationFix(
            lat=self.lat, lon=self.lon, accuracy_m=self.accuracy_m, recorded_at=self.recorded_at
        )


class BulkLocationItem(LocationFix):
    """One volunteer's position, named by ``volunteer_id`` or ``phone`` (exactly one)."""

    volunteer_id: uuid.UUID | None = None
    phone: Annotated[str, Field(min_length=3, max_length=40)] | None = None

    @model_validator(mode="after")
    def _one_identity(self) -> BulkLocationItem:
        if (self.volunteer_id is None) == (self.phone is None):
            raise ValueError("give exactly one of volunteer_id and phone")
        return self

    def to_feed_fix(self, index: int) -> locations.FeedFix:
        return locations.FeedFix(
            index=index,
            fix=self.to_domain(),
            volunteer_id=self.volunteer_id,
            phone=self.phone,
        )


class BulkLocations(StrictInput):
    """Items are validated one by one so that one bad item does not refuse the rest."""

    locations: Annotated[
        list[Any],
        Field(min_length=1, max_length=MAX_BULK_ITEMS),
        WithJsonSchema(
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BULK_ITEMS,
                "items": BulkLocationItem.model_json_schema(),
            }
        ),
    ]


class LocationResult(BaseModel):
    status: Literal["accepted", "stale"] = Field(
        description="stale: a newer fix is already stored (or this one is too old to keep)"
    )


class BulkItemError(BaseModel):
    index: int
    field: str | None
    message: str


class BulkResult(BaseModel):
    """Counts, then the items that were not stored (by index in the request)."""

    accepted: int
    stale: list[int]
    errors: list[BulkItemError]


_bulk_item = TypeAdapter(BulkLocationItem)


def validate_feed(items: list[Any]) -> tuple[list[locations.FeedFix], list[BulkItemError]]:
    """Each item validated on its own: the well-formed ones, and an error for each other."""
    valid: list[locations.FeedFix] = []
    errors: list[BulkItemError] = []
    for index, raw in enumerate(items):
        try:
            valid.append(_bulk_item.validate_python(raw).to_feed_fix(index))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or None
            errors.append(BulkItemError(index=index, field=field, message=error["msg"]))
    return valid, errors


def bulk_result(outcome: locations.FeedOutcome, invalid: list[BulkItemError]) -> BulkResult:
    """The registry's outcome, with the items refused before it, in request order."""
    errors = invalid + [
        BulkItemError(index=error.index, field=error.field, message=error.message)
        for error in outcome.errors
    ]
    errors.sort(key=lambda error: error.index)
    return BulkResult(accepted=outcome.accepted, stale=outcome.stale, errors=errors)


class LiveLocationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    lat: float
    lon: float
    accuracy_m: float
    recorded_at: datetime
    source: str
