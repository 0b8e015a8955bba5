"""AED bodies: location, address, description, access (always or weekly hours), status."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, ValidationError

from app.api.schemas.common import Coordinates, Schedule, ScheduleWindow, StrictInput
from app.registry.aeds import AedChanges, NewAed, StoredAed
from app.registry.uploads import LineErrors

AedStatus = Literal["active", "out_of_service"]
Access = Literal["always"] | Schedule
Address = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class AedCreate(StrictInput):
    location: Coordinates
    address: Address
    description: Description | None = None
    access: Access = Field(
        default="always", description='"always" or weekly opening hours in the TIMEZONE setting'
    )
    status: AedStatus = "active"

    def to_domain(self) -> NewAed:
        return NewAed(
            location=self.location.to_latlon(),
            address=self.address,
            description=self.description,
            access=_access(self.access),
            status=self.status,
        )


def _access(access: Literal["always"] | list[ScheduleWindow]) -> Literal["always"] | list[Any]:
    return access if isinstance(access, str) else [window.model_dump() for window in access]


class AedUpdate(StrictInput):
    """Fields present are changed."""

    location: Coordinates | None = None
    address: Address | None = None
    description: Description | None = None
    access: Access | None = None
    status: AedStatus | None = None

    def to_changes(self) -> AedChanges:
        changes = cast(AedChanges, {name: getattr(self, name) for name in self.model_fields_set})
        if self.location is not None:
            changes["location"] = self.location.to_latlon()
        if self.access is not None:
            changes["access"] = _access(self.access)
        return changes


class AedOut(BaseModel):
    id: uuid.UUID
    location: Coordinates
    address: str
    description: str | None
    access: Literal["always"] | list[dict[str, Any]]
    status: AedStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, aed: StoredAed) -> AedOut:
        return cls(
            id=aed.id,
            location=Coordinates.from_latlon(aed.location),
            address=aed.address,
            description=aed.description,
            access=aed.access,
            status=aed.status,
            created_at=aed.created_at,
            updated_at=aed.updated_at,
        )


_aed_input = TypeAdapter(AedCreate)


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    error = exc.errors()[0]
    # Drop union-member tags such as "literal['always']" from the location.
    field = ".".join(str(part) for part in error["loc"] if "[" not in str(part)) or None
    return field, error["msg"]


def validate_aed_entries(
    entries: list[tuple[int, dict[str, Any]]], *, errors: LineErrors
) -> list[NewAed]:
    """Each entry of an import file judged by the same schema as one AED sent alone;
    the refused ones are added to ``errors``."""
    valid: list[NewAed] = []
    for line, raw in entries:
        try:
            valid.append(_aed_input.validate_python(raw).to_domain())
        except ValidationError as exc:
            errors.add(line, *_first_error(exc))
    return valid
