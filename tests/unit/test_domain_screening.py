"""Screening arithmetic."""

from __future__ import annotations

from e2ecounsel.domain.screening import Band, critical_items, score, severity

PHQ9_BANDS = (
    Band("minimal", 0, 4),
    Band("mild", 5, 9),
    Band("moderate", 10, 14),
    Band("moderately_severe", 15, 19),
    Band("severe", 20, 27),
)


def test_score_and_severity() -> None:
    assert score([0, 1, 2, 3, 0, 0, 0, 0, 0]) == 6
    assert severity(6, PHQ9_BANDS) == "mild"
    assert severity(0, PHQ9_BANDS) == "minimal"
    assert severity(27, PHQ9_BANDS) == "severe"
    assert severity(28, PHQ9_BANDS) is None


def test_critical_item_is_zero_based_with_minimum_threshold() -> None:
    critical = {8: 1}
    assert critical_items([0] * 8 + [1], critical) == [8]
    assert critical_items([3] * 8 + [0], critical) == []
    assert critical_items([3] * 8, critical) == []  # not answered yet
    assert critical_items([0] * 8 + [None], critical) == []
    assert critical_items([2, 0, 3], {0: 2, 2: 3, 1: 1}) == [0, 2]
