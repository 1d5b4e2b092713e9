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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

from rich.text import Text
from textual import events
from textual.css.styles import RulesMap
from textual.geometry import Region, Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import OptionList


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


class QueueList(OptionList):
    """The queue. Moving the highlight repaints the two rows it leaves and
    enters; the list repaints all its rows only when it scrolls or changes.

    When the highlight leaves the rows in view, the list scrolls by a third of its
    height or more (the highlight lands a third from the edge it came in at), not by
    one row: a scroll repaints every row, and a held arrow key would otherwise
    scroll on every step.
    """

    highlighted: reactive[int | None] = reactive(None, repaint=False)

    def __init__(self, *, id: str | None = None, on_cursor: Callable[[str], None]) -> None:
        super().__init__(id=id)
        #: Called with the highlighted row's id as the highlight moves, at once:
        #: the app draws what follows the cursor in the cursor's own frame (a
        #: highlight message would arrive after that frame).
        self.on_cursor = on_cursor
        self._quiet = 0

    @contextmanager
    def quietly(self) -> Iterator[None]:
        """Move the highlight without telling ``on_cursor`` (a rebuilt list
        put back on the row that was already shown)."""
        self._quiet += 1
        try:
            with self.prevent(OptionList.OptionHighlighted):
                yield
        finally:
            self._quiet -= 1

    def _watch_highlighted(self, old: int | None, new: int | None) -> None:
        for index in (old, new):
            self._repaint_option(index)
        if new is not None and not self._quiet and 0 <= new < self.option_count:
            option_id = self.get_option_at_index(new).id
            if option_id is not None:
                self.on_cursor(option_id)

    def scroll_to_highlight(self, top: bool = False) -> None:
        highlighted = self.highlighted
        if top or highlighted is None or not self.is_mounted:
            super().scroll_to_highlight(top)
            return
        self._update_lines()
        y = self._index_to_line.get(highlighted)
        if y is None:
            return
        height = self._heights.get(highlighted, 1)
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

    def replace_row(self, option_id: str, prompt: Text) -> None:
        """Replace one row's text. ``replace_option_prompt`` forgets what the list
        measured of every row (a long queue is measured and drawn again); a row
        that keeps its height only needs its own lines drawn again."""
        index = self.get_option_index(option_id)
        option = self.get_option_at_index(index)
        before = self._heights.get(index)
        option._set_prompt(prompt)
        cache = self._option_render_cache
        for key in [k for k in cache.keys() if k[0] is option]:
            cache.discard(key)
        padding = self.get_component_styles("option-list--option").padding
        width = self.scrollable_content_region.width - self._get_left_gutter_width()
        rules = cast(RulesMap, self.styles)
        height = self._get_visual(option).get_height(rules, width - padding.width)
        if height != before:
            self._clear_caches()
        else:
            self._repaint_option(index)

    def _repaint_option(self, index: int | None) -> None:
        if index is None or not self.is_mounted:
            return
        line = self._index_to_line.get(index)
        if line is not None:
            self.refresh_lines(line, self._heights.get(index, 1))
