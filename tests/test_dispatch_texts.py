"""Every SMS is at most two segments, in both languages, whatever the registry holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.core import texts
from tests.factories import make_settings

LONG_ADDRESS = (
    "Kungliga Tekniska högskolans huvudbyggnad, Drottning Kristinas väg 4, 114 28 Stockholm"
)
LONG_NOTES = (
    "Portkod 1234#, gå in genom gården till vänster, tredje trappan, ring på hos Öberg – två gånger"
)
AT = datetime(2026, 11, 24, 14, 32, tzinfo=UTC)
ZONE = make_settings().zone


def every_text(language: str) -> list[str]:
    return [
        texts.alert_text(
            language,
            kind="cardiac_arrest",
            at=AT,
            zone=ZONE,
            distance_m=320,
            address=LONG_ADDRESS,
            code="4821",
        ),
        texts.instructions_text(
            language,
            role="cpr",
            address=LONG_ADDRESS,
            access_notes=LONG_NOTES,
            lat=59.33,
            lon=18.06,
            route_m=320,
        ),
        texts.instructions_text(
            language,
            role="aed",
            address=LONG_ADDRESS,
            access_notes=LONG_NOTES,
            lat=59.33,
            lon=18.06,
            route_m=1240,
            aed_address="Centralstationen, stora hallen vid biljettkontoret, Stockholm",
            aed_description="Skåp på väggen vid Pressbyrån, skåpkod 1234 – larmar när det öppnas",
            aed_access="mon/tue/wed/thu/fri 06:00-22:00, sat/sun 08:00-20:00",
        ),
        texts.stand_down_text(language, code="4821"),
        texts.not_needed_text(language),
        texts.alert_ended_text(language),
        texts.declined_text(language),
        texts.withdrawn_text(language),
        texts.arrived_text(language),
        texts.cancellation_text(language, code="4821"),
        texts.ems_arrived_text(language, code="4821"),
        texts.update_text(language, code="4821", address=LONG_ADDRESS, access_notes=LONG_NOTES * 2),
        texts.moved_stand_down_text(language, code="4821"),
        *(
            texts.moved_text(
                language,
                code="4821",
                route=route,
                address=LONG_ADDRESS,
                access_notes=LONG_NOTES,
                lat=59.33,
                lon=18.06,
                aed_address="Centralstationen, stora hallen vid biljettkontoret, Stockholm",
                aed_description="Skåp på väggen vid Pressbyrån, skåpkod 1234 – larmar när öppnat",
            )
            for route in ("cpr", "straight", "keep_aed", "other_aed")
        ),
        texts.closed_thanks_text(language, follow_up=make_settings().follow_up_text),
        texts.help_text(language),
        texts.unknown_sender_text(),
        texts.which_alert_text(language, codes=["4821", "1234", "5678"], verb="YES"),
        texts.opted_out_text(language),
        texts.opted_in_text(language),
        texts.paused_text(language, until=AT, zone=ZONE),
        texts.resumed_text(language),
    ]


@pytest.mark.parametrize("language", ["sv", "en"])
def test_every_text_fits_in_two_gsm7_segments(language: str) -> None:
    for text in every_text(language):
        assert texts.is_gsm7(text), text
        assert texts.segments(text) <= 2, text


def test_alert_carries_time_distance_address_and_the_reply_literal() -> None:
    text = texts.alert_text(
        "en",
        kind="cardiac_arrest",
        at=AT,
        zone=ZONE,
        distance_m=318,
        address="Storgatan 5, Uppsala",
        code="4821",
    )
    assert text == (
        "CPR ALERT 15:32: suspected cardiac arrest 320 m from you, Storgatan 5, Uppsala. "
        "Reply YES 4821 if you can go now, NO 4821 if not."
    )
    assert texts.segments(text) == 1


def test_non_gsm_characters_in_free_text_are_folded_not_sent_as_ucs2() -> None:
    assert texts.to_gsm7("Łódź “corner” … café 😀") == 'Lodz "corner" ... café '


def test_segments_count_concatenation_headers() -> None:
    assert texts.segments("a" * 160) == 1
    assert texts.segments("a" * 161) == 2
    assert texts.segments("a" * 306) == 2
    assert texts.segments("a" * 307) == 3
    assert texts.segments("😀" * 10) == 1
