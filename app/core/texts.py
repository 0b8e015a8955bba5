"""Every SMS text, in Swedish and English (the volunteer's language).

Texts stay within one or two SMS segments. GSM-7 (å, ä, ö, é are in its alphabet)
allows 160 characters in one segment and 306 in two; a single character outside it
(an emoji, a typographic ellipsis) turns the whole SMS into UCS-2 with 70 per
segment. Free text that reaches an SMS (addresses, access notes, AED descriptions)
is therefore folded into GSM-7 and clipped, so every text is at most two segments
whatever the registry holds.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
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
CERTIFICATION_KIND_NAMES = {
    "en": {"cpr": "CPR", "cpr_aed": "CPR/AED", "healthcare_professional": "healthcare"},
    "sv": {"cpr": "HLR", "cpr_aed": "HLR/AED", "healthcare_professional": "vårdpersonal"},
}
ADDRESS_MAX = 80
SEGMENT_GSM7 = (160, 153)
SEGMENT_UCS2 = (70, 67)

_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = "^{}\\[~]|€"
_REPLACEMENTS = {
    "…": "...",
    "–": "-",
    "—": "-",
    "’": "'",
    "‘": "'",
    "“": '"',
    "”": '"',
    "Ł": "L",
    "ł": "l",
    "Đ": "D",
    "đ": "d",
}
TWO_SEGMENTS = 306


def is_gsm7(text: str) -> bool:
    return all(char in _GSM7_BASIC or char in _GSM7_EXTENDED for char in text)


def segments(text: str) -> int:
    """How many SMS segments the text takes (concatenated SMS lose 7 or 3 characters)."""
    if is_gsm7(text):
        length = sum(2 if char in _GSM7_EXTENDED else 1 for char in text)
        single, multi = SEGMENT_GSM7
    else:
        length = len(text.encode("utf-16-le")) // 2
        single, multi = SEGMENT_UCS2
    return 1 if length <= single else -(-length // multi)


def to_gsm7(value: str) -> str:
    """Free text folded into the GSM-7 alphabet: accents dropped where GSM-7 lacks them."""
    folded = []
    for char in " ".join(value.split()):
        char = _REPLACEMENTS.get(char, char)
        if is_gsm7(char):
            folded.append(char)
            continue
        base = "".join(
            part
            for part in unicodedata.normalize("NFKD", char)
            if not unicodedata.combining(part) and is_gsm7(part)
        )
        folded.append(base)
    return "".join(folded)


@functools.lru_cache(maxsize=1024)
def _clip(value: str, limit: int) -> str:
    """Kept per text: an incident's 30 alerts fold the same address (a fifth of the
    POST's own CPU in texts when folded 30 times)."""
    value = to_gsm7(value)
    return value if len(value) <= limit else value[: limit - 3].rstrip() + "..."


def _distance(distance_m: float) -> str:
    return f"{round(distance_m / 10) * 10:.0f} m"


@functools.lru_cache(maxsize=16)
def _clock(at: datetime, zone: ZoneInfo) -> str:
    """Kept per time: an incident's 30 alerts share it (converted and formatted 30
    times, nearly half of :func:`alert_text`'s CPU)."""
    return at.astimezone(zone).strftime("%H:%M")


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
    clock = _clock(at, zone)
    where = _clip(address, ADDRESS_MAX)
    if language == "sv":
        return (
            f"HLR-LARM {clock}: {KIND_NAMES['sv'][kind]} {_distance(distance_m)} från dig, "
            f"{where}. Svara JA {code} om du kan gå nu, NEJ {code} om inte."
        )
    return (
        f"CPR ALERT {clock}: {KIND_NAMES['en'][kind]} {_distance(distance_m)} from you, "
        f"{where}. Reply YES {code} if you can go now, NO {code} if not."
    )


def map_link(lat: float, lon: float) -> str:
    return f"https://maps.google.com/?q={lat:.5f},{lon:.5f}"


def _fit(compose: Callable[[dict[str, str]], str], fields: dict[str, str]) -> str:
    """Compose, shortening the longest free-text field until the SMS fits two segments."""
    limits = {name: len(value) for name, value in fields.items()}
    while True:
        text = compose({name: _clip(fields[name], limits[name]) for name in fields})
        if segments(text) <= 2 or not any(limit > 12 for limit in limits.values()):
            return text
        longest = max(limits, key=lambda name: limits[name])
        limits[longest] -= 10


