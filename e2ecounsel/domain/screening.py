"""Screening questionnaires (PHQ-9, GAD-7, ...) as arithmetic over policy data.

Instruments, bands and critical items come from ``policies/``; this module only sums answers and
looks things up, so an operator can add an instrument without touching code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple


class Band(NamedTuple):
    """A severity band: scores ``low..high`` (inclusive) are labelled ``id`` (``"moderate"``)."""

    id: str
    low: int
    high: int


def score(answers: Iterable[int]) -> int:
    """Total score of one completed instrument (the published scoring for PHQ-9 and GAD-7)."""
    return sum(answers)


def severity(total: int, bands: Sequence[Band]) -> str | None:
    """Id of the band containing ``total``; ``None`` when no band covers it.

    ``None`` rather than an exception because a gap is a policy defect that loading the policy
    reports (``policy check``); a client mid-intake must never see an error for it.
    """
    for band in bands:
        if band.low <= total <= band.high:
            return band.id
    return None


def critical_items(answers: Sequence[int | None], critical: Mapping[int, int]) -> list[int]:
    """0-based indexes of the critical items that reached their threshold, ascending.

    ``critical`` maps a **0-based** item index to the lowest answer that counts as critical, so
    PHQ-9 item 9 "> 0" is ``{8: 1}``. Unanswered items (missing or ``None``) never count.
    """
    hits = []
    for index, threshold in sorted(critical.items()):
        if 0 <= index < len(answers):
            value = answers[index]
            if value is not None and value >= threshold:
                hits.append(index)
    return hits
