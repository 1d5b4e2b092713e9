"""Screening arithmetic."""

from __future__ import annotations

from e2ecounsel.domain.screening import Band, band_problems, critical_hit, score, severity

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
    assert critical_hit([0] * 8 + [1], critical)
    assert not critical_hit([3] * 8 + [0], critical)
    assert not critical_hit([3] * 8, critical)  # not answered yet
    assert not critical_hit([0] * 8 + [None], critical)


def test_band_problems() -> None:
    assert band_problems(PHQ9_BANDS, 27) == []
    problems = band_problems((Band("a", 0, 4), Band("b", 4, 8), Band("c", 10, 9)), 10)
    assert "score 4 is in several bands: a, b" in problems
    assert "score 9 is in no band" in problems
    assert "band 'c': low 10 is above high 9" in problems