def _scene_fields(
    *, address: str, access_notes: str | None, aed_address: str | None, aed_description: str | None
) -> dict[str, str]:
    """The free text of where to go, folded into GSM-7, for ``_fit`` to shorten."""
    return {
        "where": to_gsm7(address)[:ADDRESS_MAX],
        "notes": to_gsm7(access_notes or ""),
        "aed": to_gsm7(aed_address or ""),
        "detail": to_gsm7(aed_description or ""),
    }


def instructions_text(
    language: str,
    *,
    role: str,
    address: str,
    access_notes: str | None,
    lat: float,
    lon: float,
    route_m: float,
    aed_address: str | None = None,
    aed_description: str | None = None,
    aed_access: str | None = None,
) -> str:
    """After YES: the role, how far, where to go, how to get in, and where the AED is.

    ``route_m`` is the straight-line way to walk (via the AED for the AED role), so a
    volunteer knows at once whether it is a two- or a ten-minute walk.

    The address, access notes and AED details are shortened (longest first) only
    as far as needed to keep the SMS within two segments.
    """
    link = map_link(lat, lon)
    far = _distance(route_m)
    fields = _scene_fields(
        address=address,
        access_notes=access_notes,
        aed_address=aed_address,
        aed_description=aed_description,
    )
    fields["hours"] = to_gsm7(aed_access or "")

    def compose(part: dict[str, str]) -> str:
        notes = f" {part['notes']}." if part["notes"] else ""
        if role == "aed":
            detail = f" ({part['detail']})" if part["detail"] else ""
            hours = f" {part['hours']}" if part["hours"] else ""
            if language == "sv":
                return (
                    f"Tack! Hämta hjärtstartaren: {part['aed']}{detail}{hours}. "
                    f"Ta den till {part['where']} ({far} totalt).{notes} {link} "
                    f"Svara FRAMME när du är där."
                )
            return (
                f"Thank you! Fetch the AED: {part['aed']}{detail}{hours}. "
                f"Bring it to {part['where']} ({far} in all).{notes} {link} "
                f"Reply ARRIVED when there."
            )
        if language == "sv":
            return (
                f"Tack! Gå direkt till patienten ({far}) och starta HLR: {part['where']}."
                f"{notes} {link} Svara FRAMME när du är där, ÅNGRA om du inte kan."
            )
        return (
            f"Thank you! Go straight to the patient ({far}) and start CPR: {part['where']}."
            f"{notes} {link} Reply ARRIVED when there, WITHDRAW if you cannot."
        )

    return _fit(compose, fields)


def _pick(language: str, sv: str, en: str) -> str:
    return sv if language == "sv" else en


def exercise_text(language: str, body: str) -> str:
    """Any text of an exercise incident, marked first so nobody takes it for real."""
    return _pick(language, "ÖVNING: ", "EXERCISE: ") + body


def stand_down_text(language: str, *, code: str) -> str:
    return _pick(
        language,
        f"Larm {code}: tillräckligt många är på väg. Du behöver inte gå. Tack!",
        f"Alert {code}: enough responders are on their way. You do not need to go. Thank you!",
    )


def not_needed_text(language: str) -> str:
    return _pick(
        language,
        "Tack! Tillräckligt många är redan på väg, du behöver inte gå.",
        "Thank you! Enough responders are already on their way; please do not go.",
    )


def alert_ended_text(language: str) -> str:
    return _pick(
        language,
        "Larmet är avslutat. Gå inte dit. Tack för att du svarade.",
        "This alert has ended. Do not go. Thank you for answering.",
    )


def declined_text(language: str) -> str:
    return _pick(language, "Tack för svaret.", "Thank you for answering.")


def withdrawn_text(language: str) -> str:
    return _pick(
        language,
        "Uppfattat, du är inte längre på väg. Tack!",
        "Understood, you are no longer on your way. Thank you!",
    )


def arrived_text(language: str) -> str:
    return _pick(
        language, "Noterat att du är framme. Tack!", "Noted that you have arrived. Thanks!"
    )


def cancellation_text(language: str, *, code: str) -> str:
    return _pick(
        language,
        f"Larm {code} är avbrutet. Gå inte dit. Tack!",
        f"Alert {code} is cancelled. Do not go. Thank you!",
    )


def ems_arrived_text(language: str, *, code: str) -> str:
    """The ambulance is at the patient: responders still on their way need not go on."""
    return _pick(
        language,
        f"Larm {code}: ambulansen är på plats. Du behöver inte gå dit. Tack!",
        f"Alert {code}: the ambulance is there. You need not go on. Thank you!",
    )


