"""Untrusted text cleaning and command splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2ecounsel.domain.text import clean_text, normalize_command, parse_number


def test_strips_ansi_csi_and_osc_sequences() -> None:
    raw = "\x1b[2J\x1b[31mhello\x1b[0m \x1b]0;pwned title\x07world \x1b]8;;http://x\x1b\\link"
    assert clean_text(raw, 100) == "hello world link"


def test_strips_c0_c1_and_bidi_but_keeps_newlines_and_tabs() -> None:
    raw = "a\x00b\x07c\x7f\x85d\x9b31me\u202eevil\u202c\u2066x\u2069\r\nnext\tcol"
    assert clean_text(raw, 100) == "abcdeevilx\nnext\tcol"


def test_normalises_to_nfc_and_trims() -> None:
    assert clean_text("  Cafe\u0301  \n", 100) == "Caf\u00e9"


def test_truncates_after_cleaning() -> None:
    assert clean_text("\x1b[31m" + "x" * 10, 4) == "xxxx"


def test_lone_surrogates_removed() -> None:
    assert clean_text("a\ud800b", 10) == "ab"


@given(st.text(), st.integers(min_value=0, max_value=50))
def test_clean_output_is_safe(raw: str, limit: int) -> None:
    out = clean_text(raw, limit)
    assert len(out) <= limit
    assert "\x1b" not in out
    assert all(ch in "\n\t" or not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F) for ch in out)
    assert not set(out) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert out == out.strip()


@given(st.text())
def test_clean_is_idempotent(raw: str) -> None:
    once = clean_text(raw, 1000)
    assert clean_text(once, 1000) == once


def test_normalize_command() -> None:
    assert normalize_command("  !Close resolved  Thanks for today ") == (
        "close",
        "resolved  Thanks for today",
    )
    assert normalize_command("STATUS") == ("status", "")
    assert normalize_command("! help") == ("help", "")
    assert normalize_command("!refer @Bob:Example.org") == ("refer", "@Bob:Example.org")
    assert normalize_command("   ") == ("", "")
    assert normalize_command("\x1b[31m!urgent\x1b[0m") == ("urgent", "")


@pytest.mark.parametrize(
    ("typed", "number"),
    [
        ("3", 3),
        (" 12 ", 12),
        ("３", 3),  # full-width (CJK input methods)
        ("٣", 3),  # Arabic-Indic
        ("۳", 3),  # Extended Arabic-Indic (Persian, Urdu)
        ("३", 3),  # Devanagari
        ("１２", 12),
        ("²", None),  # superscript: isdigit() says yes, int() raises
        ("①", None),  # circled
        ("½", None),
        ("Ⅲ", None),  # Roman numeral
        ("1٣", None),  # mixed scripts
        ("-1", None),
        ("+1", None),
        ("1.0", None),
        ("1,000", None),
        ("1234567", None),  # longer than any list
        ("", None),
        ("three", None),
    ],
)
def test_parse_number_reads_real_digits_and_refuses_look_alikes(typed: str, number) -> None:
    assert parse_number(typed) == number


@given(st.text(max_size=12))
def test_parse_number_never_raises(raw: str) -> None:
    got = parse_number(raw)
    assert got is None or 0 <= got < 10**6
