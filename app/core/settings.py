"""Configuration: one validated object, read from ``RESPONDER_*`` environment variables.

A broken configuration must stop the process at start with a one-line reason, not
surface later as a failed alert, so every cross-field rule is checked here.
Durations accept seconds (``600``) or ISO 8601 (``PT10M``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IncidentKind = Literal["cardiac_arrest", "respiratory_arrest", "drowning", "choking", "other"]
INCIDENT_KINDS: tuple[IncidentKind, ...] = (
    "cardiac_arrest",
    "respiratory_arrest",
    "drowning",
    "choking",
    "other",
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MIN_WEBHOOK_SECRET = 32
"""Characters of a webhook secret: 32 random ones are far beyond guessing."""
_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def _hours_window(value: str) -> str:
    if not _QUIET_HOURS.match(value):
        raise ValueError("expected HH:MM-HH:MM, for example 23:00-07:00")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESPONDER_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="postgresql:// or postgresql+asyncpg:// URL; unset = embedded cluster",
    )
    data_dir: Path = Field(default=Path(".responder"), description="embedded cluster home")
    pg_bin_dir: Path | None = Field(default=None, description="PostgreSQL server binaries")
    db_pool_size: int = Field(default=10, ge=1, le=200)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    server_timing: bool = Field(
        default=False,
        description="add a Server-Timing header (phases of each request) for the benchmark",
    )
    log_format: Literal["console", "json"] = "console"
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    readyz_versions: bool = Field(
        default=False, description="/readyz names the PostgreSQL and PostGIS versions"
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="comma-separated proxy addresses whose X-Forwarded-* headers are "
        "believed; empty = none (the peer address is the client)",
    )

    # Requests per minute, shared by all processes (app/ratelimit.py, docs/reliability.md).
    # Dispatcher keys and correctly signed webhooks are never limited.
    rate_limit_admin_per_minute: int = Field(default=600, ge=1)
    rate_limit_volunteer_per_minute: int = Field(default=120, ge=1)
    rate_limit_locator_per_minute: int = Field(default=1_200_000, ge=1)
    rate_limit_anonymous_per_minute: int = Field(default=300, ge=1)
    rate_limit_unsigned_webhook_per_minute: int = Field(default=60, ge=1)

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    # The secondary SMS provider, 46elks (docs/dispatch.md "Two providers"): off while
    # ELKS_API_USERNAME is unset. It takes an alert SMS over when the primary refuses
    # it, or after SMS_PRIMARY_ATTEMPTS failed tries there, while the deadline allows.
    elks_api_username: str | None = None
    elks_api_password: SecretStr | None = None
    elks_from: str | None = Field(
        default=None, description="the 46elks number alerts go out from (replies come back to it)"
    )
    elks_api_base: str = "https://api.46elks.com"
    elks_webhook_secret: SecretStr | None = Field(
        default=None,
        description="the 46elks webhooks' basic-auth password and the key of their URL "
        "tokens (at least 32 characters)",
    )
    sms_primary_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="tries of an alert SMS at the primary provider (5xx, 429, timeouts) "
        "before the secondary takes it over; a refusal hands it over at once",
    )
    sms_number: str | None = Field(
        default=None, description="the number volunteers text (START), shown on their page"
    )
    public_base_url: str = "http://127.0.0.1:8000"
    send_concurrency: int = Field(default=32, ge=1, le=500)
    send_timeout_s: float = Field(default=10.0, gt=0)
    # The most of a worker's SEND_CONCURRENCY slots that bulk non-urgent SMS (renewal
    # reminders) may hold at once (at least one slot); docs/dispatch.md.
    send_bulk_share: float = Field(default=0.25, gt=0, le=1)
    # The share of SEND_CONCURRENCY slots (at least one) that only alert SMS may
    # take, so stand-downs or updates hanging on a slow provider never hold every
    # slot when a new alert arrives; docs/dispatch.md.
    send_alert_reserve: float = Field(default=0.25, gt=0, lt=1)
    # Voice calls (docs/dispatch.md, "Channels"). A voice-capable Twilio number (a
    # Messaging Service cannot place calls); unset = every alert goes by SMS,
    # whatever a volunteer's contact preference.
    twilio_voice_from: str | None = None
    # sms_then_voice: call a volunteer whose alert SMS got no answer this long while
    # a role slot is open; unset = no such calls. Must be shorter than REPLACE_AFTER.
    call_after: timedelta | None = None
    call_max_per_incident: int = Field(default=10, ge=0, le=1000)
    call_concurrency: int = Field(default=4, ge=1, le=100)
    # Twilio places about one call per second per account unless raised for it.
    calls_per_second: float = Field(default=1.0, gt=0, le=100)
    # Seconds a call rings before we give up: shorter than a typical voicemail pick-up.
    call_ring_timeout_s: int = Field(default=20, ge=5, le=60)
    # Where a stand-alone `responder worker` serves /metrics (0: nowhere); `serve`
    # has /metrics on its API port.
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    # The admin API key `responder canary` authenticates with (docs/reliability.md).
    canary_api_key: SecretStr | None = None

    timezone: str = "Europe/Stockholm"
    default_region: str = "SE"

    live_location_max_age: timedelta = timedelta(minutes=15)
    max_location_accuracy_m: float = Field(default=250.0, gt=0)
    live_location_retention: timedelta = timedelta(hours=24)

    alertable_kinds: Annotated[list[IncidentKind], NoDecode] = ["cardiac_arrest"]
    service_area: Path | None = None
    quiet_hours: str | None = None
    duplicate_radius_m: float = Field(default=100.0, ge=0)
    duplicate_window: timedelta = timedelta(minutes=10)

    alert_radius_m: float = Field(default=500.0, gt=0, le=50_000)
    alert_cooldown: timedelta = timedelta(minutes=10)
    max_alerted: int = Field(default=30, ge=1, le=1000)

    # Strategies (docs/strategies.md). Unset = today's behaviour: MAX_ALERTED at once,
    # no replacement, no widening; the EMS rule applies only to incidents with an ETA.
    alert_batch: int | None = Field(default=None, ge=1, le=1000)
    replace_after: timedelta | None = None
    widen_after: timedelta | None = None
    widen_steps_m: Annotated[list[float], NoDecode] = []
    max_alert_radius_m: float = Field(default=5000.0, gt=0, le=50_000)
    route_factor: float = Field(default=1.4, ge=1.0, le=5.0)
    walking_speed_mps: float = Field(default=1.8, gt=0, le=10.0)
    ems_eta_margin_s: float = Field(default=60.0, ge=0, le=3600)

    cpr_responders: int = Field(default=2, ge=0)
    aed_responders: int = Field(default=1, ge=0)
    aed_search_radius_m: float = Field(default=1000.0, ge=0)
    aed_max_detour_m: float = Field(default=600.0, ge=0)
    aed_first_detour_m: float = Field(default=100.0, ge=0)

    alert_reply_window: timedelta = timedelta(minutes=10)
    alert_send_deadline: timedelta = timedelta(minutes=2)
    incident_max_age: timedelta = timedelta(hours=2)
    follow_up_text: str = (
        "If what you saw weighs on you, call the volunteer coordinator: +46 10 000 00 00."
    )
    cert_reminder_days: int = Field(default=30, ge=0)
    follow_up_phone: str | None = Field(
        default=None, description="gets an SMS when a responder asks to be contacted"
    )

    # Self-service (docs/registry.md): sign-up and login codes by SMS.
    signup_countries: Annotated[list[str], NoDecode] = ["SE"]
    signup_code_ttl: timedelta = timedelta(minutes=10)
    signup_code_attempts: int = Field(default=5, ge=1, le=20)
    signup_codes_per_phone_per_hour: int = Field(default=3, ge=1)
    signup_codes_per_ip_per_hour: int = Field(default=10, ge=1)
    signup_sms_per_hour: int = Field(default=200, ge=1)
    consent_version: str = Field(default="2026-12-01", min_length=1, max_length=50)
    consent_text_en: str = (
        "I agree that Responder stores my name, mobile number, language, places and "
        "certificates, and my position while I share it, to alert me to cardiac arrests "
        "nearby. I can pause, opt out, download my data or delete my account at any time."
    )
    consent_text_sv: str = (
        "Jag godkänner att Responder lagrar mitt namn, mobilnummer, språk, platser och "
        "certifikat, och min position när jag delar den, för att larma mig vid hjärtstopp "
        "i närheten. Jag kan pausa, avsluta SMS, ladda ner mina uppgifter eller radera "
        "mitt konto när som helst."
    )
    attachment_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # Retention (docs/privacy.md): how long each personal datum is kept.
    message_retention: timedelta = timedelta(days=90)
    incident_retention: timedelta = timedelta(days=90)
    event_retention: timedelta = timedelta(days=30)
    selection_record_retention: timedelta = timedelta(days=30)
    signup_code_retention: timedelta = timedelta(hours=24)
    attachment_retention: timedelta = timedelta(days=30)
    audit_retention: timedelta = timedelta(days=730)

    # Staff console (app/web, docs/console.md).
    web_base_url: str | None = Field(
        default=None, description="the console's own origin; unset = PUBLIC_BASE_URL"
    )
    web_assets_dir: Path | None = Field(
        default=None, description="node_modules with htmx and Leaflet; unset = the project's"
    )
    session_idle_timeout: timedelta = timedelta(minutes=30)
    session_max_age: timedelta = timedelta(hours=12)
    staff_invite_ttl: timedelta = timedelta(hours=72)
    require_totp_for_coordinators: bool = False
    login_throttle_window: timedelta = timedelta(minutes=15)
    login_failures_per_account: int = Field(default=5, ge=1)
    login_failures_per_ip: int = Field(default=30, ge=1)
    # Single sign-on (OpenID Connect); off while the issuer is unset.
    oidc_issuer: str | None = Field(default=None, description="unset = no single sign-on")
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_role_claim: str = "responder_role"
    oidc_centre_claim: str = "responder_centre"
    oidc_coordinator_value: str = "coordinator"
    oidc_dispatcher_value: str = "dispatcher"
    map_tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    map_tile_attribution: str = (
        '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
    )
    # Renewal reminders are queued and sent only inside these hours in TIMEZONE.
    reminder_hours: str = "10:00-19:00"

    @field_validator("alertable_kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("signup_countries", mode="before")
    @classmethod
    def _split_countries(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("signup_countries")
    @classmethod
    def _known_countries(cls, value: list[str]) -> list[str]:
        unknown = [code for code in value if code not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions {', '.join(unknown)}")
        return value

    @field_validator("widen_steps_m", mode="before")
    @classmethod
    def _split_steps(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("replace_after", "widen_after", "call_after")
    @classmethod
    def _positive_step(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {value!r}")
        return value.upper()

    @field_validator("follow_up_phone", "sms_number", "elks_from", "twilio_voice_from")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not _E164.match(value):
            raise ValueError("expected an E.164 number, for example +46100000000")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours_format(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        return _hours_window(value)

    @field_validator("reminder_hours")
    @classmethod
    def _reminder_hours_format(cls, value: str) -> str:
        return _hours_window(value)

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://")):
            raise ValueError("must start with postgresql:// or postgresql+asyncpg://")
        return value

    @field_validator("public_base_url", "twilio_api_base", "elks_api_base", "map_tile_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("web_base_url", "oidc_issuer")
    @classmethod
    def _optional_http_url(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else cls._http_url(value)

    @model_validator(mode="after")
    def _twilio_complete(self) -> Settings:
        if self.twilio_account_sid and not self.twilio_auth_token:
            raise ValueError(
                "RESPONDER_TWILIO_ACCOUNT_SID is set but RESPONDER_TWILIO_AUTH_TOKEN is not"
            )
        if self.twilio_auth_token and not self.twilio_account_sid:
            raise ValueError(
                "RESPONDER_TWILIO_AUTH_TOKEN is set but RESPONDER_TWILIO_ACCOUNT_SID is not"
            )
        if self.twilio_account_sid and not (self.twilio_messaging_service_sid or self.twilio_from):
            raise ValueError(
                "Twilio needs RESPONDER_TWILIO_MESSAGING_SERVICE_SID or RESPONDER_TWILIO_FROM"
            )
        self._check_secondary_sms()
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_client_secret):
            raise ValueError(
                "RESPONDER_OIDC_ISSUER needs RESPONDER_OIDC_CLIENT_ID and "
                "RESPONDER_OIDC_CLIENT_SECRET"
            )
        self._check_strategy()
        if self.service_area is not None and not self.service_area.is_file():
            raise ValueError(f"RESPONDER_SERVICE_AREA: no such file {self.service_area}")
        return self

    def _check_secondary_sms(self) -> None:
        if not self.elks_api_username:
            return
        missing = [
            f"RESPONDER_{name.upper()}"
            for name in ("elks_api_password", "elks_from", "elks_webhook_secret")
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(f"RESPONDER_ELKS_API_USERNAME needs {', '.join(missing)}")
        secret = self.elks_webhook_secret
        if secret is not None and len(secret.get_secret_value()) < MIN_WEBHOOK_SECRET:
            raise ValueError(
                f"RESPONDER_ELKS_WEBHOOK_SECRET must be at least {MIN_WEBHOOK_SECRET} characters"
            )

    def _check_strategy(self) -> None:
        if self.alert_batch is not None and self.alert_batch > self.max_alerted:
            raise ValueError("RESPONDER_ALERT_BATCH cannot be larger than RESPONDER_MAX_ALERTED")
        steps = [self.alert_radius_m, *self.widen_steps_m]
        if any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)):
            raise ValueError(
                "RESPONDER_WIDEN_STEPS_M must be increasing radii, each larger than"
                " RESPONDER_ALERT_RADIUS_M"
            )
        if self.widen_steps_m and self.widen_steps_m[-1] > self.max_alert_radius_m:
            raise ValueError(
                "RESPONDER_WIDEN_STEPS_M goes beyond RESPONDER_MAX_ALERT_RADIUS_M"
                f" ({self.max_alert_radius_m:g} m)"
            )
        if self.widen_after is not None and not self.widen_steps_m:
            raise ValueError("RESPONDER_WIDEN_AFTER needs RESPONDER_WIDEN_STEPS_M")
        if (
            self.call_after is not None
            and self.replace_after is not None
            and self.call_after >= self.replace_after
        ):
            # A silent volunteer is called before being replaced, not after.
            raise ValueError("RESPONDER_CALL_AFTER must be shorter than RESPONDER_REPLACE_AFTER")

    @property
    def batch(self) -> int:
        """How many volunteers one incident keeps in play (``ALERT_BATCH``, else all)."""
        return self.alert_batch if self.alert_batch is not None else self.max_alerted

    def next_radius_m(self, current_m: float) -> float | None:
        """The next widening step beyond ``current_m``, or None at the last one."""
        return next((step for step in self.widen_steps_m if step > current_m + 0.5), None)

    def walking_time_s(self, distance_m: float) -> float:
        """Estimated time on foot for a straight-line geodesic distance (the EMS rule)."""
        return distance_m * self.route_factor / self.walking_speed_mps

    def walkable_m(self, seconds: float) -> float:
        """The straight-line distance a volunteer covers in ``seconds`` (inverse of the above)."""
        return max(0.0, seconds) * self.walking_speed_mps / self.route_factor

    @property
    def twilio_enabled(self) -> bool:
        return bool(self.twilio_account_sid)

    @property
    def voice_enabled(self) -> bool:
        """Calls can be placed: Twilio credentials and a voice-capable number."""
        return self.twilio_enabled and self.twilio_voice_from is not None

    @property
    def elks_enabled(self) -> bool:
        return bool(self.elks_api_username)

    @property
    def reply_number(self) -> str | None:
        """Where volunteers text START: ``SMS_NUMBER``, else the Twilio sender number."""
        return self.sms_number or self.twilio_from

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def console_origin(self) -> str:
        """Where people open the console; its cookies are ``Secure`` when this is https."""
        return self.web_base_url or self.public_base_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def describe_settings_error(exc: Exception) -> str:
    """One line naming the variable and the reason, for a clean exit at start."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors():
            loc = ".".join(str(item) for item in error["loc"])
            name = f"RESPONDER_{loc.upper()}: " if loc else ""
            parts.append(f"{name}{error['msg'].removeprefix('Value error, ')}")
        return "invalid configuration: " + "; ".join(parts)
    return f"invalid configuration: {exc}"