def update_text(language: str, *, code: str, address: str, access_notes: str | None) -> str:
    """A changed address or access notes, to responders already on their way."""

    def compose(part: dict[str, str]) -> str:
        notes = f" {part['notes']}" if part["notes"] else ""
        return _pick(
            language,
            f"Larm {code}, uppdatering: {part['where']}.{notes}",
            f"Alert {code}, update: {part['where']}.{notes}",
        )

    return _fit(compose, {"where": to_gsm7(address), "notes": to_gsm7(access_notes or "")})


def moved_stand_down_text(language: str, *, code: str) -> str:
    """A pending volunteer the move left outside the radius."""
    return _pick(
        language,
        f"Larm {code}: platsen har ändrats och är nu för långt från dig. Du behöver inte gå. Tack!",
        f"Alert {code}: the location has changed and is now too far from you. "
        "You need not go. Thank you!",
    )


def moved_text(
    language: str,
    *,
    code: str,
    route: str,
    address: str,
    access_notes: str | None,
    lat: float,
    lon: float,
    aed_address: str | None = None,
    aed_description: str | None = None,
) -> str:
    """The new place, to a responder on their way; ``route`` says what to do now.

    ``cpr``: go to the new place. ``straight``: an AED runner whose AED is now off
    the way: leave it, go straight to the patient. ``keep_aed``: bring the AED you
    are fetching to the new place. ``other_aed``: fetch this AED instead.
    """
    link = map_link(lat, lon)
    fields = _scene_fields(
        address=address,
        access_notes=access_notes,
        aed_address=aed_address,
        aed_description=aed_description,
    )

    def compose(part: dict[str, str]) -> str:
        notes = f" {part['notes']}." if part["notes"] else ""
        detail = f" ({part['detail']})" if part["detail"] else ""
        where = f"{part['where']}.{notes} {link}"
        sv = {
            "cpr": f"Gå dit och starta HLR: {where}",
            "straight": f"Hämta inte hjärtstartaren, gå direkt till patienten: {where}",
            "keep_aed": f"Ta hjärtstartaren du hämtar till {where}",
            "other_aed": (
                f"Hämta i stället hjärtstartaren: {part['aed']}{detail}. Ta den till {where}"
            ),
        }
        en = {
            "cpr": f"Go there and start CPR: {where}",
            "straight": f"Do not fetch the AED, go straight to the patient: {where}",
            "keep_aed": f"Bring the AED you are fetching to {where}",
            "other_aed": f"Fetch this AED instead: {part['aed']}{detail}. Bring it to {where}",
        }
        return _pick(
            language,
            f"Larm {code}: NY PLATS. {sv[route]}",
            f"Alert {code}: NEW LOCATION. {en[route]}",
        )

    return _fit(compose, fields)


def closed_thanks_text(language: str, *, follow_up: str) -> str:
    """The incident is over; the follow-up contact, since responders can be shaken."""
    contact = _clip(follow_up, 160)
    return _pick(
        language,
        f"Larmet är avslutat. Tack för din insats! {contact}",
        f"The alert is over. Thank you for helping! {contact}",
    )


def help_text(language: str) -> str:
    return _pick(
        language,
        "Livräddarlarm: svara JA <kod> eller NEJ <kod> på ett larm, ÅNGRA, FRAMME, "
        "PAUSE <timmar>, RESUME, STOPP för att avsluta.",
        "Responder: reply YES <code> or NO <code> to an alert, WITHDRAW, ARRIVED, "
        "PAUSE <hours>, RESUME, STOP to unsubscribe.",
    )


def unknown_sender_text() -> str:
    return (
        "Responder: detta nummer är inte registrerat som livräddare. "
        "This number is not registered as a volunteer."
    )


def reply_not_recorded_text() -> str:
    """Both languages: the reply could not be applied, and who sent it is not known yet."""
    return (
        "Responder: vi kunde inte registrera ditt svar. Svara igen. "
        "We could not record your answer. Please reply again."
    )


def confirm_with_code_text(language: str, *, code: str) -> str:
    return _pick(
        language,
        f"Du är den sista som behövs. Bekräfta med koden från larmet: svara JA {code}.",
        f"You are the last one needed. Confirm with the code from the alert: reply YES {code}.",
    )


