"""Moving through a long queue: the thread and card follow the cursor without laying
out the screen, drawn at most once a frame, and always end on the highlighted
client. The widgets over a model filled by hand (no homeserver: what is measured
here is drawing; the same app against the real Synapse is in ``test_app``)."""

from __future__ import annotations

import html
import time
from types import SimpleNamespace

import textual.screen

import tui.app
from e2ecounsel.casechannel import CaseEvent
from tests.tui.world import brief_data
from tui.app import CounselorApp
from tui.link import MatrixLink
from tui.panes import QueueView, TextPane
from tui.queue import CHECK_NO, Message
from tui.settings import TuiSettings

CLIENTS = 30


def filled_app(tmp_path, clients: int = CLIENTS) -> CounselorApp:
    app = CounselorApp(TuiSettings(data_dir=tmp_path / "d", config_dir=tmp_path / "c"))
    session = SimpleNamespace(user_id="@me:srv", client=SimpleNamespace(rooms={}))
    link = MatrixLink(session, bot_id="@counsel:srv")  # type: ignore[arg-type]
    now = int(time.time() * 1000)
    for i in range(clients):
        room = f"!r{i:03d}:srv"
        link.session_rooms.add(room)
        link.apply_case(CaseEvent("brief", i + 1, room, brief_data(f"Client{i:03d}")), now)
        for j in range(1 + i % 4):
            words = f"message {j} from client {i:03d} " * (1 + 3 * j)
            link.entry(room).add(Message(f"${i}-{j}", "@c:srv", now - 90_000 + i, words, "client"))
    app.link = link
    app._trust_soon = lambda room_id: None  # type: ignore[method-assign]  # no homeserver
    app.history_loaded = True
    return app


async def started(app: CounselorApp, pilot) -> QueueView:
    app.pop_screen()  # the sign-in: the model is filled by hand instead
    app._refresh_queue()
    await pilot.pause()
    app.action_focus_queue()
    await pilot.pause()
    return app.query_one("#queue", QueueView)


def shown(app: CounselorApp) -> tuple[str, str]:
    return (
        app.query_one("#conversation", TextPane).content.plain,
        app.query_one("#card", TextPane).content.plain,
    )


async def test_a_fast_key_burst_ends_on_the_highlighted_client(tmp_path, monkeypatch):
    # A long frame, so that the whole burst falls within the first key's frame
    # however slowly the keys arrive here.
    monkeypatch.setattr(tui.app, "DETAIL_FRAME_S", 1.0)
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        await pilot.press(*["down"] * 8, "up", "up", *["down"] * 4)
        await pilot.pause(1.2)
        room = ql.highlighted_id
        assert room == app.queue_entries()[10].room_id
        assert app.current == room
        thread, card = shown(app)
        pseudonym = app.link.entry(room).pseudonym  # type: ignore[union-attr]
        assert card.startswith(pseudonym + "\n") and f"client {pseudonym[-3:]}" in thread
        assert (thread, card) == (app.thread_text().plain, app.card_text().plain)


async def test_moves_within_a_frame_draw_once_for_the_last_row(tmp_path):
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(app, pilot)
        first, second, third = (e.room_id for e in app.queue_entries()[3:6])
        app.open_room(first)
        drawn = shown(app)
        assert "Client" in drawn[1]  # the first move is drawn at once
        app.open_room(second)
        app.open_room(third)
        assert shown(app) == drawn  # within the same frame: not yet
        await pilot.pause(0.1)
        assert shown(app) == (app.thread_text().plain, app.card_text().plain)
        assert app.link.entry(third).pseudonym in shown(app)[1]  # type: ignore[union-attr]


