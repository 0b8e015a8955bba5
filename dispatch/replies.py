"""Parsing a volunteer's SMS reply into an intent, per the SMS protocol's table.

Replies are typed in a hurry on any phone: matching ignores case, accents and
punctuation, and accepts the reply code before or after the keyword ("ja 4821",
"4821 YES", "Yes!"). Anything else (emoji, a sentence, an empty body) is
``unknown`` and gets the short help.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Intent = Literal[
    "accept",
    "decline",
    "withdraw",
    "arrived",
    "stop",
    "start",
    "pause",
    "resume",
    "help",
    "unknown",
]

KEYWORDS: dict[str, Intent] = {
    **dict.fromkeys(("YES", "Y", "JA", "J", "OK"), "accept"),
    **dict.fromkeys(("NO", "N", "NEJ"), "decline"),
    **dict.fromkeys(("WITHDRAW", "ANGRA"), "withdraw"),
    **dict.fromkeys(("ARRIVED", "FRAMME", "HERE"), "arrived"),
    **dict.fromkeys(
        (
            "STOP",
            "STOPP",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "OPTOUT",
            "REVOKE",
        ),
        "stop",
    ),
    **dict.fromkeys(("START", "UNSTOP"), "start"),
    **dict.fromkeys(("PAUSE", "PAUS"), "pause"),
    **dict.fromkeys(("RESUME",), "resume"),
    **dict.fromkeys(("HELP", "HJALP", "INFO"), "help"),
}
CODED_INTENTS = frozenset({"accept", "decline", "withdraw", "arrived"})
DEFAULT_PAUSE_HOURS = 8
MAX_PAUSE_HOURS = 24 * 30
PARSE_LIMIT = 160
_CODE = re.compile(r"^\d{3,8}$")
_HOURS = re.compile(r"^\d{1,4}$")


@dataclass(frozen=True)
class Reply:
    intent: Intent
    code: str | None = None
    hours: int | None = None


def normalise(body: str) -> list[str]:
    """Upper-case ASCII words: accents folded, punctuation and symbols dropped."""
    folded = unicodedata.normalize("NFKD", body[:PARSE_LIMIT])
    ascii_only = "".join(char for char in folded if not unicodedata.combining(char))
    cleaned = re.sub(r"[^0-9A-Za-z]+", " ", ascii_only)
    return cleaned.upper().split()


def parse_reply(body: str) -> Reply:
    words = normalise(body)
    if not words or len(words) > 3:
        return Reply("unknown")
    keywords = [word for word in words if not word.isdigit()]
    numbers = [word for word in words if word.isdigit()]
    if len(keywords) != 1 or len(numbers) > 1:
        return Reply("unknown")
    intent = KEYWORDS.get(keywords[0], "unknown")
    number = numbers[0] if numbers else None
    if intent == "pause":
        if number is None:
            return Reply("pause", hours=DEFAULT_PAUSE_HOURS)
        if not _HOURS.match(number) or not 1 <= int(number) <= MAX_PAUSE_HOURS:
            return Reply("unknown")
        return Reply("pause", hours=int(number))
    if number is not None and (intent not in CODED_INTENTS or not _CODE.match(number)):
        return Reply("unknown")
    return Reply(intent, code=number)
