"""The incident event stream as the OpenAPI document describes it.

One server-sent event is ``id`` (the event's number within the incident),
``event`` (its type) and ``data`` (a JSON object). The ``text/event-stream`` schema
describes that event object, and gives the JSON inside ``data`` its own schema per
event type (``contentMediaType`` + ``contentSchema``), so a client generator or a
schema checker (schemathesis validates each event against it) knows every payload.

Every ``data`` object carries ``type`` (the event's name) and ``at`` besides the
fields of its type. A new event type gets a payload model here, in ``PAYLOADS``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["cpr", "aed"]


class EventPayload(BaseModel):
    type: str
    at: datetime


class IncidentCreated(EventPayload):
    status: str
    not_alerted_reason: str | None
    duplicate_of: str | None
    alerted: int


class QueuedAlert(BaseModel):
    """A band, not metres (``dispatch.views.DISTANCE_BANDS``): dispatchers read the stream."""

    id: str
    distance_band: Literal["0-100", "100-250", "250-500", "500+"]
    alerted_as: Literal["selection", "rerun", "replacement", "widening"]


class AlertsQueued(EventPayload):
    alerts: list[QueuedAlert]


class AlertDelivery(EventPayload):
    alert_id: str
    delivery_status: Literal["sending", "sent", "delivered", "undelivered", "failed"]


class AlertCall(EventPayload):
    """What Twilio said of an alert's call (``dispatch.voice``); only forward."""

    alert_id: str
    call_status: Literal[
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "no-answer",
        "failed",
        "canceled",
    ]
    answered_by: str | None = Field(
        description="answering-machine detection: human, machine_start, fax, unknown"
    )


class AlertAccepted(EventPayload):
    alert_id: str
    role: Role | None


class AlertAnswered(EventPayload):
    """``alert.arrived``."""

    alert_id: str


class AlertDeclined(EventPayload):
    """Not coming: a NO, or STOP/PAUSE/erasure of a volunteer still pending (``reason``)."""

    alert_id: str
    reason: Literal["decline", "stop", "pause", "erased"] = "decline"


class AlertWithdrawn(EventPayload):
    """The role is given up: a WITHDRAW, or STOP/PAUSE/erasure of a role holder (``reason``)."""

    alert_id: str
    role: Role | None
    reason: Literal["withdraw", "stop", "pause", "erased"] = "withdraw"


class AlertsEnded(EventPayload):
    """``alerts.stood_down`` and ``alerts.no_reply``."""

    alert_ids: list[str]


class LatLonPayload(BaseModel):
    lat: float
    lon: float


class IncidentUpdated(EventPayload):
    status: str
    address: str | None = None
    access_notes: str | None = None
    flags: dict[str, bool] | None = None
    location: LatLonPayload | None = None
    ems_eta_at: datetime | None = None
    ems_arrived_at: datetime | None = None


class IncidentReplanned(EventPayload):
    """After a move: the AED the roles now refer to, who was stood down, who changed role."""

    nearest_aed_id: str | None
    stood_down: list[str]
    redirected: list[str]


class AlertsReplaced(EventPayload):
    """The alerts that freed places in the batch (a NO, a WITHDRAW, the silent) and
    the alerts that took them (``docs/strategies.md``)."""

    replaced: list[str]
    alerts: list[str]


class RadiusWidened(EventPayload):
    radius_m: int
    previous_radius_m: int


class IncidentCancelled(EventPayload):
    status: Literal["cancelled"]
    reason: str | None


class IncidentClosed(EventPayload):
    status: Literal["closed"]
    outcome: str | None
    automatic: bool


PAYLOADS: dict[str, type[EventPayload]] = {
    "incident.created": IncidentCreated,
    "alerts.queued": AlertsQueued,
    "alert.delivery": AlertDelivery,
    "alert.call": AlertCall,
    "alert.accepted": AlertAccepted,
    "alert.declined": AlertDeclined,
    "alert.withdrawn": AlertWithdrawn,
    "alert.arrived": AlertAnswered,
    "alerts.stood_down": AlertsEnded,
    "alerts.no_reply": AlertsEnded,
    "incident.updated": IncidentUpdated,
    "incident.replanned": IncidentReplanned,
    "alerts.replaced": AlertsReplaced,
    "incident.radius_widened": RadiusWidened,
    "incident.cancelled": IncidentCancelled,
    "incident.closed": IncidentClosed,
}


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """The schema with its local ``$defs`` references replaced by their targets.

    A ``contentSchema`` is read on its own, apart from the document: it cannot lean
    on definitions elsewhere.
    """
    if isinstance(schema, dict):
        reference = schema.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            return _inlined(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


def payload_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type's ``data``, self-contained."""
    schema = PAYLOADS[event_type].model_json_schema(mode="serialization")
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inlined(schema, definitions)
    inlined["properties"]["type"] = {"const": event_type}
    return inlined


def event_stream_schema() -> dict[str, Any]:
    """The schema of one server-sent event of ``GET /v1/incidents/{id}/events``."""
    return {
        "type": "object",
        "description": "One server-sent event; `data` is JSON shaped by `event`.",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "event": {"type": "string", "enum": list(PAYLOADS)},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "retry": {"type": "integer"},
        },
        "oneOf": [
            {
                "properties": {
                    "event": {"const": event_type},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": payload_schema(event_type),
                    },
                },
            }
            for event_type in PAYLOADS
        ],
    }