async def test_moving_in_the_queue_lays_out_nothing(tmp_path, monkeypatch):
    layouts: list[int] = []
    real = textual.screen.Screen._refresh_layout

    def counted(self, *args, **kwargs):
        layouts.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(textual.screen.Screen, "_refresh_layout", counted)
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(app, pilot)
        await pilot.press("down")
        await pilot.pause(0.1)
        layouts.clear()
        for _ in range(8):
            await pilot.press("down")
            await pilot.pause(0.05)
        assert app.current == app.queue_entries()[9].room_id
        assert layouts == []


async def test_a_changed_row_is_redrawn_and_a_taller_one_moves_the_rows_below(tmp_path):
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        first, second = (e.room_id for e in app.queue_entries()[:2])
        below = ql.line_of(1)
        app.link.entry(first).mark_read()  # type: ignore[union-attr]
        app._refresh_queue({first})
        await pilot.pause()
        assert "(" not in ql.row_text(first).plain  # the unread count is gone
        drawn = ql.render_line(ql.line_of(0) - ql.scroll_offset.y).text
        assert app.link.entry(first).pseudonym in drawn and "(" not in drawn  # type: ignore[union-attr]
        assert "(" in ql.row_text(second).plain
        assert ql.line_of(1) == below
        app.link.entry(first).flag(CHECK_NO, 1)  # type: ignore[union-attr]
        app._refresh_queue({first})
        await pilot.pause()
        assert "asked: no" in ql.row_text(first).plain
        assert ql.line_of(1) == below + 1  # the flag is a second line
        assert "asked: no" in html.unescape(app.export_screenshot()).replace("\xa0", " ")


async def test_the_detail_follows_the_cursor_in_the_same_turn(tmp_path):
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        await pilot.pause(0.1)
        target = app.queue_entries()[7]
        ql.highlighted = 7  # no message round trip: drawn with the cursor's frame
        assert app.current == target.room_id
        assert shown(app)[1].startswith(target.pseudonym + "\n")


async def test_the_queue_scrolls_by_a_third_and_the_highlight_stays_in_view(tmp_path):
    app = filled_app(tmp_path, clients=120)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        view = ql.scrollable_content_region.height
        offsets = []
        for key in ["down"] * 90 + ["up"] * 90:
            await pilot.press(key)
            line = ql.line_of(ql.highlighted)  # type: ignore[arg-type]
            top = ql.scroll_offset.y
            assert top <= line < top + view, (key, line, top)
            offsets.append(top)
        assert ql.highlighted == 0 and offsets[-1] == 0
        scrolls = sum(1 for a, b in zip(offsets, offsets[1:], strict=False) if a != b)
        # One row at a time would be 60 scrolls down and as many back up.
        assert 0 < scrolls <= 2 * (60 // (view // 3) + 1), scrolls


async def test_a_thread_that_fits_after_one_that_fitted_leaves_the_scrollbar_alone(tmp_path):
    app = filled_app(tmp_path)
    long_room = app.queue_entries()[3].room_id
    entry = app.link.entry(long_room)  # type: ignore[union-attr]
    later = int(time.time() * 1000)  # after its first words: its place in the queue stays
    for j in range(60):
        entry.add(Message(f"$long-{j}", "@c:srv", later + j, f"line {j}", "client"))
    async with app.run_test(size=(120, 36)) as pilot:
        await started(app, pilot)
        pane = app.query_one("#conversation", TextPane)
        bar = pane.vertical_scrollbar
        drawn = []
        real = bar.refresh
        bar.refresh = lambda *a, **k: (drawn.append(1), real(*a, **k))[1]  # type: ignore[method-assign]
        for key in ("down", "down"):  # short threads of other lengths
            await pilot.press(key)
            await pilot.pause(0.05)
        assert drawn == []
        await pilot.press("down")  # the long one: the thumb shows where it is
        await pilot.pause(0.05)
        assert app.current == long_room and drawn
        assert bar.window_virtual_size == pane.virtual_size.height > bar.window_size
        drawn.clear()
        await pilot.press("down")  # back to a short one: a whole-bar thumb again
        await pilot.pause(0.05)
        assert drawn and bar.window_virtual_size <= bar.window_size
