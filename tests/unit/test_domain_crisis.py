"""Crisis phrase detection: what must match, and what must not."""

from __future__ import annotations

import time

import pytest

from e2ecounsel.domain.crisis import CrisisDetector, detect

PHRASES = {
    "en": ["kill myself", "end my life", "suicide", "want to die"],
    "id": ["bunuh diri", "ingin mati", "mengakhiri hidup"],
}


@pytest.fixture(scope="module")
def detector() -> CrisisDetector:
    return CrisisDetector(PHRASES)


@pytest.mark.parametrize(
    "text",
    [
        "I want to kill myself",
        "kill   myself",
        "Kill-myself!",
        "KILL\nMYSELF",
        "i might  end...my life tonight",
        "Suicide.",
        "saya mau bunuh diri",
        "Bunuh-Diri",
        "aku INGIN mati saja",
        "ｋｉｌｌ ｍｙｓｅｌｆ",  # full-width
        "kíll mysélf",  # accents
        "kill\u200bmyself",  # zero-width space between the words
        "ki\u00adll myself",  # soft hyphen inside a word
        "thinking about suicide_",
    ],
)
def test_matches(detector: CrisisDetector, text: str) -> None:
    assert detector.detect(text)


@pytest.mark.parametrize(
    "text",
    [
        "I want to skill myself up",
        "killing myself with work",  # different word: operators add it if they want it
        "my life is fine, end of story",
        "suicides",  # inflections are separate phrases
        "pembunuh dirinya",
        "I want to diet",
        "",
        "kill my self-doubt",
        "the killmyself band",
    ],
)
def test_does_not_match(detector: CrisisDetector, text: str) -> None:
    assert not detector.detect(text)


def test_find_reports_language_not_phrase(detector: CrisisDetector) -> None:
    assert detector.find("saya ingin mati") == "id"
    assert detector.find("end my life") == "en"
    assert detector.find("hello") is None


def test_module_level_detect() -> None:
    assert detect("Kill-myself!", PHRASES)
    assert not detect("skill myself", PHRASES)


def test_empty_and_duplicate_phrases_ignored() -> None:
    d = CrisisDetector({"en": ["", "  ", "Kill myself", "kill-myself"]})
    assert len(d) == 1
    assert not d.detect("anything at all")


def test_thousands_of_phrases_stay_fast() -> None:
    many = {"en": [f"phrase{i} word{i % 97} tail{i % 13}" for i in range(5000)] + ["kill myself"]}
    d = CrisisDetector(many)
    text = " ".join(f"word{i}" for i in range(2000)) + " kill myself"
    begin = time.perf_counter()
    for _ in range(20):
        assert d.detect(text)
    per_message = (time.perf_counter() - begin) / 20
    assert per_message < 0.05
