"""Words for the codes a person sees: statuses, kinds, roles, reasons, timeline events."""

from __future__ import annotations

from typing import Any

from app.core.models import IncidentEvent
from app.web.i18n import _, ngettext


def kind_names() -> dict[str, str]:
    return {
        "cardiac_arrest": _("Cardiac arrest"),
        "respiratory_arrest": _("Respiratory arrest"),
        "drowning": _("Drowning"),
        "choking": _("Choking"),
        "other": _("Other"),
    }


def contact_preference_names() -> dict[str, str]:
    """How alerts reach a volunteer (``volunteer.contact_preference``), as they choose it."""
    return {
        "sms": _("By SMS"),
        "voice": _("By a phone call instead of the SMS (a landline, say)"),
        "sms_then_voice": _("By SMS, and a phone call if I have not answered"),
    }


def status_names() -> dict[str, str]:
    return {
        "alerting": _("Alerting"),
        "not_alerted": _("Not alerted"),
        "cancelled": _("Cancelled"),
        "closed": _("Closed"),
    }


def role_names() -> dict[str, str]:
    return {"cpr": _("CPR"), "aed": _("AED")}


def flag_names() -> dict[str, str]:
    return {
        "patient_under_8": _("Patient under 8"),
        "trauma": _("Trauma"),
        "intoxication": _("Intoxication"),
        "suicide": _("Suicide"),
        "unsafe_scene": _("Unsafe scene"),
        "healthcare_facility": _("Healthcare facility"),
    }


def band_names() -> dict[str, str]:
    return {
        "0-100": _("0–100 m"),
        "100-250": _("100–250 m"),
        "250-500": _("250–500 m"),
        "500+": _("beyond 500 m"),
    }


def not_alerted_reason(code: str | None) -> str:
    if code is None:
        return ""
    reasons = {
        "kind_not_alertable": _("this kind of incident is not alerted"),
        "alert_false": _("alerting was not requested"),
        "outside_service_area": _("outside the service area"),
        "quiet_hours": _("quiet hours"),
        "duplicate": _("a second call about an incident already alerting"),
        "no_eligible_volunteers": _("no eligible volunteer nearby"),
    }
    if code.startswith("flag:"):
        return flag_names().get(code[5:], code)
    return reasons.get(code, code)


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return len(value) if isinstance(value, list) else int(value or 0)


def event_text(event: IncidentEvent) -> str:
    """One line of the timeline; never who (an alerted volunteer is not named)."""
    data = event.data
    role = role_names().get(str(data.get("role")), "")
    if event.type == "incident.created":
        return _("Incident created")
    if event.type == "alerts.queued":
        n = _count(data, "alerts")
        return ngettext("%(n)s volunteer alerted", "%(n)s volunteers alerted", n) % {"n": n}
    if event.type == "alert.delivery":
        status = str(data.get("delivery_status"))
        if status in ("failed", "undelivered"):
            return _("An alert could not be delivered")
        return _("An alert was delivered") if status == "delivered" else _("An alert was sent")
    if event.type == "alert.accepted":
        return _("A volunteer accepted: %(role)s") % {"role": role or _("no role left")}
    if event.type == "alert.declined":
        return _("A volunteer declined")
    if event.type == "alert.withdrawn":
        return _("A responder withdrew")
    if event.type == "alert.arrived":
        return _("A responder arrived")
    if event.type == "alerts.stood_down":
        n = _count(data, "alert_ids")
        return ngettext("%(n)s volunteer stood down", "%(n)s volunteers stood down", n) % {"n": n}
    if event.type == "alerts.no_reply":
        n = _count(data, "alert_ids")
        return ngettext("%(n)s alert unanswered", "%(n)s alerts unanswered", n) % {"n": n}
    if event.type == "incident.updated":
        return _("Incident updated")
    if event.type == "incident.cancelled":
        return _("Incident cancelled")
    if event.type == "incident.closed":
        return _("Incident closed")
    return event.type


def certification_kinds() -> dict[str, str]:
    return {
        "cpr": _("CPR"),
        "cpr_aed": _("CPR and AED"),
        "first_aid": _("First aid"),
        "healthcare_professional": _("Healthcare professional"),
    }


def certification_statuses() -> dict[str, str]:
    return {
        "pending": _("Waiting for review"),
        "verified": _("Verified"),
        "rejected": _("Rejected"),
        "revoked": _("Revoked"),
    }


def aed_statuses() -> dict[str, str]:
    return {"active": _("In service"), "out_of_service": _("Out of service")}


def access_text(access: Any) -> str:
    """Opening hours in the form's own syntax (``mon,tue 06:00-22:00; sat 10:00-16:00``)."""
    if not isinstance(access, list):
        return "always"
    return "; ".join(
        f"{','.join(window['days'])} {window['start']}-{window['end']}" for window in access
    )


def volunteer_filters() -> dict[str, str]:
    return {
        "": _("All"),
        "eligible": _("Can be alerted"),
        "pending": _("Certification waiting for review"),
        "expiring": _("Certification expiring"),
        "suspended": _("Suspended"),
        "opted_out": _("Opted out of SMS"),
        "paused": _("Paused"),
    }


def volunteer_status(volunteer: Any) -> str:
    parts = [_("Suspended") if volunteer.status == "suspended" else _("Active")]
    if volunteer.opted_out:
        parts.append(_("opted out of SMS"))
    return ", ".join(parts)
