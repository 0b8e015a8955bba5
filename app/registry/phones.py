"""Phone numbers: parsed with ``phonenumbers`` and stored as E.164 only.

National formats are read in the ``DEFAULT_REGION``; a number that the library
does not consider valid for any region is refused, so an alert never goes to a
typo.
"""

from __future__ import annotations

import re

import phonenumbers

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def normalise_phone(raw: str, *, region: str) -> str:
    """E.164 form of ``raw``; ``ValueError`` with a reason when it is not a valid number."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    formatted: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return formatted


def lookup_phone(raw: str, *, region: str) -> str | None:
    """A key to look a volunteer up by: E.164 input as is (the hot path), else parsed.

    Lookups only need to match what was stored, so a well-formed E.164 string skips
    the (comparatively slow) full parse; ``None`` when it cannot be a number at all.
    """
    if _E164.match(raw):
        return raw
    try:
        return normalise_phone(raw, region=region)
    except ValueError:
        return None


def phone_region(e164: str) -> str | None:
    """The region (``SE``) a normalised number belongs to, or None for non-geographic ones."""
    region: str | None = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    return region
