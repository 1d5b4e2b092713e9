"""The TUI's pure parts: queue order, waiting times, reply rounds, case-channel
parsing, snippets and sealed notes. No Textual, no homeserver."""

from __future__ import annotations

from datetime import datetime

import pytest

from e2ecounsel.policy import load_policy
from tui.briefs import CaseReader
from tui.notes import FAST_FOR_TESTS, NoteBook, WrongPassphrase
from tui.queue import (
    ClientEntry,
    Message,
    ReplyRound,
    format_wait,
    order,
    parse_windows,
    round_number,
)
from tui.snippets import Snippet, search

POLICY = load_policy(None)


def entry(room: str, *msgs: tuple[str, int], risk: str = "low") -> ClientEntry:
    e = ClientEntry(room, risk=risk)
    for i, (kind, ts) in enumerate(msgs):
        e.add(Message(f"${room}{i}", "@x:y", ts, "hi", kind))
    return e


def test_order_is_high_risk_then_longest_wait_then_the_rest():
    idle = entry("!idle", ("client", 10), ("counselor", 20))
    late = entry("!late", ("client", 300))
    early = entry("!early", ("counselor", 5), ("client", 100), ("bot", 150), ("client", 200))
    risky_idle = entry("!risky", risk="high")
    got = [e.room_id for e in order([idle, late, early, risky_idle])]
    assert got == ["!risky", "!early", "!late", "!idle"]
    assert early.awaiting_since_ms == 100  # bot notices do not count as a reply
    assert early.unread == 2 and idle.unread == 0


def test_duplicate_events_are_ignored_and_out_of_order_ones_sorted():
    e = entry("!r", ("client", 50))
    assert not e.add(Message("$!r0", "@x:y", 50, "hi", "client"))
    e.add(Message("$old", "@x:y", 10, "older", "counselor"))
    assert [m.ts_ms for m in e.messages] == [10, 50]


def test_format_wait():
    assert format_wait((3 * 60 + 12) * 60_000) == "3 h 12 m"
    assert format_wait(5 * 60_000) == "5 m"
    assert format_wait((2 * 24 + 4) * 3600_000) == "2 d 4 h"


def test_reply_round_counts_down_and_ends():
    windows = parse_windows(["19:00", "09:00", "13:00"])
    assert round_number(datetime(2026, 1, 1, 14, 0), windows) == 2
    assert round_number(datetime(2026, 1, 1, 7, 0), windows) == 1
    a, b = entry("!a", ("client", 1)), entry("!b", ("client", 2))
    r = ReplyRound.start([b, a, entry("!c")], 2, 3)
    assert r.room_ids == ["!a", "!b"] and r.label() == "Round 2 of 3 today · 2 left"
    assert r.advance() == "!b" and r.label().endswith("1 left")
    assert r.advance() is None and r.label().endswith("done")


@pytest.mark.parametrize("lang", POLICY.languages)
def test_case_reader_reads_the_bridge_texts_in_every_language(lang):
    reader = CaseReader(POLICY)
    body = POLICY.text(
        lang,
        "brief.new",
        case=7,
        pseudonym="[red]Rain",
        language=lang,
        country="ID",
        topic="T",
        risk=POLICY.text(lang, "risk.high"),
        screening="PHQ-9: 5\nGAD-7: 3",
        room_link="https://matrix.to/#/!abc:srv",
        consent_date="2026-11-20",
    )
    fact = reader.read(body)
    assert fact is not None and fact.kind == "brief.new" and fact.room_id == "!abc:srv"
    assert fact.fields["pseudonym"] == "[red]Rain"
    assert reader.risk_level(fact.fields["risk"]) == "high"
    assert fact.fields["consent_date"] == "2026-11-20"
    page = reader.read(POLICY.text(lang, "page.crisis", room_link="https://matrix.to/#/!p:srv"))
    assert page is not None and page.kind == "page.crisis" and page.room_id == "!p:srv"
    assert reader.read("just chatting about https://matrix.to/#/!abc:srv") is None


def test_snippets_search_prefers_the_client_language():
    items = [Snippet("hello", "Halo", "id"), Snippet("hello", "Hello", "en"), Snippet("x", "y")]
    assert [s.text for s in search(items, "hel", "en")] == ["Hello", "Halo"]
    assert search(items, "nothing") == []


def test_notes_are_sealed_and_need_the_passphrase(tmp_path):
    book = NoteBook.open(tmp_path, "right", limits=FAST_FOR_TESTS)
    book.set("!room", "CANARY-note")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"CANARY" not in raw and b"!room" not in raw
    assert NoteBook.open(tmp_path, "right").get("!room") == "CANARY-note"
    with pytest.raises(WrongPassphrase, match="does not open"):
        NoteBook.open(tmp_path, "wrong")
