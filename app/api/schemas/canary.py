"""The canary run's request (``responder canary``, docs/reliability.md "Probes")."""

from __future__ import annotations

from pydantic import Field

from app.api.schemas.common import Coordinates, StrictInput
from app.api.schemas.volunteers import PhoneInput


class CanaryRun(StrictInput):
    phone: PhoneInput = Field(
        description="the test phone; a phone registered to a volunteer is refused (409)"
    )
    location: Coordinates = Field(
        description="where the canary volunteer is placed and the exercise is posted"
    )
