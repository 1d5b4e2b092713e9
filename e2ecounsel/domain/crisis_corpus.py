"""Labelled crisis messages and how well a detector does on them.

A corpus file has one message a line, ``label<TAB>lang<TAB>text`` (label 1 = the writer may be at
risk, 0 = not); blank lines and ``#`` comments are ignored. A comment ``# expect: check`` marks
the lines after it, up to ``# expect: any``, as ones that must get at least a check whatever
their label (someone else at risk, a negated disclosure).

Two figures matter, per language: **recall**, the share of at-risk lines that get ``protocol``
or ``check`` (a check is a catch: the bot asks), and the **false-protocol rate**, the share of
not-at-risk lines that get the full protocol (pages for nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from e2ecounsel.domain.crisis import CrisisDetector, Outcome

_EXPECT = re.compile(r"#\s*expect:\s*(\S+)\s*$")


@dataclass(frozen=True)
class Sample:
    """One labelled line; ``line`` is its 1-based line number in the file."""

    label: int
    lang: str
    text: str
    line: int
    expect_check: bool = False


class CorpusError(ValueError):
    """A line that is not ``label<TAB>lang<TAB>text``."""


def parse_corpus(source: str) -> list[Sample]:
    """The samples of a corpus file's text; ``CorpusError`` names the first bad line."""
    samples: list[Sample] = []
    expect = False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            marker = _EXPECT.match(stripped)
            if marker:
                if marker.group(1) not in ("check", "any"):
                    raise CorpusError(f"line {number}: expect must be 'check' or 'any'")
                expect = marker.group(1) == "check"
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 3:
            raise CorpusError(f"line {number}: expected label<TAB>lang<TAB>text")
        label, lang, text = parts
        if label not in ("0", "1"):
            raise CorpusError(f"line {number}: label must be 0 or 1, not {label!r}")
        if not lang.strip() or not text.strip():
            raise CorpusError(f"line {number}: language and text must not be empty")
        samples.append(Sample(int(label), lang.strip(), text, number, expect))
    return samples


@dataclass(frozen=True)
class Judged:
    sample: Sample
    outcome: Outcome
    reason: str | None

    @property
    def missed(self) -> bool:
        """An at-risk line (or one that must be checked) left without a check."""
        needs = self.sample.label == 1 or self.sample.expect_check
        return needs and self.outcome is Outcome.NONE

    @property
    def false_protocol(self) -> bool:
        return self.sample.label == 0 and self.outcome is Outcome.PROTOCOL


@dataclass
class Figures:
    """Counts for one language (or all of them)."""

    positives: int = 0
    caught: int = 0
    negatives: int = 0
    false_protocol: int = 0
    expected_checks: int = 0
    checked: int = 0

    @property
    def recall(self) -> float:
        return self.caught / self.positives if self.positives else 1.0

    @property
    def false_protocol_rate(self) -> float:
        return self.false_protocol / self.negatives if self.negatives else 0.0

    def add(self, judged: Judged) -> None:
        if judged.sample.label == 1:
            self.positives += 1
            self.caught += judged.outcome is not Outcome.NONE
        else:
            self.negatives += 1
            self.false_protocol += judged.false_protocol
        if judged.sample.expect_check:
            self.expected_checks += 1
            self.checked += judged.outcome is not Outcome.NONE


@dataclass
class Report:
    judged: list[Judged] = field(default_factory=list)
    by_lang: dict[str, Figures] = field(default_factory=dict)
    total: Figures = field(default_factory=Figures)

    @property
    def misses(self) -> list[Judged]:
        return [j for j in self.judged if j.missed]

    @property
    def false_protocols(self) -> list[Judged]:
        return [j for j in self.judged if j.false_protocol]


def evaluate(detector: CrisisDetector, samples: Iterable[Sample]) -> Report:
    """Judge every sample; figures per language and overall."""
    report = Report()
    for sample in samples:
        found = detector.triage(sample.text)
        judged = Judged(sample, found.outcome, found.reason)
        report.judged.append(judged)
        report.by_lang.setdefault(sample.lang, Figures()).add(judged)
        report.total.add(judged)
    return report


def summary_lines(report: Report, languages: Sequence[str] | None = None) -> list[str]:
    """One line per language and one overall, for people."""
    lines = []
    names = languages if languages is not None else sorted(report.by_lang)
    rows = [(lang, report.by_lang[lang]) for lang in names if lang in report.by_lang]
    for name, fig in [*rows, ("all", report.total)]:
        lines.append(
            f"{name}: recall {fig.recall:.3f} ({fig.caught}/{fig.positives} at risk caught), "
            f"full protocol on {fig.false_protocol_rate:.1%} of the others "
            f"({fig.false_protocol}/{fig.negatives}), "
            f"checks where needed {fig.checked}/{fig.expected_checks}"
        )
    return lines
