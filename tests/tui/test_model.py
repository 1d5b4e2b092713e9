"""The TUI's pure parts: queue order, waiting times, reply rounds, reading the case
channel's field, command routing, snippets and sealed notes. No Textual, no
homeserver."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nio import MatrixRoom, RoomMessageText

from e2ecounsel.casechannel import RISKS, CaseEvent, attach, parse
from tests.tui.world import brief_data, case_content
from tui.case import booking_of, brief_of, critical_line, page_of
from tui.commands import CommandRefused, needs_case, route
from tui.link import MatrixLink
from tui.notes import FAST_FOR_TESTS, NoteBook, WrongPassphrase
from tui.queue import (
    CHECK_NO,
    ClientEntry,
    Message,
    QueueOrder,
    ReplyRound,
    open_pages,
    order,
    parse_windows,
    round_number,
)
from tui.snippets import Snippet, search


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


def test_reply_round_counts_down_and_ends():
    windows = parse_windows(["19:00", "09:00", "13:00"])
    assert round_number(datetime(2026, 1, 1, 14, 0), windows) == 2
    assert round_number(datetime(2026, 1, 1, 7, 0), windows) == 1
    a, b = entry("!a", ("client", 1)), entry("!b", ("client", 2))
    r = ReplyRound.start([b, a, entry("!c")], 2, 3)
    assert r.room_ids == ["!a", "!b"] and r.label() == "Round 2 of 3 today · 2 left"
    assert r.advance() == "!b" and r.label().endswith("1 left")
    assert r.advance() is None and r.label().endswith("done")


def case(kind, engagement=1, room="!r:srv", **data) -> CaseEvent:
    return CaseEvent(kind, engagement, room, data)


def offline_link() -> MatrixLink:
    """The link's model alone: case events are fed in directly, no homeserver."""
    session = SimpleNamespace(user_id="@me:srv", client=SimpleNamespace(rooms={}))
    link = MatrixLink(session, bot_id="@counsel:srv")  # type: ignore[arg-type]
    link.session_rooms.add("!r:srv")
    return link


def test_the_card_reads_the_field_never_the_text():
    content = attach(
        {"msgtype": "m.text", "body": "Klien baru: sesuatu yang lain sama sekali"},
        case("brief", **brief_data("[red]Rain\x1b[2J", risk="high")),
    )
    event = parse(content)
    assert event is not None
    brief = brief_of(event.data, 5)
    assert brief.pseudonym == "[red]Rain" and brief.risk == "high"
    assert brief.screening == ("PHQ-9: 7 (mild)", "GAD-7: skipped")
    assert brief.consent_date == "2026-11-20" and brief.shared
    odd = brief_of({"pseudonym": ["x"], "risk": "extreme", "screening": "PHQ-9: 27"}, 1)
    assert odd.pseudonym == "" and odd.risk == "" and odd.screening == ()
    assert critical_line({"title": "PHQ-9", "item": 9, "answer": 2}) == "PHQ-9 item 9: answer 2"


def test_pages_bookings_and_their_bad_values():
    page = page_of(case("page", page=7, reason="crisis", client_room="not a room"), 10)
    assert page is not None and page.page_id == "7" and page.client_room is None
    assert page_of(case("page", reason="crisis"), 10) is None  # nothing to take
    assert booking_of({"booking": 3, "start": "2026-12-01T10:00:00+07:00"})[1] is not None
    assert booking_of({"booking": 3, "start": "2026-12-01T10:00:00"}) == ("3", None)
    assert booking_of({"booking": 3, "status": "cancelled"}) == ("3", None)


def test_history_out_of_order_brief_risk_closed_released():
    link = offline_link()
    # History comes newest page first: the later facts are applied before the earlier.
    link.apply_case(case("risk", risk="medium"), 300)
    link.apply_case(case("brief", **brief_data("Ana", risk="high")), 100)
    entry = link.entry("!r:srv")
    assert entry.risk == "medium" and entry.engagement == 1 and link.is_client("!r:srv")
    link.apply_case(case("closed", outcome="face_to_face"), 400)
    assert entry.closed and entry.outcome == "face_to_face"
    assert order([entry]) == [entry]  # still shown (read-only), not dropped
    link.apply_case(case("released"), 500)
    assert not link.is_client("!r:srv") and link.active_entries() == []
    assert [a.kind for a in link.take_alerts()] == ["released"]
    link.apply_case(case("brief", **brief_data("Ana")), 200)  # older than the release
    assert not link.is_client("!r:srv")
    link.apply_case(case("brief", engagement=9, **brief_data("Ana")), 600)  # given back
    assert link.is_client("!r:srv") and not link.entry("!r:srv").closed


