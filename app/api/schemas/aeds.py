"""AED bodies: location, address, description, access (always or weekly hours), status."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.api.schemas.common import Coordinates, Schedule, StrictInput

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


class AedUpdate(StrictInput):
    """Fields present are changed."""

    location: Coordinates | None = None
    address: Address | None = None
    description: Description | None = None
    access: Access | None = None
    status: AedStatus | None = None


class AedOut(BaseModel):
    id: uuid.UUID
    location: Coordinates
    address: str
    description: str | None
    access: Literal["always"] | list[dict[str, Any]]
    status: AedStatus
    created_at: datetime
    updated_at: datetime
