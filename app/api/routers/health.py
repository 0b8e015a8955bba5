"""Liveness, readiness, the SMS providers' health and metrics: no authentication.

Which probe for what (docs/reliability.md): ``/healthz`` for a liveness probe
(restart the process), ``/readyz`` for a load balancer (send this process traffic:
its database answers), ``/healthz/sms`` for alerting a person (the provider refuses
us or sends keep failing). A provider outage is in ``/readyz``'s body but does not
make it fail: incidents, cancels and replies must still be accepted and queued
while the provider is down (SPEC 3.9).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.api.deps import RuntimeDep

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_S = 3.0


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, Any]


class SmsHealth(BaseModel):
    status: str
    sms: dict[str, Any]


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    """The process is up; says nothing about its dependencies."""
    return Liveness(status="ok")


async def _database_check(runtime: RuntimeDep) -> dict[str, Any]:
    """Both answer (PostGIS too). Versions only when ``READYZ_VERSIONS`` asks for them:
    /readyz is open to anyone, and a version tells an attacker which advisories apply."""
    async with runtime.engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT current_setting('server_version') AS pg, postgis_lib_version() AS gis")
            )
        ).one()
    if not runtime.settings.readyz_versions:
        return {"ok": True}
    return {"ok": True, "postgresql": row.pg, "postgis": row.gis}


SMS_DEGRADED_AFTER = 5
"""Consecutive failed sends after which the SMS check reports degraded."""


async def _sms_check(runtime: RuntimeDep) -> dict[str, Any]:
    """The providers' health as every worker records it (shared through the database).

    ``ok`` is false while a provider refuses us (authentication, suspended account:
    nothing leaves through it) or after ``SMS_DEGRADED_AFTER`` failed sends in a row
    (``degraded``: retries may still get through, but people must look). The
    primary's health is at the top level; a configured secondary's under
    ``secondary``, and either one failing makes ``ok`` false: while the secondary
    carries the alerts of a failed primary, someone must still mend the primary.
    ``alerts_can_leave`` says whether at least one of them accepts sends.
    """
    name = (
        runtime.gateway.name
        if runtime.gateway is not None
        else ("twilio" if runtime.settings.twilio_enabled else "console")
    )
    check = await _provider_health(runtime, name)
    if runtime.secondary_gateway is None and not runtime.settings.elks_enabled:
        return check
    secondary_name = runtime.secondary_gateway.name if runtime.secondary_gateway else "46elks"
    secondary = await _provider_health(runtime, secondary_name)
    return {
        **check,
        "ok": check["ok"] and secondary["ok"],
        "alerts_can_leave": check["ok"] or secondary["ok"],
        "secondary": secondary,
    }


async def _provider_health(runtime: RuntimeDep, name: str) -> dict[str, Any]:
    from dispatch.delivery import gateway_health

    async with runtime.session_factory() as session:
        health = await gateway_health(session, gateway=name)
    if health is None:
        return {"ok": True, "gateway": name, "status": "unused"}
    status = "ok"
    if health.refused:
        status = "refused"
    elif health.consecutive_failures >= SMS_DEGRADED_AFTER:
        status = "degraded"
    return {
        "ok": status == "ok",
        "gateway": name,
        "status": status,
        "consecutive_failures": health.consecutive_failures,
        "last_error": health.last_error,
        "last_error_at": health.last_error_at.isoformat() if health.last_error_at else None,
        "last_success_at": (health.last_success_at.isoformat() if health.last_success_at else None),
    }


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The database is down"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready to take incidents: the database and PostGIS answer.

    The SMS provider's health is reported in ``checks.sms`` but does not decide
    readiness: while the provider is down this process must still accept and
    queue incidents, cancels and replies. ``/healthz/sms`` answers for the provider.
    """
    checks: dict[str, Any] = {}
    try:
        checks["database"] = await asyncio.wait_for(_database_check(runtime), READINESS_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    checks["sms"] = await _sms_status(runtime)
    ready = bool(checks["database"].get("ok"))
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def _sms_status(runtime: RuntimeDep) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(_sms_check(runtime), READINESS_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - unknown provider health is not healthy
        return {"ok": False, "error": type(exc).__name__}


@router.get(
    "/healthz/sms",
    response_model=SmsHealth,
    responses={503: {"model": SmsHealth, "description": "The provider refuses us, or sends fail"}},
)
async def healthz_sms(runtime: RuntimeDep) -> JSONResponse:
    """The SMS provider: 200 while it accepts our sends, 503 while it refuses us or
    sends keep failing. For monitoring and paging, not for a load balancer."""
    check = await _sms_status(runtime)
    body = SmsHealth(status="ok" if check.get("ok") else "failing", sms=check)
    return JSONResponse(body.model_dump(), status_code=200 if check.get("ok") else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
