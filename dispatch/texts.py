"""Every SMS text, in Swedish and English (the volunteer's language).

Texts stay within one or two SMS segments: GSM-7 (å, ä, ö are in its alphabet)
allows 160 characters in one segment and 306 in two; addresses are shortened to
keep an alert within that.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

KIND_NAMES = {
    "en": {
        "cardiac_arrest": "suspected cardiac arrest",
        "respiratory_arrest": "suspected respiratory arrest",
        "drowning": "drowning",
        "choking": "choking",
        "other": "medical emergency",
    },
    "sv": {
        "cardiac_arrest": "misstänkt hjärtstopp",
        "respiratory_arrest": "misstänkt andningsstopp",
        "drowning": "drunkning",
        "choking": "luftvägsstopp",
        "other": "akut nödläge",
    },
}
ADDRESS_MAX = 80


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def alert_text(
    language: str,
    *,
    kind: str,
    at: datetime,
    zone: ZoneInfo,
    distance_m: float,
    address: str,
    code: str,
) -> str:
    """The alert itself: time, distance, address and the literal reply ``YES <code>``."""
    clock = at.astimezone(zone).strftime("%H:%M")
    distance = f"{round(distance_m / 10) * 10:.0f} m"
    where = _clip(address, ADDRESS_MAX)
    if language == "sv":
        return (
            f"HLR-LARM {clock}: {KIND_NAMES['sv'][kind]} {distance} från dig, {where}. "
            f"Svara JA {code} om du kan gå nu, NEJ {code} om inte."
        )
    return (
        f"CPR ALERT {clock}: {KIND_NAMES['en'][kind]} {distance} from you, {where}. "
        f"Reply YES {code} if you can go now, NO {code} if not."
    )
