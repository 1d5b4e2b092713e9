"""Widgets that redraw only what changed: the queue list and scrolling rich text.

A ``Static`` inside a scroll container asks the screen for a full layout on
every update (its height may change), and the container then lays out again for
its new scroll size. The thread and the client card change on every move in the
queue, so they are drawn here instead: the text is wrapped to the pane's width
once per change and kept as strips, and a change repaints this pane alone. The
vertical scrollbar is always shown, so a new length moves nothing else on the
screen.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.visual import Visual, visualize

#: Rows whose drawn strips are kept (both highlight states of the rows in view,
#: and some to scroll back to).
STRIP_CACHE_ROWS = 512


class TextPane(ScrollView, can_focus=False):
    """Shows one :class:`~rich.text.Text` (literal: it is never parsed as markup)."""

    DEFAULT_CSS = """
    TextPane { overflow-y: scroll; overflow-x: hidden; }
    """

    def __init__(self, *, id: str | None = None, follow_end: bool = False) -> None:
        super().__init__(id=id)
        #: Keep the last line in view (a conversation); else a new text starts at the top.
        self.follow_end = follow_end
        self._text = Text()
        self._strips: list[Strip] = []
        self._wrapped_at = -1

    @property
    def content(self) -> Text:
        """The text the pane shows."""
        return self._text

    def show(self, text: Text, *, top: bool = False) -> bool:
        """Show ``text``; False, and nothing redrawn, when the pane shows it already.

        ``top`` scrolls to the first line (another client's card); otherwise the
        pane keeps its place, or the end with ``follow_end``.
        """
        if text == self._text:
            return False
        before = self._rows()
        self._text = text
        self._wrap()
        if self.follow_end:
            y = self.max_scroll_y
        elif top:
            y = 0
        else:
            y = min(self.scroll_offset.y, self.max_scroll_y)
        if y != self.scroll_offset.y:
            # Scrolling repaints the whole pane; the rows compared below are enough.
            self.set_reactive(TextPane.scroll_y, float(y))
            self.set_reactive(TextPane.scroll_target_y, float(y))
            if self.show_vertical_scrollbar:
                self.vertical_scrollbar.position = y
        self._repaint_changed(before, self._rows())
        return True

    def _rows(self) -> list[Strip]:
        """The strips on screen, top to bottom."""
        y = self.scroll_offset.y
        return self._strips[y : y + self.scrollable_content_region.height]

    def _repaint_changed(self, before: list[Strip], after: list[Strip]) -> None:
        """Repaint only the rows that show something else now (a card differs
        from the last one in a few lines)."""
        width = self.scrollable_content_region.width
        rows = max(len(before), len(after))
        start: int | None = None
        for row in range(rows + 1):
            same = row == rows or (
                row < len(before) and row < len(after) and before[row] == after[row]
            )
            if not same and start is None:
                start = row
            elif same and start is not None:
                self.refresh(Region(0, start, width, row - start))
                start = None

    def _wrap(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or not self.is_mounted:
            self._strips = []
            self._wrapped_at = -1
            return
        console = self.app.console
        style = self.rich_style
        lines = console.render_lines(
            self._text, console.options.update_width(width), style=style, pad=True
        )
        self._strips = [Strip(line, width) for line in lines]
        self._wrapped_at = width
        size = Size(width, len(self._strips))
        if size != self.virtual_size:
            # Only this pane's scroll range changes: no layout of the screen. A text
            # that fits, after one that fitted, leaves the scrollbar as it looks (one
            # thumb over the whole bar): it is not drawn again.
            window = self.scrollable_content_region.height
            fits = size.height <= window and self.virtual_size.height <= window
            same_bar = fits and self.virtual_size.width == width
            self.set_reactive(TextPane.virtual_size, size)
            if not same_bar:
                self._scroll_update(size)

    def on_resize(self, event: events.Resize) -> None:
        if self.scrollable_content_region.width != self._wrapped_at:
            self._wrap()
            if self.follow_end:
                self.scroll_to(y=self.max_scroll_y, animate=False)
            self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self._wrapped_at > 0:
            self._wrap()

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.scrollable_content_region.width
        if index < 0 or index >= len(self._strips):
            return Strip.blank(width, self.rich_style)
        return self._strips[index].crop_extend(0, width, self.rich_style).apply_offsets(0, index)


class QueueView(ScrollView, can_focus=True):
    """The queue, drawn only where it is in view.

    The rows are ids in order; what a row shows comes from ``row_text`` when the
    row is drawn, and is kept as strips per (row, version, width, look: plain,
    highlighted or under the mouse).
    Every row has a fixed height (``row_height``: its text is cut with an
    ellipsis, never wrapped), so a row's first line is a running sum and a line's
    row a bisection. A new order, one changed row or the clock costs what the rows
    in view cost, not what the queue holds.

    When the highlight leaves the rows in view, the list scrolls by a third of its
    height or more (the highlight lands a third from the edge it came in at), not by
    one row: a scroll repaints every row, and a held arrow key would otherwise
    scroll on every step.
    """

    DEFAULT_CSS = """
    QueueView {
        overflow-x: hidden;
        overflow-y: auto;
        color: $foreground;
        background: $surface;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        & > .queue-view--highlighted {
            color: $foreground;
            background: $block-cursor-blurred-background;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .queue-view--hover {
            background: $block-hover-background;
        }
        &:focus {
            background-tint: $foreground 5%;
            & > .queue-view--highlighted {
                color: $block-cursor-foreground;
                background: $block-cursor-background;
                text-style: $block-cursor-text-style;
            }
        }
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "queue-view--row",
        "queue-view--highlighted",
        "queue-view--hover",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down", "cursor_down", "Down", show=False),
        Binding("up", "cursor_up", "Up", show=False),
        Binding("pagedown", "page_down", "Page Down", show=False),
        Binding("pageup", "page_up", "Page Up", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Select", show=False),
    ]

    class Selected(Message):
        """A row was chosen (Enter, or a click)."""

        def __init__(self, queue: QueueView, row_id: str) -> None:
            super().__init__()
            self.queue = queue
            self.row_id = row_id

        @property
        def control(self) -> QueueView:
            return self.queue

    def __init__(
        self,
        *,
        id: str | None = None,
        on_cursor: Callable[[str], None],
        row_text: Callable[[str], Text],
        row_height: Callable[[str], int],
    ) -> None:
        super().__init__(id=id)
        #: Called with the highlighted row's id as the highlight moves, at once:
        #: the app draws what follows the cursor in the cursor's own frame (a
        #: message would arrive after that frame).
        self.on_cursor = on_cursor
        self.row_text = row_text
        self.row_height = row_height
        self._quiet = 0
        self._ids: list[str] = []
        self._index: dict[str, int] | None = None  # id -> position, built when asked
        self._heights: dict[str, int] = {}
        self._starts: list[int] | None = None  # first line of each row, and the end
        self._versions: dict[str, int] = {}
        self._epoch = 0  # the clock's: every row's text may have changed
        self._strips: LRUCache[tuple[str, int, int, int, str], tuple[Text, list[Strip]]]
        self._strips = LRUCache(STRIP_CACHE_ROWS)
        self._highlighted: int | None = None
        self._hover: int | None = None  # the row under the mouse

    # ------------------------------------------------------------------ rows

    @property
    def row_ids(self) -> Sequence[str]:
        """The rows' ids, in order."""
        return self._ids

    def index_of(self, row_id: str) -> int | None:
        """The position of a row; None if the queue does not hold it."""
        if self._index is None:
            self._index = {r: i for i, r in enumerate(self._ids)}
        return self._index.get(row_id)

    def line_of(self, index: int) -> int:
        """The first line of the row at ``index`` (in the whole list, not the view)."""
        return self._line_starts()[index]

    def set_rows(
        self, ids: Sequence[str], changed: Iterable[str] = (), *, all_changed: bool = False
    ) -> None:
        """Show ``ids`` in this order; ``changed`` rows (every row with
        ``all_changed``) are drawn anew, the others keep what they showed. The
        highlight stays on the same row, quietly; it is cleared if the row is gone."""
        keep = self.highlighted_id
        self._ids = list(ids)
        self._index = None
        self._starts = None
        if all_changed:
            self._epoch += 1
            self._heights.clear()
        for row in changed:
            self._forget(row)
        self._hover = None
        self._highlighted = None if keep is None else self.index_of(keep)
        self._resized()
        self.scroll_to_highlight()
        self.refresh()

    def rows_changed(self, ids: Iterable[str]) -> None:
        """These rows show something else now; the order is the same. A row that
        keeps its height repaints its own lines if it is in view; a taller or
        shorter one moves the rows below it."""
        in_view = {self._ids[i]: i for i in self._in_view()}
        moved = False
        for row in ids:
            height = self._heights.get(row)
            self._forget(row)
            if height is not None and self._height(row) != height:
                moved = True
            elif row in in_view:
                self._repaint(in_view[row])
        if moved:
            self._starts = None
            self._resized()
            self.refresh()

    def redraw_in_view(self) -> None:
        """The clock moved: every row may read differently. The rows in view are
        asked for their text again and only those that changed are repainted;
        the others are drawn anew when they come into view."""
        width = self._width()
        shown = [
            (i, self._strips.get(self._key(self._ids[i], width, self._look(i))))
            for i in self._in_view()
        ]
        self._epoch += 1
        for index, cached in shown:
            row = self._ids[index]
            if cached is not None and cached[0] == self.row_text(row):
                self._strips.set(self._key(row, width, self._look(index)), cached)
            else:
                self._repaint(index)

    # ------------------------------------------------------------------ highlight

    @property
    def highlighted(self) -> int | None:
        """The highlighted row's position, or None."""
        return self._highlighted

    @highlighted.setter
    def highlighted(self, index: int | None) -> None:
        if index is not None:
            if not self._ids:
                index = None
            else:
                index = max(0, min(index, len(self._ids) - 1))
        old, self._highlighted = self._highlighted, index
        if old == index:
            return
        self._repaint(old)
        self._repaint(index)
        if index is None:
            return
        self.scroll_to_highlight()
        if not self._quiet:
            self.on_cursor(self._ids[index])

    @property
    def highlighted_id(self) -> str | None:
        index = self._highlighted
        return None if index is None else self._ids[index]

    @contextmanager
    def quietly(self) -> Iterator[None]:
        """Move the highlight without telling ``on_cursor`` (a rebuilt list
        put back on the row that was already shown)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def scroll_to_highlight(self) -> None:
        index = self._highlighted
        if index is None or not self.is_mounted:
            return
        starts = self._line_starts()
        y, height = starts[index], starts[index + 1] - starts[index]
        view = self.scrollable_content_region.height
        start = self.scroll_offset.y
        if start <= y and y + height <= start + view:
            return
        if y + height > start + view:  # came in at the bottom
            target = y + height - view + view // 3
        else:
            target = y - view // 3
        target = max(0, min(target, y))  # the highlight stays in view
        self.scroll_to(y=target, animate=False, force=True, immediate=True)

    def action_cursor_down(self) -> None:
        if self._ids:
            current = self._highlighted
            self.highlighted = 0 if current is None else (current + 1) % len(self._ids)

    def action_cursor_up(self) -> None:
        if self._ids:
            current = self._highlighted
            last = len(self._ids) - 1
            self.highlighted = last if current is None else (current - 1) % len(self._ids)

    def action_first(self) -> None:
        self.highlighted = 0

    def action_last(self) -> None:
        self.highlighted = len(self._ids) - 1

    def action_page_down(self) -> None:
        self._move_page(1)

    def action_page_up(self) -> None:
        self._move_page(-1)

    def _move_page(self, direction: int) -> None:
        if not self._ids:
            return
        if self._highlighted is None:
            self.highlighted = 0 if direction < 0 else len(self._ids) - 1
            return
        starts = self._line_starts()
        y = starts[self._highlighted] + direction * self.scrollable_content_region.height
        self.highlighted = self._row_at(max(0, min(y, starts[-1] - 1)))

    def action_select(self) -> None:
        row = self.highlighted_id
        if row is not None:
            self.post_message(self.Selected(self, row))

    def on_click(self, event: events.Click) -> None:
        index = self._row_under(event)
        if index is not None:
            self.highlighted = index
            self.action_select()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        self._hover_over(self._row_under(event))

    def on_leave(self, event: events.Leave) -> None:
        self._hover_over(None)

    def _hover_over(self, index: int | None) -> None:
        if index != self._hover:
            old, self._hover = self._hover, index
            self._repaint(old)
            self._repaint(index)

    def _row_under(self, event: events.MouseEvent) -> int | None:
        offset = event.get_content_offset(self)
        if offset is None or not self._ids:
            return None
        line = self.scroll_offset.y + offset.y
        return self._row_at(line) if 0 <= line < self._line_starts()[-1] else None

    # ------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        line = self.scroll_offset.y + y
        width = self._width()
        starts = self._line_starts()
        if not 0 <= line < starts[-1]:
            return Strip.blank(width, self.get_visual_style("queue-view--row").rich_style)
        index = self._row_at(line)
        strips = self._render_row(self._ids[index], width, self._look(index))[1]
        return strips[line - starts[index]]

    def _look(self, index: int) -> str:
        """The component class a row is drawn with ("": an ordinary row)."""
        if index == self._highlighted:
            return "queue-view--highlighted"
        return "queue-view--hover" if index == self._hover else ""

    def _render_row(self, row: str, width: int, look: str) -> tuple[Text, list[Strip]]:
        key = self._key(row, width, look)
        cached = self._strips.get(key)
        if cached is None:
            text = self.row_text(row)
            classes = ("queue-view--row", look) if look else ("queue-view--row",)
            style = self.get_visual_style(*classes)
            visual = visualize(self, text)
            height = self._height(row)
            strips = Visual.to_strips(self, visual, width, height, style, pad=True)
            strips = [s.extend_cell_length(width, style.rich_style) for s in strips[:height]]
            cached = (text, strips)
            self._strips.set(key, cached)
        return cached

    def _key(self, row: str, width: int, look: str) -> tuple[str, int, int, int, str]:
        return (row, self._versions.get(row, 0), self._epoch, width, look)

    def _forget(self, row: str) -> None:
        self._versions[row] = self._versions.get(row, 0) + 1
        self._heights.pop(row, None)

    def _height(self, row: str) -> int:
        height = self._heights.get(row)
        if height is None:
            height = self._heights[row] = max(1, self.row_height(row))
        return height

    def _line_starts(self) -> list[int]:
        if self._starts is None:
            heights = self._heights
            missing = set(self._ids).difference(heights)
            for row in missing:
                self._height(row)
            self._starts = list(accumulate(map(heights.__getitem__, self._ids), initial=0))
        return self._starts

    def _row_at(self, line: int) -> int:
        return bisect_right(self._line_starts(), line) - 1

    def _in_view(self) -> range:
        if not self._ids:
            return range(0)
        top = self.scroll_offset.y
        bottom = top + self.scrollable_content_region.height - 1
        last = self._line_starts()[-1] - 1
        if top > last:
            return range(0)
        return range(self._row_at(top), self._row_at(min(bottom, last)) + 1)

    def _repaint(self, index: int | None) -> None:
        if index is None or not self.is_mounted or index >= len(self._ids):
            return
        starts = self._line_starts()
        self.refresh_lines(starts[index], starts[index + 1] - starts[index])

    def _width(self) -> int:
        return self.scrollable_content_region.width

    def _resized(self) -> None:
        """The list's length in lines may have changed: only this widget's scroll
        range follows (no layout of the screen)."""
        if not self.is_mounted:
            return
        size = Size(self._width(), self._line_starts()[-1])
        if size != self.virtual_size:
            self.set_reactive(QueueView.virtual_size, size)
            self._scroll_update(size)

    def on_resize(self, event: events.Resize) -> None:
        self._resized()
        self.scroll_to_highlight()

    def on_mount(self) -> None:
        self._resized()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self.refresh()
