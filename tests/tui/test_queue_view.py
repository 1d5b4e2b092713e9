"""The queue draws only what is in view: a changed row repaints its own lines, the
clock repaints the rows in view that read differently, a new order keeps the
highlight on the same client. Over a model filled by hand (no homeserver), with
the real widgets under Textual's pilot."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.tui.test_panes import filled_app, started
from tui.panes import QueueView
from tui.queue import CHECK_NO, Message

MANY = 300


def drawn_lines(ql: QueueView) -> list[int]:
    """Record the lines of the list (not of the view) the widget is asked to draw."""
    lines: list[int] = []
    real = ql.render_line

    def counted(y: int):
        lines.append(ql.scroll_offset.y + y)
        return real(y)

    ql.render_line = counted  # type: ignore[method-assign]
    return lines


def texts_asked(ql: QueueView) -> list[str]:
    """Record the rows whose text the widget asks the app for."""
    rows: list[str] = []
    real = ql.row_text

    def counted(row: str):
        rows.append(row)
        return real(row)

    ql.row_text = counted  # type: ignore[method-assign]
    return rows


def row_lines(ql: QueueView, row: str) -> set[int]:
    index = ql.index_of(row)
    assert index is not None
    return set(range(ql.line_of(index), ql.line_of(index + 1)))


async def test_a_new_order_keeps_the_highlight_on_the_same_client(tmp_path):
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        ql.highlighted = 6
        chosen = ql.highlighted_id
        assert chosen is not None and app.current == chosen
        cursor: list[str] = []
        ql.on_cursor = cursor.append
        # A client further down is flagged: flagged clients come first.
        entry = app.queue_entries()[20]
        entry.flag(CHECK_NO, int(time.time() * 1000))
        app._refresh_queue({entry.room_id})
        await pilot.pause()
        assert ql.row_ids[0] == entry.room_id
        assert ql.highlighted == 7 and ql.highlighted_id == chosen
        assert list(ql.row_ids) == [e.room_id for e in app.queue_entries()]
        assert cursor == [] and app.current == chosen  # nothing else opened
        # The client answers: the reply ends the wait, they go behind the others.
        app.link.entry(chosen).add(  # type: ignore[union-attr]
            Message("$reply", "@me:srv", int(time.time() * 1000), "here", "counselor")
        )
        app._refresh_queue({chosen})
        await pilot.pause()
        assert list(ql.row_ids) == [e.room_id for e in app.queue_entries()]
        assert ql.highlighted_id == chosen and ql.highlighted == ql.row_ids.index(chosen)
        assert ql.highlighted == len(ql.row_ids) - 1 and cursor == []
        top = ql.scroll_offset.y
        assert top <= ql.line_of(ql.highlighted) < top + ql.scrollable_content_region.height
        # The list itself keeps it: any new order, quietly.
        ql.set_rows(list(reversed(ql.row_ids)))
        assert ql.highlighted == 0 and ql.highlighted_id == chosen and cursor == []
        ql.set_rows([r for r in ql.row_ids if r != chosen])
        assert ql.highlighted is None and cursor == []


async def test_a_changed_row_repaints_only_its_own_lines(tmp_path):
    app = filled_app(tmp_path, clients=MANY)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        await pilot.pause()
        room = ql.row_ids[4]
        lines = drawn_lines(ql)
        asked = texts_asked(ql)
        app.link.entry(room).mark_read()  # type: ignore[union-attr]  # the unread count goes
        app._refresh_queue({room})
        await pilot.pause()
        assert lines and set(lines) <= row_lines(ql, room)
        assert asked == [room]
        assert "(" not in ql.render_line(ql.line_of(4) - ql.scroll_offset.y).text
        # A row out of view draws nothing now; it is drawn when it comes into view.
        far = ql.row_ids[-1]
        lines.clear()
        asked.clear()
        app.link.entry(far).mark_read()  # type: ignore[union-attr]
        app._refresh_queue({far})
        await pilot.pause()
        assert lines == [] and asked == []


async def test_the_clock_asks_only_the_rows_in_view_and_repaints_those_that_changed(tmp_path):
    now = [time.time()]
    app = filled_app(tmp_path, clients=MANY)
    app.now = lambda: now[0]
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        await pilot.pause()
        view = ql.scrollable_content_region.height
        lines = drawn_lines(ql)
        asked = texts_asked(ql)
        app._tick()  # within the same minute: every row reads the same
        await pilot.pause()
        assert lines == [] and 0 < len(asked) <= view
        now[0] += 120  # two minutes later every wait reads differently
        asked.clear()
        app._tick()
        await pilot.pause()
        in_view = set(range(ql.scroll_offset.y, ql.scroll_offset.y + view))
        assert set(lines) == in_view
        assert len(set(asked)) <= view and set(asked) <= set(ql.row_ids[: view + 1])
        # The rows below are drawn with the new time when they come into view.
        await pilot.press("end")
        await pilot.pause()
        last = app.link.entry(ql.row_ids[-1])  # type: ignore[union-attr]
        wait = app._queue_line(last, int(now[0] * 1000)).plain
        bottom = ql.line_of(len(ql.row_ids) - 1) - ql.scroll_offset.y
        assert ql.render_line(bottom).text.rstrip() == wait.rstrip()


async def test_leaving_the_view_scrolls_by_a_third(tmp_path):
    app = filled_app(tmp_path, clients=MANY)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        view = ql.scrollable_content_region.height
        while ql.line_of(ql.highlighted + 2) <= view:  # type: ignore[operator]
            await pilot.press("down")
        assert ql.scroll_offset.y == 0
        await pilot.press("down")  # the first row below the view
        index = ql.highlighted
        assert index is not None
        end = ql.line_of(index + 1)
        # The highlight lands a third of the view above the bottom edge.
        assert ql.scroll_offset.y == end - view + view // 3
        await pilot.press("home")
        assert ql.highlighted == 0 and ql.scroll_offset.y == 0
        await pilot.press("end")
        assert ql.highlighted == len(ql.row_ids) - 1
        assert ql.scroll_offset.y == ql.max_scroll_y
        await pilot.press("up")  # still in view: no scroll
        assert ql.scroll_offset.y == ql.max_scroll_y


async def test_page_keys_move_by_a_view(tmp_path):
    app = filled_app(tmp_path, clients=MANY)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        view = ql.scrollable_content_region.height
        await pilot.press("pagedown")
        index = ql.highlighted
        assert index is not None and ql.line_of(index) <= view < ql.line_of(index + 1)
        assert app.current == ql.highlighted_id
        await pilot.press("pageup")
        assert ql.highlighted == 0


async def test_a_click_selects_the_row_under_the_mouse(tmp_path):
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        target = ql.row_ids[3]
        y = ql.line_of(3) - ql.scroll_offset.y
        assert await pilot.click("#queue", offset=(4, y))
        await pilot.pause()
        assert ql.highlighted_id == target and app.current == target
        assert app.focused is app.query_one("#composer")  # selected: ready to reply
        assert app.link.entry(target).unread == 0  # type: ignore[union-attr]
        # Enter selects the highlighted row the same way.
        app.action_focus_queue()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.current == ql.row_ids[4] and app.focused is app.query_one("#composer")


async def test_a_click_below_the_last_row_selects_nothing(tmp_path):
    app = filled_app(tmp_path, clients=3)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        chosen = ql.highlighted_id
        assert await pilot.click("#queue", offset=(4, ql.line_of(3) + 2))
        await pilot.pause()
        assert ql.highlighted_id == chosen and app.focused is ql


def backgrounds(ql: QueueView, index: int) -> set[str]:
    strip = ql.render_line(ql.line_of(index) - ql.scroll_offset.y)
    return {str(seg.style.bgcolor) for seg in strip if seg.style is not None}


async def test_the_row_under_the_mouse_is_marked_until_it_leaves(tmp_path):
    app = filled_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        plain = backgrounds(ql, 5)
        assert await pilot.hover("#queue", offset=(4, ql.line_of(5)))
        await pilot.pause()
        assert backgrounds(ql, 5) != plain and backgrounds(ql, 6) == plain
        assert ql.highlighted == 0  # hovering selects nothing
        await pilot.hover("#status")
        await pilot.pause()
        assert backgrounds(ql, 5) == plain


async def test_a_row_is_as_tall_as_its_text_without_drawing_it(tmp_path):
    app = filled_app(tmp_path, clients=6)
    link = app.link
    assert link is not None
    rooms = sorted(link.entries)
    soon = datetime.now(UTC) + timedelta(days=1)
    link.entries[rooms[0]].flag(CHECK_NO, 1)
    link.entries[rooms[1]].bookings["b1"] = soon
    link.entries[rooms[2]].flag(CHECK_NO, 1)
    link.entries[rooms[2]].bookings["b2"] = soon
    link.entries[rooms[3]].flag(CHECK_NO, 1)
    link.entries[rooms[3]].closed_ms = int(time.time() * 1000) + 1  # a closed case: one line
    async with app.run_test(size=(120, 36)) as pilot:
        ql = await started(app, pilot)
        heights = {r: ql.line_of(i + 1) - ql.line_of(i) for i, r in enumerate(ql.row_ids)}
        assert sorted(heights.values()) == [1, 1, 1, 2, 2, 3]
        for row, height in heights.items():
            assert height == app._row_text(row).plain.count("\n") + 1, row