def test_a_page_alerts_once_and_a_take_closes_it():
    link = offline_link()
    link.apply_case(case("brief", **brief_data("Ana")), 100)
    link.apply_case(case("page", page=7, reason="crisis"), 200, live=True)
    link.apply_case(case("page", page=7, reason="crisis"), 200, live=True)  # a duplicate
    assert [a.kind for a in link.take_alerts()] == ["page"]
    assert [p.page_id for p in open_pages(link.pages.values())] == ["7"]
    assert link.entry("!r:srv").risk == "high"
    link.apply_case(case("take", page=7, by="@oncall:srv"), 300, live=True)
    assert open_pages(link.pages.values()) == []
    assert [(a.kind, a.text) for a in link.take_alerts()] == [("take", "@oncall:srv")]
    # A take read before its page (history): the page never opens.
    link.apply_case(case("take", page=8, by="@x:srv"), 500)
    link.apply_case(case("page", page=8), 400)
    assert open_pages(link.pages.values()) == [] and link.take_alerts() == []


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("!risk medium", "!risk 12 medium"),
        ("!RISK High", "!risk 12 high"),
        (
            "!close face-to-face see you at the clinic",
            "!close 12 face-to-face see you at the clinic",
        ),
        ("!close 12 resolved", "!close 12 resolved"),
        ("!refer @budi:srv", "!refer 12 @budi:srv"),
        ("!book", "!book 12"),
        ("!take 7", "!take 7"),
        ("!cases", "!cases"),
        ("!help", "!help"),
    ],
)
def test_a_bang_line_becomes_a_command_for_this_case(typed, sent):
    assert route(typed, 12) == sent


@pytest.mark.parametrize(
    ("typed", "engagement", "why"),
    [
        ("!!! so glad", 12, "no command"),
        ("!hello there", 12, "no command"),
        ("!close 13 resolved", 12, "case 13"),
        ("!close finished", 12, "one of"),
        ("!risk extreme", 12, "one of"),
        ("!refer budi", 12, "Matrix ID"),
        ("!take", 12, "which page"),
        ("!risk high", None, "not known yet"),
    ],
)
def test_a_bad_command_is_refused_with_a_hint(typed, engagement, why):
    with pytest.raises(CommandRefused, match=why):
        route(typed, engagement)


def test_only_case_commands_need_an_open_thread():
    assert needs_case("!risk high") and needs_case("!whatever")
    assert not needs_case("!take 7") and not needs_case(" !CASES") and not needs_case("!help")


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


def bot_room(room_id: str, *others: str) -> MatrixRoom:
    """A room shaped as the bridge builds it: the bot, us at 50, maybe others."""
    room = MatrixRoom(room_id, "@me:srv", encrypted=True)
    for user in ("@counsel:srv", "@me:srv", *others):
        room.add_member(user, None, None)
    room.power_levels.users.update({"@me:srv": 50, **dict.fromkeys(others, 50)})
    return room


def bot_says(kind, ts: int, room=None, **data) -> RoomMessageText:
    content = case_content(kind, 1, room, data, body="any words at all")
    return RoomMessageText.from_dict(
        {
            "type": "m.room.message",
            "event_id": f"$e{ts}",
            "sender": "@counsel:srv",
            "origin_server_ts": ts,
            "content": content,
        }
    )


def test_commands_go_to_the_case_channel_not_a_room_that_only_pages():
    link = offline_link()
    case, supervisors = bot_room("!case:srv"), bot_room("!sup:srv")
    link.ingest(case, bot_says("brief", 100, "!r:srv", **brief_data("Ana")))
    link.ingest(supervisors, bot_says("page", 200, page=4, reason="urgent"))
    assert link.case_room == "!case:srv"
    assert [p.page_id for p in open_pages(link.pages.values())] == ["4"]
    # A bot text without the field is no case fact, whatever it says.
    plain = RoomMessageText.from_dict(
        {
            "type": "m.room.message",
            "event_id": "$plain",
            "sender": "@counsel:srv",
            "origin_server_ts": 300,
            "content": {"msgtype": "m.text", "body": "Crisis page 5"},
        }
    )
    assert link.ingest(case, plain) == set() and "5" not in link.pages


