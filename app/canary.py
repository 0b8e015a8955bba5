"""The canary probe: one alert to a test phone, over HTTP, through the whole path.

``responder canary`` runs it for a scheduler; docs/reliability.md ("The canary")
says why over HTTP, and what each exit code means. It is a client of the API only:
it imports nothing of the service, so it runs on any host with an admin key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import structlog

log = structlog.get_logger(__name__)

CANARY_DELIVERED = 0
CANARY_NOT_POSTED = 3
CANARY_NOT_ACCEPTED = 4
CANARY_NOT_DELIVERED = 5
CANARY_POLL_S = 0.5
CANARY_HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CanaryOutcome:
    code: int
    line: str


def _canary_verdict(alert_status: str) -> CanaryOutcome | None:
    """The outcome once the alert SMS's status settles it; ``None`` while it may still."""
    if alert_status == "delivered":
        return CanaryOutcome(CANARY_DELIVERED, "alert delivered")
    if alert_status == "failed":
        return CanaryOutcome(CANARY_NOT_ACCEPTED, "alert not accepted by the provider (failed)")
    if alert_status == "undelivered":
        return CanaryOutcome(CANARY_NOT_DELIVERED, "alert accepted but undelivered")
    return None


def _canary_timeout(alert_status: str, *, within_s: float) -> CanaryOutcome:
    if alert_status == "sent":
        return CanaryOutcome(
            CANARY_NOT_DELIVERED, f"alert accepted but not delivered within {within_s:g} s"
        )
    return CanaryOutcome(
        CANARY_NOT_ACCEPTED,
        f"alert not accepted by the provider within {within_s:g} s (still {alert_status})",
    )


def run_canary(
    *, api: str, api_key: str, phone: str, at: tuple[float, float], within_s: float
) -> CanaryOutcome:
    """Post a canary over HTTP, follow its one alert until delivered or ``within_s``
    has passed, then close it.

    Over HTTP with an admin key, as a scheduler on another host runs it: the probe
    covers the load balancer, the API, the database, the worker, the provider and its
    delivery callback. The wait is a deadline on the monotonic clock, polled.
    """
    started = time.monotonic()
    deadline = started + within_s
    with httpx.Client(
        base_url=api.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=CANARY_HTTP_TIMEOUT_S,
    ) as client:
        try:
            posted = client.post(
                "/v1/canary", json={"phone": phone, "location": {"lat": at[0], "lon": at[1]}}
            )
        except httpx.HTTPError as exc:
            return CanaryOutcome(CANARY_NOT_POSTED, f"could not post: {exc}")
        if posted.status_code != 201:
            return CanaryOutcome(
                CANARY_NOT_POSTED,
                f"could not post: HTTP {posted.status_code} {_problem_detail(posted)}".rstrip(),
            )
        incident = posted.json()
        incident_id = incident["id"]
        if incident["status"] != "alerting":
            return CanaryOutcome(
                CANARY_NOT_POSTED,
                f"not alerted ({incident['not_alerted_reason']}), incident {incident_id}",
            )
        try:
            outcome = _follow_canary(client, incident_id, deadline=deadline, within_s=within_s)
        finally:
            try:
                client.post(f"/v1/canary/{incident_id}/close").raise_for_status()
            except httpx.HTTPError as exc:
                log.error("canary incident not closed", incident_id=incident_id, reason=str(exc))
    elapsed = time.monotonic() - started
    return CanaryOutcome(
        outcome.code, f"{outcome.line} after {elapsed:.1f} s, incident {incident_id}"
    )


def _problem_detail(answer: httpx.Response) -> str:
    """The problem+json ``detail``; a proxy's HTML error page has none."""
    try:
        body = answer.json()
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail else ""


def _follow_canary(
    client: httpx.Client, incident_id: str, *, deadline: float, within_s: float
) -> CanaryOutcome:
    alert_status = "queued"
    while True:
        try:
            answer = client.get(f"/v1/incidents/{incident_id}/alerts")
            answer.raise_for_status()
            alerts = answer.json()
        except httpx.HTTPError as exc:
            return CanaryOutcome(CANARY_NOT_POSTED, f"could not follow the alert: {exc}")
        if len(alerts) != 1:
            return CanaryOutcome(CANARY_NOT_POSTED, f"{len(alerts)} alerts instead of one")
        alert_status = alerts[0]["delivery_status"]
        verdict = _canary_verdict(alert_status)
        if verdict is not None:
            return verdict
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _canary_timeout(alert_status, within_s=within_s)
        time.sleep(min(CANARY_POLL_S, remaining))
