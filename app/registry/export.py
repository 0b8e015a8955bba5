"""Everything the service holds about one volunteer, as JSON they can download.

The answer to a data subject's access request: profile, consent (time and text
version), places, the live location, certifications (and whether a file is
attached), every alert with its response, times and report, the texts exchanged,
app tokens (never the token itself), what was changed in their record and by
whom, and who read their personal data and when (``access_log``).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import (
    AccessLog,
    Alert,
    AlertReport,
    ApiKey,
    AuditLog,
    Incident,
    Message,
)
from app.registry.attachments import attachment_types
from app.registry.certifications import certifications_of
from app.registry.locations import current_location
from app.registry.places import places_of
from app.registry.volunteers import get_volunteer

CERTIFICATION_FIELDS = (
    "id",
    "kind",
    "issued_on",
    "expires_on",
    "issuer",
    "reference",
    "status",
    "status_reason",
    "decided_by",
    "decided_at",
    "reminder_sent_at",
    "created_at",
)


def _plain(value: Any) -> Any:
    """JSON-ready: dates and ids as strings, dataclasses as objects, all the way down."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _record(row: Any) -> dict[str, Any]:
    return {key: _plain(value) for key, value in row._mapping.items()}


async def alert_history(
    session: AsyncSession, volunteer_id: uuid.UUID, *, limit: int | None = None
) -> list[Any]:
    """The volunteer's alerts, newest first, with response, times and their report."""
    statement = (
        select(
            Alert.id,
            Alert.incident_id,
            Incident.kind.label("incident_kind"),
            Incident.address.label("incident_address"),
            Alert.code,
            Alert.distance_m,
            Alert.delivery_status,
            Alert.response,
            Alert.responded_at,
            Alert.role,
            Alert.accepted_at,
            Alert.arrived_at,
            Alert.stood_down_at,
            Alert.cancelled_at,
            Alert.created_at,
            AlertReport.gave_cpr.label("report_gave_cpr"),
            AlertReport.aed_used.label("report_aed_used"),
            AlertReport.arrived_before_ems.label("report_arrived_before_ems"),
            AlertReport.wants_contact.label("report_wants_contact"),
        )
        .join(Incident, Incident.id == Alert.incident_id)
        .outerjoin(AlertReport, AlertReport.alert_id == Alert.id)
        .where(Alert.volunteer_id == volunteer_id)
        .order_by(Alert.created_at.desc(), Alert.id)
        .limit(limit)
    )
    return list(await session.execute(statement))


async def export_volunteer(session: AsyncSession, volunteer_id: uuid.UUID) -> dict[str, Any]:
    volunteer = await get_volunteer(session, volunteer_id)
    certifications = await certifications_of(session, volunteer_id)
    attached = await attachment_types(session, [item.id for item in certifications])
    location = await current_location(session, volunteer_id)
    messages = await session.execute(
        select(Message.direction, Message.purpose, Message.body, Message.status, Message.created_at)
        .where(Message.volunteer_id == volunteer_id)
        .order_by(Message.created_at, Message.id)
    )
    tokens = await session.execute(
        select(ApiKey.prefix, ApiKey.created_at, ApiKey.last_used_at, ApiKey.revoked_at)
        .where(ApiKey.volunteer_id == volunteer_id)
        .order_by(ApiKey.created_at)
    )
    certification_ids = [str(item.id) for item in certifications]
    changes = await session.execute(
        select(AuditLog.created_at.label("at"), AuditLog.actor_name.label("by"), AuditLog.action)
        .where(
            or_(
                (AuditLog.target_type == "volunteer") & (AuditLog.target_id == str(volunteer_id)),
                (AuditLog.target_type == "certification")
                & AuditLog.target_id.in_(certification_ids),
            )
        )
        .order_by(AuditLog.created_at, AuditLog.id)
    )
    reads = await session.execute(
        select(
            AccessLog.first_at.label("at"),
            AccessLog.reader_name.label("by"),
            AccessLog.what,
            AccessLog.target_id,
        )
        .where(AccessLog.volunteer_id == volunteer_id)
        .order_by(AccessLog.first_at)
    )
    return {
        "profile": {
            "id": str(volunteer.id),
            "name": volunteer.name,
            "phone": volunteer.phone,
            "email": volunteer.email,
            "language": volunteer.language,
            "status": volunteer.status,
            "opted_out": volunteer.opted_out,
            "paused_until": _plain(volunteer.paused_until),
            "created_at": _plain(volunteer.created_at),
            "updated_at": _plain(volunteer.updated_at),
        },
        "consent": {
            "given_at": _plain(volunteer.consent_at),
            "version": volunteer.consent_version,
        },
        "places": _plain(await places_of(session, volunteer_id)),
        "live_location": _plain(location),
        "certifications": [
            {name: _plain(getattr(item, name)) for name in CERTIFICATION_FIELDS}
            | {"attachment": attached.get(item.id)}
            for item in certifications
        ],
        "alerts": [_record(row) for row in await alert_history(session, volunteer_id)],
        "messages": [_record(row) for row in messages],
        "app_tokens": [_record(row) for row in tokens],
        "changes": [_record(row) for row in changes],
        "accessed_by": [_record(row) for row in reads],
    }