def test_the_queue_snapshot_gives_back_what_it_was_given(tmp_path):
    import secrets

    from e2ecounsel.sealing import Sealer
    from tui.queue import Page
    from tui.snapshot import QueueSnapshot, Remembered

    sealer = Sealer(secrets.token_bytes(32))
    entry = ClientEntry("!a:srv", client_id="@c:srv", engagement=7, risk="high", risk_set_ms=5)
    entry.brief = brief_of(brief_data("Wren", "high", flags=("check:no",)), 4)
    entry.bookings["b1"] = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    entry.flag("check:no", 4)
    entry.open_pages["p1"] = 6
    entry.add(Message("$1", "@c:srv", 10, "hello", "client", sender_key="k"))
    entry.add(Message("$2", "@me:srv", 20, "hi", "counselor"))
    entry.read_up_to_ms = 10
    page = Page("p1", 6, "urgent", 7, "!a:srv", None)
    remembered = Remembered([entry], {"!a:srv": 4}, [page], {"!case:srv": 9}, {"!case:srv"})
    snap = QueueSnapshot(tmp_path / "queue.sealed", sealer, "@me:srv")
    snap.write(remembered)
    back = QueueSnapshot(tmp_path / "queue.sealed", sealer, "@me:srv").read()
    assert back is not None
    (got,) = back.entries
    assert (got.brief, got.bookings, got.flags, got.open_pages) == (
        entry.brief,
        entry.bookings,
        entry.flags,
        entry.open_pages,
    )
    assert got.messages == entry.messages and got.awaiting_since_ms is None
    assert (got.engagement, got.risk, got.risk_set_ms, got.read_up_to_ms) == (7, "high", 5, 10)
    assert back.pages == [page] and back.named_ms == {"!a:srv": 4}
    assert (back.case_rooms, back.briefed_rooms) == ({"!case:srv": 9}, {"!case:srv"})
    # Another key, or another account's file: nothing.
    assert QueueSnapshot(snap.path, Sealer(secrets.token_bytes(32)), "@me:srv").read() is None
    assert QueueSnapshot(snap.path, sealer, "@other:srv").read() is None


def test_a_snapshot_taken_earlier_never_replaces_one_taken_later(tmp_path):
    import secrets

    from e2ecounsel.sealing import Sealer
    from tui.snapshot import QueueSnapshot, Remembered

    sealer = Sealer(secrets.token_bytes(32))
    snap = QueueSnapshot(tmp_path / "queue.sealed", sealer, "@me:srv")
    released = ClientEntry("!gone:srv")
    older = snap.prepare(Remembered([released], {"!gone:srv": 1}))
    newer = snap.prepare(Remembered())  # taken after the client was released
    snap.write_prepared(newer)
    snap.write_prepared(older)  # a slow write of the state before
    back = QueueSnapshot(snap.path, sealer, "@me:srv").read()
    assert back is not None and back.entries == []


_CHANGES = st.lists(
    st.tuples(
        st.integers(0, 7),
        st.sampled_from(["client", "counselor", "risk", "flag", "close", "leave", "join"]),
        st.integers(0, 50),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_CHANGES)
def test_the_queue_order_kept_one_client_at_a_time_is_the_sorted_order(changes):
    entries = {f"!r{i}": ClientEntry(f"!r{i}") for i in range(8)}
    active = dict(entries)
    kept = QueueOrder(active.values())
    for step, (i, what, t) in enumerate(changes):
        room = f"!r{i}"
        entry = entries[room]
        if what in ("client", "counselor"):
            entry.add(Message(f"${step}", "@x:srv", t, "hi", what))
        elif what == "risk":
            entry.risk = RISKS[t % len(RISKS)]
            entry.risk_set_ms = t
        elif what == "flag":
            entry.flag(CHECK_NO, t)
        elif what == "close":
            entry.closed_ms = t + 1
        elif what == "leave":
            active.pop(room, None)
        else:
            active[room] = entry
        before = list(kept.ids)
        moved = kept.update(room, active.get(room))
        assert list(kept.ids) == [e.room_id for e in order(active.values())]
        assert moved == (list(kept.ids) != before)
        assert kept.awaiting == sum(1 for e in active.values() if e.awaiting)
        assert len(kept) == len(active)
