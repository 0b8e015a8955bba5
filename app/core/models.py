"""The shared data layer: every table, as typed SQLAlchemy models.

``app``, ``dispatch`` and ``geo`` all use these models; nothing here imports FastAPI.
Relationships are ``lazy="raise"`` so that a query loads what it needs explicitly
and the alert path never pays for an accidental lazy load.

Weekly schedules (place schedules, AED opening hours) are stored twice on purpose:
as the JSON the client sent (echoed back) and as an ``int4multirange`` of minutes of
the week (Monday 00:00 = 0), which the candidate query tests with one ``@>``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from geoalchemy2 import Geography
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import INT4MULTIRANGE, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

POINT = Geography(geometry_type="POINT", srid=4326, spatial_index=False)
# World Mercator (conformal on WGS84): the candidate search walks a GiST index on each
# point projected to it, about three times faster than the geography index (the
# reasoning and the error bound are in ``geo/search.py``).
MERCATOR_SRID = 3395
MERCATOR_KNN_INDEX = f"ST_Transform(geometry(location), {MERCATOR_SRID})"


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def _brin_on_created_at(table: str) -> Index:
    """A BRIN index for the retention job's range scans (``app/registry/retention.py``).

    Rows are inserted in time order, so a block-range index finds a day's rows for a
    few kilobytes of index and almost no cost per insert (a B-tree on these tables
    would cost every alert, message and event an extra index write).
    """
    return Index(f"ix_{table}_created_at_brin", "created_at", postgresql_using="brin")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiKey(Base):
    """A bearer credential with exactly one role; only its SHA-256 is stored."""

    __tablename__ = "api_key"
    __table_args__ = (
        CheckConstraint(
            "role IN ('admin', 'dispatcher', 'locator', 'volunteer')", name="role_known"
        ),
        CheckConstraint("role <> 'dispatcher' OR centre IS NOT NULL", name="dispatcher_centre"),
        CheckConstraint("role <> 'volunteer' OR volunteer_id IS NOT NULL", name="volunteer_link"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    centre: Mapped[str | None] = mapped_column(String(200))
    volunteer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("volunteer.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _created_at()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditLog(Base):
    """Who did what to the registry, and when; written in the same transaction."""

    __tablename__ = "audit_log"
    __table_args__ = (_brin_on_created_at("audit_log"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # The person behind a console action (the staff user's id in actor_key_id's place).
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    actor_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str] = mapped_column(String(50))
    target_id: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = _created_at()


class Volunteer(Base):
    __tablename__ = "volunteer"
    __table_args__ = (
        CheckConstraint("language IN ('sv', 'en')", name="language_known"),
        CheckConstraint("status IN ('active', 'suspended', 'erased')", name="status_known"),
        CheckConstraint(
            "contact_preference IN ('sms', 'voice', 'sms_then_voice')",
            name="contact_preference_known",
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(2), default="sv")
    status: Mapped[str] = mapped_column(String(20), default="active")
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    consent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    consent_version: Mapped[str | None] = mapped_column(String(50))
    # Asked by SMS (CSV import without recorded consent); YES records ``consent_at``.
    consent_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    contact_preference: Mapped[str] = mapped_column(
        String(20), default="sms", server_default=text("'sms'")
    )
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """A test phone for ``responder canary``: never selected for a real incident."""
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    certifications: Mapped[list[Certification]] = relationship(
        back_populates="volunteer", lazy="raise"
    )
    places: Mapped[list[Place]] = relationship(back_populates="volunteer", lazy="raise")


class Certification(Base):
    __tablename__ = "certification"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('cpr', 'cpr_aed', 'first_aid', 'healthcare_professional')",
            name="kind_known",
        ),
        CheckConstraint(
            "status IN ('pending', 'verified', 'rejected', 'revoked')", name="status_known"
        ),
        CheckConstraint("expires_on >= issued_on", name="expiry_after_issue"),
        Index("ix_certification_status_expires_on", "status", "expires_on"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    volunteer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("volunteer.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(30))
    issued_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date] = mapped_column(Date)
    issuer: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    status_reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reminder_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    volunteer: Mapped[Volunteer] = relationship(back_populates="certifications", lazy="raise")


class Place(Base):
    """A registered location (home, work); ``active_minutes`` NULL means always."""

    __tablename__ = "place"
    __table_args__ = (
        Index("ix_place_location", "location", postgresql_using="gist"),
        Index("ix_place_location_mercator", text(MERCATOR_KNN_INDEX), postgresql_using="gist"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    volunteer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("volunteer.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(100))
    location: Mapped[Any] = mapped_column(POINT)
    timezone: Mapped[str] = mapped_column(String(64))
    schedule: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    active_minutes: Mapped[Any | None] = mapped_column(INT4MULTIRANGE)
    created_at: Mapped[datetime] = _created_at()

    volunteer: Mapped[Volunteer] = relationship(back_populates="places", lazy="raise")


class LiveLocation(Base):
    """The latest position only: one row per volunteer, never a history."""

    __tablename__ = "live_location"
    __table_args__ = (
        Index("ix_live_location_location", "location", postgresql_using="gist"),
        # Nearest-first with the freshness test inside the index (btree_gist, 0015).
        Index(
            "ix_live_location_mercator_recorded_at",
            text(MERCATOR_KNN_INDEX),
            "recorded_at",
            postgresql_using="gist",
        ),
        CheckConstraint("accuracy_m >= 0", name="accuracy_positive"),
    )

    volunteer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("volunteer.id", ondelete="CASCADE"), primary_key=True
    )
    location: Mapped[Any] = mapped_column(POINT)
    accuracy_m: Mapped[float] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    source: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = _updated_at()


class Aed(Base):
    __tablename__ = "aed"
    __table_args__ = (
        Index("ix_aed_location", "location", postgresql_using="gist"),
        CheckConstraint("status IN ('active', 'out_of_service')", name="status_known"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    location: Mapped[Any] = mapped_column(POINT)
    address: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    access: Mapped[Any] = mapped_column(JSONB)
    open_minutes: Mapped[Any | None] = mapped_column(INT4MULTIRANGE)
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class Incident(Base):
    __tablename__ = "incident"
    __table_args__ = (
        UniqueConstraint("centre", "external_ref", name="uq_incident_centre_external_ref"),
        Index("ix_incident_location", "location", postgresql_using="gist"),
        Index("ix_incident_status_created_at", "status", "created_at"),
        CheckConstraint(
            "status IN ('alerting', 'not_alerted', 'cancelled', 'closed')", name="status_known"
        ),
        CheckConstraint("canary_volunteer_id IS NULL OR exercise", name="canary_is_exercise"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    centre: Mapped[str] = mapped_column(String(200))
    external_ref: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(30))
    location: Mapped[Any] = mapped_column(POINT)
    address: Mapped[str] = mapped_column(String(300))
    access_notes: Mapped[str | None] = mapped_column(Text)
    flags: Mapped[dict[str, bool]] = mapped_column(JSONB, default=dict)
    alert_requested: Mapped[bool] = mapped_column(Boolean, default=True)
    exercise: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """A drill: texts marked ``EXERCISE``/``ÖVNING``, left out of every statistic."""
    canary_volunteer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("volunteer.id"))
    """Set by ``responder canary``: every selection of the incident alerts this volunteer only."""
    status: Mapped[str] = mapped_column(String(20))
    not_alerted_reason: Mapped[str | None] = mapped_column(String(50))
    duplicate_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("incident.id"))
    radius_m: Mapped[float] = mapped_column(Float)
    cpr_slots: Mapped[int] = mapped_column(Integer)
    aed_slots: Mapped[int] = mapped_column(Integer)
    nearest_aed_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("aed.id"))
    nearest_aed_distance_m: Mapped[float | None] = mapped_column(Float)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    close_outcome: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    selection_recorded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    selected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When selection last ran (creation, or a re-run after a move or a withdrawal)."""
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """The number of the incident's latest event; taken under the row lock (``record_event``)."""
    # When the first ambulance is expected (``ems_eta_s`` of the request, made absolute)
    # and when the dispatcher said it arrived; the EMS rule of docs/strategies.md.
    ems_eta_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ems_arrived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Last widening step (``WIDEN_AFTER`` counts from it; unset = from ``created_at``).
    radius_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Alert(Base):
    """One per (incident, volunteer): delivery, response and outcome kept apart."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("incident_id", "volunteer_id", name="uq_alert_incident_volunteer"),
        Index("ix_alert_volunteer_created_at", "volunteer_id", "created_at"),
        Index(
            "ix_alert_open_response",
            "response",
            postgresql_where=text("response IN ('pending', 'accepted')"),
        ),
        CheckConstraint(
            "delivery_status IN "
            "('queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed')",
            name="delivery_known",
        ),
        CheckConstraint(
            "response IN ('pending', 'accepted', 'declined', 'withdrawn', 'no_reply')",
            name="response_known",
        ),
        CheckConstraint("role IS NULL OR role IN ('cpr', 'aed')", name="role_known"),
        CheckConstraint(
            "alerted_as IN ('selection', 'rerun', 'replacement', 'widening')",
            name="alerted_as_known",
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    volunteer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("volunteer.id"))
    code: Mapped[str] = mapped_column(String(8))
    distance_m: Mapped[float] = mapped_column(Float)
    location_source: Mapped[str] = mapped_column(String(10))
    aed_detour_m: Mapped[float | None] = mapped_column(Float)
    aed_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("aed.id"))
    """The AED an ``aed`` role holder was sent to fetch (it stays theirs after a move)."""
    delivery_status: Mapped[str] = mapped_column(String(20), default="queued")
    delivery_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    response: Mapped[str] = mapped_column(String(20), default="pending")
    responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    role: Mapped[str | None] = mapped_column(String(10))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    arrived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stood_down_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why this volunteer was alerted: the first selection, a re-run (new location,
    # withdrawal), a replacement of a decliner or a silent volunteer, or a widening.
    alerted_as: Mapped[str] = mapped_column(
        String(20), default="selection", server_default=text("'selection'")
    )
    # A silent volunteer who was replaced: still able to accept, no longer in the batch.
    replaced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Accepted time plus the estimated walk (via the AED for the AED role).
    estimated_arrival_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class Message(Base):
    """Every SMS in and out. Outbound rows are also the send queue of the worker.

    ``status`` of an outbound row: queued → sending → sent → delivered, or
    undelivered / failed; ``sending`` also while the outcome of a request is
    unknown (it may be at the provider). ``deadline_at`` is when an unsent message
    stops being worth sending (for an alert, ``ALERT_SEND_DEADLINE`` after it was
    queued). ``priority`` orders the worker's claim (``app/core/outbox.py``).
    """

    __tablename__ = "message"
    __table_args__ = (
        Index(
            "ix_message_outbound_queue",
            "priority",
            "next_attempt_at",
            postgresql_where=text("direction = 'out' AND status IN ('queued', 'sending')"),
        ),
        Index("ix_message_alert_id", "alert_id"),
        _brin_on_created_at("message"),
        CheckConstraint("direction IN ('in', 'out')", name="direction_known"),
        CheckConstraint("channel IN ('sms', 'voice')", name="channel_known"),
        # At most one alert call per alert (per volunteer and incident).
        Index(
            "ix_message_alert_call",
            "alert_id",
            unique=True,
            postgresql_where=text("channel = 'voice' AND purpose IN ('alert', 'alert_call')"),
        ),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    direction: Mapped[str] = mapped_column(String(3))
    purpose: Mapped[str] = mapped_column(String(30))
    priority: Mapped[int] = mapped_column(SmallInteger, default=2, server_default=text("2"))
    alert_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("alert.id", ondelete="SET NULL"))
    incident_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("incident.id", ondelete="SET NULL")
    )
    volunteer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("volunteer.id"))
    phone: Mapped[str | None] = mapped_column(String(20))
    body: Mapped[str | None] = mapped_column(Text)
    reply_body: Mapped[str | None] = mapped_column(Text)
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    provider: Mapped[str | None] = mapped_column(String(30))
    """The gateway that took this message (or, queued, is to take it); inbound: the one
    it came through. NULL: the primary (``dispatch.gateway``)."""
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[int | None] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    may_have_reached: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    """An attempt had an unknown outcome (timed out, or its worker died mid-request): the
    SMS may be on the phone whatever ``status`` says later (``dispatch.delivery``)."""
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # ``voice``: a call placed by the call worker (dispatch/voice.py), not an SMS.
    channel: Mapped[str] = mapped_column(String(10), default="sms", server_default=text("'sms'"))
    # What Twilio last said about a call (CallStatus, AnsweredBy); NULL for an SMS.
    call_status: Mapped[str | None] = mapped_column(String(20))
    answered_by: Mapped[str | None] = mapped_column(String(30))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class CallStep(Base):
    """The TwiML answered to one webhook of a call: a retry gets it again, changing nothing.

    One call posts several webhooks (the answer, each key pressed); ``step`` names
    which (``answer``, ``digits:1`` …).
    """

    __tablename__ = "call_step"
    __table_args__ = (_brin_on_created_at("call_step"),)

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(20), primary_key=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("message.id", ondelete="CASCADE"), index=True
    )
    twiml: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SelectionRecord(Base):
    """Why each volunteer within the radius was or was not alerted (for explain)."""

    __tablename__ = "selection_record"
    __table_args__ = (_brin_on_created_at("selection_record"),)

    incident_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("incident.id", ondelete="CASCADE"), primary_key=True
    )
    volunteer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("volunteer.id", ondelete="CASCADE"), primary_key=True
    )
    outcome: Mapped[str] = mapped_column(String(50))
    distance_m: Mapped[float | None] = mapped_column(Float)
    alerted_as: Mapped[str | None] = mapped_column(String(20))
    alerted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()


class IncidentEvent(Base):
    """Append-only change log of an incident; the SSE stream and its replay."""

    __tablename__ = "incident_event"
    __table_args__ = (
        UniqueConstraint("incident_id", "seq", name="uq_incident_event_incident_seq"),
        _brin_on_created_at("incident_event"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incident.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    """1, 2, 3 … per incident, in commit order: the SSE event id (see ``dispatch.events``)."""
    type: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created_at()


class GatewayHealth(Base):
    """Shared view of the SMS provider's health, so every process reports the same."""

    __tablename__ = "gateway_health"

    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RateLimitBucket(Base):
    """Request counters shared by every process (``app/core/buckets.py``).

    UNLOGGED: a counter write costs no WAL flush, and losing the counts in a crash
    only forgets who was throttled for a minute.
    """

    __tablename__ = "rate_limit_bucket"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    # A minute for the API's limits, an hour for sign-up codes (app/core/buckets.py).
    window_s: Mapped[int] = mapped_column(Integer, default=60, server_default=text("60"))


