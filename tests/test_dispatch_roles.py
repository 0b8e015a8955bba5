"""Roles per SPEC 3.4, rules a–d, and both stand-down conditions."""

from __future__ import annotations

import pytest

from dispatch.roles import Slots, choose_role, should_stand_down
from tests.factories import make_settings

SETTINGS = make_settings()


@pytest.mark.parametrize(
    ("slots", "detour", "expected"),
    [
        (Slots(cpr_open=2, aed_open=1, cpr_taken=0), 50.0, "aed"),
        (Slots(cpr_open=2, aed_open=1, cpr_taken=0), 300.0, "cpr"),
        (Slots(cpr_open=1, aed_open=1, cpr_taken=1), 300.0, "aed"),
        (Slots(cpr_open=1, aed_open=1, cpr_taken=1), 700.0, "cpr"),
        (Slots(cpr_open=2, aed_open=1, cpr_taken=0), None, "cpr"),
        (Slots(cpr_open=0, aed_open=1, cpr_taken=2), 500.0, "aed"),
        (Slots(cpr_open=0, aed_open=1, cpr_taken=2), 700.0, None),
        (Slots(cpr_open=0, aed_open=0, cpr_taken=2), 10.0, None),
        (Slots(cpr_open=2, aed_open=0, cpr_taken=0), 10.0, "cpr"),
    ],
)
def test_role_follows_rules_a_to_d(slots: Slots, detour: float | None, expected: str) -> None:
    assert choose_role(slots, detour_m=detour, settings=SETTINGS) == expected


def test_lone_aed_fetcher_far_from_the_aed_goes_to_the_patient_first() -> None:
    slots = Slots(cpr_open=2, aed_open=1, cpr_taken=0)
    assert choose_role(slots, detour_m=150.0, settings=SETTINGS) == "cpr"


def test_everyone_pending_is_stood_down_when_every_slot_is_full() -> None:
    slots = Slots(cpr_open=0, aed_open=0, cpr_taken=2)
    assert should_stand_down(slots, pending_detours=[10.0], settings=SETTINGS)


def test_stand_down_when_cpr_is_full_and_nobody_pending_can_take_the_aed() -> None:
    slots = Slots(cpr_open=0, aed_open=1, cpr_taken=2)
    assert should_stand_down(slots, pending_detours=[900.0, None], settings=SETTINGS)
    assert not should_stand_down(slots, pending_detours=[900.0, 400.0], settings=SETTINGS)


def test_no_stand_down_while_a_cpr_slot_is_open() -> None:
    slots = Slots(cpr_open=1, aed_open=0, cpr_taken=1)
    assert not should_stand_down(slots, pending_detours=[], settings=SETTINGS)
