"""Replies are read the way a hurried volunteer types them."""

from __future__ import annotations

import pytest

from dispatch.replies import Reply, parse_reply


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("YES", Reply("accept")),
        ("yes", Reply("accept")),
        ("Y", Reply("accept")),
        ("ja 4821", Reply("accept", code="4821")),
        ("4821 YES", Reply("accept", code="4821")),
        ("Ja!! 4821.", Reply("accept", code="4821")),
        ("  ok  ", Reply("accept")),
        ("J", Reply("accept")),
        ("no", Reply("decline")),
        ("Nej 4821", Reply("decline", code="4821")),
        ("WITHDRAW", Reply("withdraw")),
        ("Ångra 4821", Reply("withdraw", code="4821")),
        ("angra", Reply("withdraw")),
        ("framme", Reply("arrived")),
        ("Here.", Reply("arrived")),
        ("ARRIVED", Reply("arrived")),
        ("Stopp", Reply("stop")),
        ("unsubscribe", Reply("stop")),
        ("START", Reply("start")),
        ("pause", Reply("pause", hours=8)),
        ("PAUSE 4", Reply("pause", hours=4)),
        ("resume", Reply("resume")),
        ("Hjälp", Reply("help")),
        ("info", Reply("help")),
    ],
)
def test_reply_is_understood_whatever_the_case_accents_and_punctuation(
    body: str, expected: Reply
) -> None:
    assert parse_reply(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   ",
        "👍",
        "❤️ YES ❤️ maybe",
        "I am on my way",
        "YES NO",
        "YES 12 34",
        "PAUSE 0",
        "x" * 2048,
    ],
)
def test_anything_else_is_unknown(body: str) -> None:
    assert parse_reply(body) == Reply("unknown")


def test_emoji_around_a_keyword_is_ignored() -> None:
    assert parse_reply("👍 ja 4821 🙏") == Reply("accept", code="4821")


def test_a_code_on_stop_is_not_a_code() -> None:
    assert parse_reply("STOP 4821") == Reply("unknown")