def consent_request_text(language: str) -> str:
    return _pick(
        language,
        "Livräddarlarm: du har anmälts som frivillig livräddare. Svara JA om du vill få "
        "larm om hjärtstopp nära dig. STOPP avslutar.",
        "Responder: you have been signed up as a volunteer life-saver. Reply YES to get "
        "alerts about cardiac arrests near you. STOP to unsubscribe.",
    )


def consent_recorded_text(language: str) -> str:
    return _pick(
        language,
        "Tack! Ditt samtycke är registrerat. Du kan få larm så snart ditt utbildningsbevis "
        "är godkänt.",
        "Thank you: your consent is recorded. You can be alerted once your training "
        "certificate is verified.",
    )


def which_alert_text(language: str, *, codes: list[str], verb: str) -> str:
    listed = ", ".join(codes)
    sv_verb = {"YES": "JA", "NO": "NEJ", "WITHDRAW": "ÅNGRA", "ARRIVED": "FRAMME"}.get(verb, verb)
    return _pick(
        language,
        f"Du har flera larm ({listed}). Svara {sv_verb} och koden, t.ex. {sv_verb} {codes[0]}.",
        f"You have several alerts ({listed}). Reply {verb} with the code, e.g. {verb} {codes[0]}.",
    )


def opted_out_text(language: str) -> str:
    return _pick(
        language,
        "Du får inga fler SMS från Responder. Svara START för att börja igen.",
        "You will get no more SMS from Responder. Reply START to opt back in.",
    )


def opted_in_text(language: str) -> str:
    return _pick(
        language,
        "Välkommen tillbaka! Du kan få larm igen.",
        "Welcome back! You can receive alerts again.",
    )


def paused_text(language: str, *, until: datetime, zone: ZoneInfo) -> str:
    moment = until.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return _pick(
        language,
        f"Inga larm till {moment}. Svara RESUME för att få larm igen.",
        f"No alerts until {moment}. Reply RESUME to receive alerts again.",
    )


def resumed_text(language: str) -> str:
    return _pick(language, "Du kan få larm igen.", "You can receive alerts again.")


def certification_reminder_text(
    language: str, *, kind: str, expires_on: str, renew_link: str
) -> str:
    """What expires, when, that alerts stop without renewal, and where to add the new one
    (the volunteer's own page, behind an SMS-code login): at most two segments."""
    if language == "sv":
        return (
            f"Ditt {CERTIFICATION_KIND_NAMES['sv'][kind]}-certifikat går ut {expires_on}. "
            "Förnya det för att fortsätta få larm som SMS-livräddare. "
            f"Lägg till det nya här: {renew_link}"
        )
    return (
        f"Your {CERTIFICATION_KIND_NAMES['en'][kind]} certificate expires on {expires_on}. "
        f"Renew it to keep receiving volunteer alerts. Add the new one here: {renew_link}"
    )


def signup_code_text(language: str, *, code: str, minutes: int) -> str:
    """The code that completes a sign-up at ``/join``; never says more than it must."""
    return _pick(
        language,
        f"Responder: din kod är {code}. Den gäller i {minutes} minuter. Ge den inte till någon.",
        f"Responder: your code is {code}. It is valid for {minutes} minutes. "
        "Do not give it to anyone.",
    )


def login_code_text(language: str, *, code: str, minutes: int) -> str:
    """A login code: also what a registered number gets when someone tries ``/join`` with it."""
    return _pick(
        language,
        f"Responder: din inloggningskod är {code}. Den gäller i {minutes} minuter. "
        "Ge den inte till någon.",
        f"Responder: your login code is {code}. It is valid for {minutes} minutes. "
        "Do not give it to anyone.",
    )


def debrief_request_text(*, name: str, phone: str, at: datetime, zone: ZoneInfo) -> str:
    """To the follow-up contact (staff, in English): a responder asks to be called."""
    moment = at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return (
        f"Responder: {_clip(name, 60)} ({phone}) responded to the alert of {moment} "
        "and asks to be contacted."
    )


