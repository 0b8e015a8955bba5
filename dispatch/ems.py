"""Arrive before the ambulance, or do not go: the EMS-ETA rule (docs/strategies.md).

An incident may carry the moment its first ambulance is expected (``ems_eta_at``).
A volunteer is worth sending only if their estimated arrival on foot, straight-line
geodesic distance × ``ROUTE_FACTOR`` ÷ ``WALKING_SPEED_MPS``, is no later than that
moment plus ``EMS_ETA_MARGIN_S`` (an ambulance at the address is not yet at the
patient, and a CAD's ETA is an estimate). Turned around, the rule is a distance:
the farthest a volunteer alerted *now* may be, which the candidate statement uses
as a tighter radius, so the rule costs the alert path nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from app.core.settings import Settings


def ems_reach_m(settings: Settings, *, ems_eta_at: datetime | None, now: datetime) -> float | None:
    """How far from the patient a volunteer leaving at ``now`` may be; None: no ETA."""
    if ems_eta_at is None:
        return None
    left_s = (ems_eta_at - now).total_seconds() + settings.ems_eta_margin_s
    return settings.walkable_m(left_s)


def estimated_arrival(settings: Settings, *, route_m: float, leaving_at: datetime) -> datetime:
    return leaving_at + timedelta(seconds=settings.walking_time_s(route_m))


def arrives_before_ems(
    settings: Settings, *, route_m: float, leaving_at: datetime, ems_eta_at: datetime | None
) -> bool:
    """True when the route walked from ``leaving_at`` ends before the ETA plus the margin."""
    if ems_eta_at is None:
        return True
    deadline = ems_eta_at + timedelta(seconds=settings.ems_eta_margin_s)
    return estimated_arrival(settings, route_m=route_m, leaving_at=leaving_at) <= deadline
