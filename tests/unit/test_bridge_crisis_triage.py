"""The small decisions of the bridge's crisis triage: what counts as an answer, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.features.crisis.triage import CHECK_ASKED, _answer, _within
from e2ecounsel.policy import load_policy

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "meaning"),
    [
        ("yes", "yes"),
        ("Yes.", "yes"),
        ("YA!", "yes"),
        ("iya", "yes"),
        ("ｙｅｓ", "yes"),
        ("no", "no"),
        ("Tidak.", "no"),
        ("nggak", "no"),
        ("Yes, I am", "yes"),
        ("ya aku kepikiran", "yes"),
        ("no, not really", "no"),
        ("urgent", None),
        ("skip", None),
        ("I guess yes", None),
        ("", None),
    ],
)
def test_answers_to_the_check_question(text: str, meaning: str | None) -> None:
    assert _answer(load_policy(), text, "en") == meaning


def test_a_check_is_open_only_within_its_window() -> None:
    window = timedelta(hours=2)
    asked = {CHECK_ASKED: (NOW - timedelta(minutes=30)).isoformat()}
    assert _within(asked, CHECK_ASKED, NOW, window)
    assert not _within(asked, CHECK_ASKED, NOW + timedelta(hours=2), window)
    assert not _within({}, CHECK_ASKED, NOW, window)
    assert not _within({CHECK_ASKED: "not a time"}, CHECK_ASKED, NOW, window)
    assert not _within(
        {CHECK_ASKED: (NOW + timedelta(hours=1)).isoformat()}, CHECK_ASKED, NOW, window
    )