class OneTimeCode(Base):
    """A six-digit code sent by SMS to sign up or to log in; only a hash is stored.

    ``purpose`` ``signup`` carries the details typed at ``/join`` until the code is
    entered (the volunteer exists only then); ``login`` names the volunteer, or no
    one when the number is unknown (no text is sent then, and the row answers
    exactly as a real one would, so the pages never reveal who is registered).
    Only the newest code of a number counts: a new one supersedes the others.
    """

    __tablename__ = "one_time_code"
    __table_args__ = (
        Index("ix_one_time_code_phone_created_at", "phone", "created_at"),
        CheckConstraint("purpose IN ('signup', 'login')", name="purpose_known"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    phone: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(10))
    volunteer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("volunteer.id", ondelete="CASCADE")
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    signup: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CertificationAttachment(Base):
    """A photo or PDF of a certificate, for the coordinator who reviews it.

    Kept in PostgreSQL (transactional with its certification, erased with it, in
    the backups); its type was decided from its bytes, never from its name.
    """

    __tablename__ = "certification_attachment"

    id: Mapped[uuid.UUID] = _uuid_pk()
    certification_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("certification.id", ondelete="CASCADE"), unique=True
    )
    media_type: Mapped[str] = mapped_column(String(50))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlertReport(Base):
    """The responder's own short report after an alert they accepted."""

    __tablename__ = "alert_report"

    alert_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("alert.id", ondelete="CASCADE"), primary_key=True
    )
    gave_cpr: Mapped[bool | None] = mapped_column(Boolean)
    aed_used: Mapped[bool | None] = mapped_column(Boolean)
    arrived_before_ems: Mapped[bool | None] = mapped_column(Boolean)
    wants_contact: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AccessLog(Base):
    """Who read a volunteer's personal data: one row per reader, record, kind and day.

    A CAD polling an incident every second adds nothing after its first read of
    the day (``INSERT … ON CONFLICT DO NOTHING`` on the key).
    """

    __tablename__ = "access_log"
    __table_args__ = (
        Index("ix_access_log_volunteer_id", "volunteer_id"),
        Index("ix_access_log_first_at_brin", "first_at", postgresql_using="brin"),
    )

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    reader: Mapped[str] = mapped_column(String(100), primary_key=True)
    # No foreign key: a read of an id that names no one (explain) is logged as asked.
    volunteer_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    what: Mapped[str] = mapped_column(String(30), primary_key=True)
    target_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    reader_name: Mapped[str] = mapped_column(String(200))
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RetentionRun(Base):
    """How far each retention rule has purged: rows created before ``purged_before``."""

    __tablename__ = "retention_run"

    rule: Mapped[str] = mapped_column(String(50), primary_key=True)
    purged_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StaffUser(Base):
    """A person who works in the console: a coordinator, or a dispatcher of one centre.

    ``password_hash`` is Argon2id; NULL until the person follows their one-time link
    (``password_token_hash`` is the SHA-256 of that link's secret). ``totp_secret``
    is set on enrolment and counts once ``totp_enabled_at`` is set;
    ``totp_last_step`` refuses a second use of one code.
    """

    __tablename__ = "staff_user"
    __table_args__ = (
        CheckConstraint("role IN ('coordinator', 'dispatcher')", name="role_known"),
        CheckConstraint("role <> 'dispatcher' OR centre IS NOT NULL", name="dispatcher_centre"),
        CheckConstraint("language IS NULL OR language IN ('sv', 'en')", name="language_known"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    centre: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(2))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    password_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    password_token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()


class WebSession(Base):
    """A browser session, server-side: the cookie holds a secret, this row its SHA-256.

    Revocable (``revoked_at``), with an idle timeout (``last_seen_at``) and an
    absolute one (``expires_at``). ``second_factor_pending`` marks a session that
    passed the password but not yet the TOTP code: it opens only the code page.
    ``staff_user_id`` names the person; the volunteer pages add their own subject.
    """

    __tablename__ = "web_session"
    __table_args__ = (
        Index("ix_web_session_staff_user_id", "staff_user_id"),
        Index("ix_web_session_volunteer_id", "volunteer_id"),
        CheckConstraint("(staff_user_id IS NULL) <> (volunteer_id IS NULL)", name="one_subject"),
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff_user.id", ondelete="CASCADE")
    )
    # A volunteer signed in to their own pages (``/me``) by an SMS code.
    volunteer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("volunteer.id", ondelete="CASCADE")
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    second_factor_pending: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """One failed sign-in, by account and by address: the throttle counts these."""

    __tablename__ = "login_failure"
    __table_args__ = (
        Index("ix_login_failure_email_failed_at", "email", "failed_at"),
        Index("ix_login_failure_ip_failed_at", "ip", "failed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