def hindrance_text(
    language: str,
    code: str,
    *,
    zone: ZoneInfo,
    until: datetime | None = None,
    on: date | None = None,
    reply_number: str | None = None,
) -> str:
    """Why a volunteer cannot be alerted now, in plain words on their own page."""
    start_to = reply_number or _pick(
        language, "numret som larmen kommer från", "the number our alerts come from"
    )
    moment = until.astimezone(zone).strftime("%Y-%m-%d %H:%M") if until else ""
    day = on.isoformat() if on else ""
    words = {
        "suspended": (
            "Ditt konto är avstängt av samordnaren. Kontakta samordnaren.",
            "Your account is suspended by the coordinator. Please contact them.",
        ),
        "opted_out": (
            f"Du har avslutat SMS (STOPP). Operatören skickar inga SMS till dig förrän du "
            f"skickar START till {start_to}.",
            f"You have opted out of SMS (STOP). The operator blocks our texts until you "
            f"text START to {start_to}.",
        ),
        "paused": (
            f"Du har pausat larmen till {moment}.",
            f"You have paused alerts until {moment}.",
        ),
        "certification_pending": (
            "Ditt certifikat väntar på granskning av samordnaren.",
            "Your certificate is waiting for the coordinator's review.",
        ),
        "certification_expired": (
            f"Ditt certifikat gick ut {day}. Lägg till det nya.",
            f"Your certificate expired on {day}. Please add your new one.",
        ),
        "no_certification": (
            "Du har inget giltigt HLR-certifikat. Lägg till ett.",
            "You have no valid CPR certificate. Please add one.",
        ),
        "no_location": (
            "Du har ingen plats och ingen aktuell position. Lägg till en plats (hem, arbete).",
            "You have no place and no current location. Please add a place (home, work).",
        ),
    }
    sv, en = words[code]
    return _pick(language, sv, en)


# What a call says (``dispatch/voice.py``), in the volunteer's language: read aloud by
# Twilio's <Say>, so no segments and no GSM-7, but short sentences, numbers a voice
# reads well, and nothing a voicemail should hear before a key is pressed.

SAY_LANGUAGE = {"sv": "sv-SE", "en": "en-GB"}


def _metres(distance_m: float) -> str:
    return f"{round(distance_m / 10) * 10:.0f}"


def call_alert_speech(language: str, *, kind: str, distance_m: float, exercise: bool) -> str:
    """What and how far, then the keys: never the address, which waits for a 1."""
    drill = _pick(language, "Detta är en övning. ", "This is an exercise. ") if exercise else ""
    what = KIND_NAMES["sv" if language == "sv" else "en"][kind]
    far = _metres(distance_m)
    return drill + _pick(
        language,
        f"Hjärt-larm. {what.capitalize()}, {far} meter från dig. "
        "Tryck 1 om du kan gå nu. Tryck 2 om du inte kan.",
        f"CPR alert. {what.capitalize()}, {far} metres from you. "
        "Press 1 if you can go now. Press 2 if you cannot.",
    )


def call_keys_speech(language: str) -> str:
    return _pick(
        language,
        "Tryck 1 om du kan gå nu. Tryck 2 om du inte kan.",
        "Press 1 if you can go now. Press 2 if you cannot.",
    )


def call_accepted_speech(
    language: str,
    *,
    role: str,
    address: str,
    access_notes: str | None,
    aed_address: str | None,
    aed_description: str | None,
) -> str:
    """After a 1: the role and where, said once; the call repeats it, the SMS follows."""
    notes = f" {access_notes}." if access_notes else ""
    if role == "aed":
        detail = f", {aed_description}" if aed_description else ""
        return _pick(
            language,
            f"Tack. Hämta hjärtstartaren vid {aed_address}{detail}. "
            f"Ta den till {address}.{notes} Instruktionerna kommer också med SMS.",
            f"Thank you. Fetch the defibrillator at {aed_address}{detail}. "
            f"Bring it to {address}.{notes} The instructions are also coming by text message.",
        )
    return _pick(
        language,
        f"Tack. Gå direkt till patienten och starta hjärt-lungräddning: {address}.{notes} "
        "Instruktionerna kommer också med SMS.",
        f"Thank you. Go straight to the patient and start CPR: {address}.{notes} "
        "The instructions are also coming by text message.",
    )


def call_not_needed_speech(language: str) -> str:
    return _pick(
        language,
        "Tack. Tillräckligt många är redan på väg. Du behöver inte gå.",
        "Thank you. Enough responders are already on their way. You do not need to go.",
    )


def call_declined_speech(language: str) -> str:
    return _pick(language, "Tack för svaret. Hej då.", "Thank you for answering. Goodbye.")


def call_ended_speech(language: str) -> str:
    return _pick(
        language,
        "Larmet är avslutat. Gå inte dit. Hej då.",
        "This alert has ended. Do not go. Goodbye.",
    )


def call_no_key_speech(language: str) -> str:
    return _pick(
        language,
        "Vi hörde ingen knapptryckning. Hej då.",
        "We did not hear a key. Goodbye.",
    )
