"""What the counselor sees of a crisis check answered "no" (a flag) and of an active
crisis (an open page or risk high): the model and the app's texts, fed directly,
without a homeserver. The same against the real Synapse is in ``test_crisis_care``."""

from __future__ import annotations

from tests.tui.test_model import case, entry, offline_link
from tests.tui.world import brief_data
from tui.app import URGENT_MARK, make_app
from tui.link import MatrixLink
from tui.queue import CHECK_NO, Message, order
from tui.settings import TuiSettings

ROOM = "!r:srv"


def client_says(link: MatrixLink, event_id: str, ts: int, body: str) -> None:
    link.entry(ROOM).add(Message(event_id, "@client:srv", ts, body, "client"))


def app_on(link: MatrixLink, tmp_path):
    """The app's renderers over a model fed by hand (nothing runs)."""
    app = make_app(TuiSettings(data_dir=tmp_path / "d", config_dir=tmp_path / "c"))
    app.link = link
    app.current = ROOM
    return app


def test_a_flag_sorts_above_the_same_risk_level_only():
    flagged = entry("!flagged", ("client", 500))
    waiting = entry("!waiting", ("client", 100))
    medium = entry("!medium", ("client", 900), risk="medium")
    flagged.flag(CHECK_NO, 600)
    assert [e.room_id for e in order([waiting, medium, flagged])] == [
        "!medium",
        "!flagged",
        "!waiting",
    ]
    assert flagged.checked_no_ms == 600 and waiting.checked_no_ms is None
    assert not flagged.flag(CHECK_NO, 400)  # history: an older copy changes nothing
    assert flagged.checked_no_ms == 600


def test_a_flag_event_and_a_briefs_flags_both_mark_the_client():
    link = offline_link()
    link.apply_case(case("brief", **brief_data("Ana")), 100)
    link.apply_case(case("flag", reason=CHECK_NO), 300, body="asked: no", live=True)
    assert link.entry(ROOM).checked_no_ms == 300
    assert [(a.kind, a.text) for a in link.take_alerts()] == [("flag", "asked: no")]
    link.apply_case(case("flag", reason=["bad"]), 400, live=True)  # no reason: nothing kept
    assert link.entry(ROOM).flags == {CHECK_NO: 300}

    intake = offline_link()
    intake.apply_case(case("brief", **brief_data("Budi", flags=(CHECK_NO, 7, "\x1b[2J"))), 100)
    assert intake.entry(ROOM).flags == {CHECK_NO: 100}  # only strings, cleaned
    assert intake.entry(ROOM).brief.flags == (CHECK_NO,)  # type: ignore[union-attr]
    assert intake.take_alerts() == []  # history: no ring


def test_the_row_and_the_card_say_it_in_words(tmp_path):
    link = offline_link()
    link.apply_case(case("brief", **brief_data("Ana")), 100)
    link.apply_case(case("flag", reason=CHECK_NO), 300_000)
    app = app_on(link, tmp_path)
    row = app._queue_line(link.entry(ROOM), 400_000)
    assert "⚑ asked: no" in row.plain
    card = app.card_text().plain
    assert "asked the crisis check question" in card and "said no" in card
    assert app._stamp(300_000) in card

    intake = offline_link()
    intake.apply_case(case("brief", **brief_data("Budi", flags=(CHECK_NO,))), 200_000)
    app = app_on(intake, tmp_path)
    assert "⚑ asked: no" in app._queue_line(intake.entry(ROOM), 400_000).plain
    card = app.card_text().plain
    assert "said no: during intake" in card and app._stamp(200_000) in card


def test_an_open_page_makes_every_message_urgent_until_taken():
    link = offline_link()
    link.apply_case(case("brief", **brief_data("Ana")), 100)
    link.apply_case(case("risk", risk="medium"), 150)
    client_says(link, "$old", 1_000, "a week ago")
    link.apply_case(case("page", page=7), 1_000_000, live=True)
    e = link.entry(ROOM)
    assert e.urgent and e.open_pages == {"7": 1_000_000}
    client_says(link, "$trigger", 999_000, "the words that paged")  # just before the page
    client_says(link, "$after", 1_200_000, "still here")
    assert [m.event_id for m in e.messages if e.is_urgent(m)] == ["$trigger", "$after"]
    # A counselor lowers the risk while the page is open: still urgent, still on top.
    link.apply_case(case("risk", risk="low"), 1_300_000)
    calm = entry("!calm", ("client", 10), risk="medium")
    assert e.urgent and order([calm, e]) == [e, calm]
    link.apply_case(case("take", page=7, by="@oncall:srv"), 1_400_000)
    assert e.open_pages == {} and not e.urgent and order([calm, e]) == [calm, e]


def test_a_message_in_an_active_crisis_alerts_as_urgent():
    link = offline_link()
    link.apply_case(case("brief", **brief_data("Ana", risk="high")), 100)
    room = bot_room_with_client()
    link.ingest(room, said("$1", 200, "hello"), live=True)
    alerts = link.take_alerts()
    assert [(a.kind, a.urgent) for a in alerts] == [("message", True)]
    link.apply_case(case("risk", risk="low"), 300)
    link.ingest(room, said("$2", 400, "better now"), live=True)
    assert [(a.kind, a.urgent) for a in link.take_alerts()] == [("message", False)]


def test_the_thread_marks_urgent_messages_as_literal_text(tmp_path):
    link = offline_link()
    link.apply_case(case("brief", **brief_data("Ana", risk="high")), 100)
    client_says(link, "$1", 200, "[bold]not markup[/bold]")
    app = app_on(link, tmp_path)
    thread = app.thread_text()
    assert URGENT_MARK in thread.plain and "‼ [bold]not markup[/bold]" in thread.plain
    urgent_spans = [s for s in thread.spans if "red" in str(s.style)]
    assert any("not markup" in thread.plain[s.start : s.end] for s in urgent_spans)
    link.apply_case(case("risk", risk="low"), 300)
    assert URGENT_MARK not in app.thread_text().plain


def bot_room_with_client():
    from tests.tui.test_model import bot_room

    room = bot_room(ROOM, "@client:srv")
    room.power_levels.users["@client:srv"] = 0
    return room


def said(event_id: str, ts: int, body: str):
    from nio import RoomMessageText

    return RoomMessageText.from_dict(
        {
            "type": "m.room.message",
            "event_id": event_id,
            "sender": "@client:srv",
            "origin_server_ts": ts,
            "content": {"msgtype": "m.text", "body": body},
        }
    )


def test_a_page_read_before_the_brief_still_counts_and_a_closed_case_is_calm():
    link = offline_link()
    link.apply_case(case("page", page=9), 500)  # history: the page came first
    link.apply_case(case("brief", **brief_data("Ana")), 100)
    e = link.entry(ROOM)
    assert e.open_pages == {"9": 500} and e.urgent
    link.apply_case(case("closed", outcome="refer"), 900)
    assert not e.urgent  # a read-only thread is nobody's crisis
