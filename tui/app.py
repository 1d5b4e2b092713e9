"""``e2ecounsel tui``: the counselor's queue, conversation and client card.

Layout: the queue on the left (open crisis pages as alerts on top, then clients by
risk and longest wait), the thread and a composer in the centre, the client card
with the brief and private notes on the right; a status line on top, the main keys
in the footer. Pages, flags (a crisis check answered "no") and new client messages
ring the terminal bell and show a toast. While a client is in an active crisis (an
open page or risk high) every message of theirs is marked urgent in the thread and
rings even when the counselor is in that thread: the bot does not page again for
each message.

Commands never go into a client's room: the actions (close, risk, refer, offer
slots, take a page) and any ``!`` line typed in the composer go to the case channel,
naming the case by its number (:mod:`tui.commands`).

Everything a client or the case channel wrote is untrusted: it is cleaned of
terminal control sequences when it enters the model (:mod:`tui.link`) and shown
through :class:`rich.text.Text`, never parsed as markup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Footer, Static, TextArea

from e2ecounsel.domain.cadence import format_wait
from e2ecounsel.errors import E2ECounselError
from e2ecounsel.matrix import ConnectionState, MatrixSession
from tui.commands import (
    CLOSE_WORDS,
    CommandRefused,
    for_case,
    is_command,
    needs_case,
    route,
)
from tui.connect import Connected, Offline, SignInFailed, Unlocked, go_online, unlock_store
from tui.link import MatrixLink, NoCaseChannel
from tui.messages import ConnectionChanged, Problem, QueueChanged, SendFinished, TrustChecked
from tui.notes import NoteBook
from tui.panes import QueueView, TextPane
from tui.queue import (
    CHECK_NO,
    Alert,
    Brief,
    ClientEntry,
    Page,
    QueueOrder,
    ReplyRound,
    format_when,
    open_pages,
    order,
    round_number,
)
from tui.screens import (
    ChoiceScreen,
    ConfirmScreen,
    FormScreen,
    HelpScreen,
    NoticeScreen,
    SignInScreen,
    SnippetScreen,
)
from tui.settings import TuiSettings
from tui.snapshot import Prepared, QueueSnapshot
from tui.snippets import Snippet, load_snippets

logger = logging.getLogger(__name__)

RISK_STYLE = {"high": "bold white on red", "medium": "black on yellow", "low": "dim"}
URGENT_STYLE = "bold red"
URGENT_MARK = "‼ URGENT"
FLAG_STYLE = "bold yellow"
#: How the queue row shows a flag (by reason; any other reason is shown as it is).
FLAG_ROW = {CHECK_NO: "⚑ asked: no"}
STATE_TEXT = {
    ConnectionState.STARTING: ("… connecting", "yellow"),
    ConnectionState.ONLINE: ("● online", "green"),
    ConnectionState.RECONNECTING: ("⟳ reconnecting…", "bold yellow"),
    ConnectionState.STOPPED: ("■ offline: sign in again", "bold red"),
}
OUTCOMES = dict(
    zip(
        CLOSE_WORDS,
        ("Resolved", "Move to face-to-face", "Continue online", "Refer to another professional"),
        strict=True,
    )
)
PAGE_PREFIX = "page:"
TRUST_SETTLE_S = 0.3
TRUST_RECHECK_S = 60.0
#: The thread and card are drawn at most once per frame (a held arrow key).
DETAIL_FRAME_S = 1 / 60
#: How long the model may change before the snapshot is written (a burst of
#: history or messages is written once).
SNAPSHOT_DELAY_S = 2.0
CATCHING_UP = "catching up: the queue as saved on this machine"
LOADING = "loading the queue from the homeserver…"
OFFLINE_NOTE = "offline: the homeserver cannot be reached; trying again in {seconds} s"
#: The first wait before signing in again behind the snapshot; it doubles up to
#: the settings' ``max_backoff_s``.
OFFLINE_FIRST_RETRY_S = 5.0
NOT_YET_SENT = (
    "Still catching up with the homeserver: nothing was sent, your text stays in the composer."
)
REPLY_TITLE = "Reply · ctrl+s sends · !command for this case"
CLOSED_TITLE = "Closed: read-only (nothing is sent)"

_MAIN_ACTIONS = {
    "round",
    "next",
    "snippets",
    "close_case",
    "risk",
    "refer",
    "export_keys",
    "import_keys",
    "send",
    "focus_notes",
    "take_page",
}

QUEUE_KEYS = [
    ("↑ / ↓", "move through the queue (the thread and card follow)"),
    ("enter", "reply to the highlighted client (focus the composer)"),
    ("tab", "move between queue, composer and notes"),
    ("t", "take the highlighted crisis page (in the queue)"),
    ("!…", "a line starting with ! in the composer is a command for this client's case"),
]


class CounselorApp(App[None]):
    """The counselor's app. Build it with :func:`make_app`."""

    TITLE = "e2ecounsel"
    CSS = """
    #status { dock: top; height: 1; background: $panel; padding: 0 1; }
    #queue-pane { width: 38; border-right: solid $primary; }
    #queue { height: 1fr; border: none; }
    #thread-pane { width: 1fr; }
    #thread-title { height: 1; padding: 0 1; background: $boost; }
    #conversation { height: 1fr; padding: 0 1; }
    #page { height: 1fr; padding: 0 1; display: none; }
    #composer { height: 7; border: round $primary; }
    #card-pane { width: 42; border-left: solid $primary; }
    #card { height: 1fr; padding: 0 1; }
    #notes-title { height: 1; padding: 0 1; background: $boost; }
    #notes { height: 10; border: round $secondary; }
    .pane-title { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    """
    # F-keys are priority bindings: the composer and notes (TextArea) use F6/F7
    # for selection otherwise. Actions check they run on the main screen.
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+s", "send", "Send/save", priority=True),
        Binding("f2", "round", "Round", priority=True),
        Binding("f3", "next", "Next", priority=True),
        Binding("f4", "snippets", "Snippets", priority=True),
        Binding("f5", "close_case", "Close", priority=True),
        Binding("f6", "risk", "Risk", priority=True),
        Binding("f7", "refer", "Refer", priority=True),
        Binding("f10", "offer_slots", "Offer slots", priority=True),
        Binding("f8", "export_keys", "Export keys", show=False, priority=True),
        Binding("f9", "import_keys", "Import keys", show=False, priority=True),
        Binding("t", "take_page", "Take page"),
        Binding("ctrl+n", "focus_notes", "Notes", show=False),
        Binding("escape", "focus_queue", "Queue", show=False),
    ]

    def __init__(
        self,
        settings: TuiSettings,
        session: MatrixSession | None = None,
        notes: NoteBook | None = None,
        *,
        now: Callable[[], float] = time.time,
        snapshot: QueueSnapshot | None = None,
        online: Callable[[], Awaitable[Connected]] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.session = session
        self.notes = notes
        self.snapshot = snapshot
        self.now = now
        self._online_call = online
        #: The link is live (signed in, first sync done): sends and trust checks may run.
        self.online = False
        self._snapshot_timer: Timer | None = None
        self._restored = False  # the queue shown came from the snapshot
        self.link: MatrixLink | None = None
        self.current: str | None = None
        self.current_page: str | None = None
        self.round: ReplyRound | None = None
        self.status_note = ""
        #: Sign-ins behind the snapshot that found the homeserver unreachable.
        self.offline_retries = 0
        self.queue_ready = False
        self.history_loaded = False
        self._owns_session = session is None
        self._dirty: set[str] = set()
        self._refresh_posted = False
        self._notes_room: str | None = None
        self._snippets: list[Snippet] | None = None
        self._first_sync_ok = False
        self._order = QueueOrder()  # the clients, in queue order
        self._page_rows: list[str] = []  # the open pages' rows, above the clients
        self._queue_title = ""
        self._sending: dict[str, list[str]] = {}  # room -> messages on their way
        self._trust_timer: Timer | None = None
        self._trust_checked_at: dict[str, float] = {}
        self._detail_timer: Timer | None = None
        self._detail_drawn_at = 0.0
        self._title = Text()
        self._card_of: str | None = None  # whose card is shown (to scroll a new one to the top)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Main-screen actions do nothing while a dialog or the sign-in is open."""
        if action in _MAIN_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="main"):
            with Vertical(id="queue-pane"):
                yield Static("Queue", classes="pane-title", id="queue-title")
                yield QueueView(
                    id="queue",
                    on_cursor=self._cursor_moved,
                    row_text=self._row_text,
                    row_height=self._row_height,
                )
            with Vertical(id="thread-pane"):
                yield Static("", id="thread-title")
                yield TextPane(id="conversation", follow_end=True)
                with VerticalScroll(id="page"):  # a crisis page, in place of the thread
                    yield Static("", id="thread-body")
                yield TextArea(id="composer", soft_wrap=True, show_line_numbers=False)
            with Vertical(id="card-pane"):
                yield Static("Client", classes="pane-title")
                yield TextPane(id="card")
                yield Static("Private notes (never sent)", id="notes-title")
                yield TextArea(id="notes", soft_wrap=True, show_line_numbers=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#composer", TextArea).border_title = REPLY_TITLE
        self._render_status()
        self.set_interval(30, self._tick)
        if self.session is not None and self.notes is not None:
            self._start_link()
        else:
            self.push_screen(SignInScreen(self.settings))

    async def on_unmount(self) -> None:
        self._save_notes()
        self._save_snapshot()
        if self.session is not None and self._state_listener in self.session.state_listeners:
            self.session.state_listeners.remove(self._state_listener)
        if self._owns_session and self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------------ sign-in

    @work(exclusive=True, exit_on_error=False, group="connect")
    async def sign_in(
        self,
        homeserver: str,
        user_id: str,
        passphrase: str,
        password: str | None,
        recovery_key: str | None,
    ) -> None:
        """Run by the sign-in screen; reports back with a message either way."""
        screen = self.screen
        try:
            opened = await unlock_store(
                self.settings, homeserver=homeserver, user_id=user_id, passphrase=passphrase
            )
            if password is None and opened.snapshot.loaded is not None:
                # A saved device and the queue as it was: shown now, signed in behind it.
                self._opened(
                    opened.session, opened.notes, opened.snapshot, signing_in(self.settings, opened)
                )
                return
            done = await go_online(
                self.settings, opened, password=password, recovery_key=recovery_key
            )
        except Offline as exc:
            await opened.session.close()
            screen.post_message(Problem(str(exc)))
            return
        except SignInFailed as exc:
            screen.post_message(Problem(str(exc)))
            return
        except E2ECounselError as exc:
            logger.warning("sign-in failed: %s", type(exc).__name__)
            screen.post_message(Problem("Could not sign in. Check the details and try again."))
            return
        self._connected(done)

    def _connected(self, done: Connected) -> None:
        self._opened(done.session, done.notes, done.snapshot, None)
        self._signed_in(done)

    def _opened(
        self,
        session: MatrixSession,
        notes: NoteBook,
        snapshot: QueueSnapshot | None,
        online: Callable[[], Awaitable[Connected]] | None,
    ) -> None:
        self.session = session
        self.notes = notes
        self.snapshot = snapshot
        self._online_call = online
        self._owns_session = True
        if isinstance(self.screen, SignInScreen):
            self.pop_screen()
        self._start_link()

    def _signed_in(self, done: Connected) -> None:
        """What the sign-in had to say: a new recovery key (once), a warning."""
        if done.recovery_key:
            self.push_screen(
                NoticeScreen(
                    "Your recovery key",
                    "Write this down and keep it safe. With it you can verify a new machine "
                    "or read your history there:\n\n" + done.recovery_key,
                )
            )
        if done.warning:
            self.status_note = done.warning
            self._render_status()

    def _sign_in_again(self, problem: str) -> None:
        """Signing in behind a snapshot failed: the sign-in screen comes back."""
        if self.session is not None and self._state_listener in self.session.state_listeners:
            self.session.state_listeners.remove(self._state_listener)
        self.session = None
        self.notify_status(problem)
        screen = SignInScreen(self.settings)
        self.push_screen(screen)
        screen.post_message(Problem(problem))

    # ------------------------------------------------------------------ Matrix

    def _start_link(self) -> None:
        assert self.session is not None
        self.current = None
        self.current_page = None
        self._order = QueueOrder()
        self._page_rows = []
        self.queue_ready = self.history_loaded = self.online = self._first_sync_ok = False
        self.link = MatrixLink(
            self.session,
            bot_id=self.settings.bot_for(self.session.user_id),
            trust_file=self.session.store_dir / "identities.json",
            on_change=self._model_changed,
        )
        self.session.state_listeners.append(self._state_listener)
        self._restored = self.snapshot is not None and self.snapshot.loaded is not None
        if self.snapshot is not None and self.snapshot.loaded is not None:
            self.link.restore(self.snapshot.loaded)
            self.queue_ready = True
            self._refresh_queue()
        self._render_status()
        self._run_link()

    async def _online_behind_snapshot(
        self, online: Callable[[], Awaitable[Connected]]
    ) -> Connected:
        """Sign in while the saved queue is shown. A homeserver that does not answer
        keeps the queue on screen and is tried again, sooner first, until it answers."""
        delay = min(OFFLINE_FIRST_RETRY_S, self.settings.max_backoff_s)
        while True:
            try:
                return await online()
            except Offline:
                self.offline_retries += 1
                note = OFFLINE_NOTE.format(seconds=max(1, round(delay)))
                self.notify_status(note)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.max_backoff_s)
                if self.status_note == note:
                    self.notify_status("")

    @work(exclusive=True, exit_on_error=False, group="link")
    async def _run_link(self) -> None:
        assert self.session is not None and self.link is not None
        if self._online_call is not None:
            try:
                done = await self._online_behind_snapshot(self._online_call)
            except SignInFailed as exc:
                self._sign_in_again(str(exc))
                return
            except E2ECounselError as exc:
                logger.warning("sign-in failed: %s", type(exc).__name__)
                self._sign_in_again("Could not sign in. Check the details and try again.")
                return
            self._online_call = None
            self._signed_in(done)
        self.link.attach()
        try:
            await self.session.sync_once(0)
            # The loop reports ONLINE only after its first long poll returns,
            # which in a quiet account takes up to 30 s; this sync proves it now.
            self._first_sync_ok = True
        except Exception as exc:  # the sync loop below keeps retrying
            logger.warning("first sync failed: %s", type(exc).__name__)
        # Invitations the bot sent while the app was closed (new clients, the
        # case channel itself): joined now, then one more sync brings them in.
        try:
            if await self.link.join_invitations():
                await self.session.sync_once(0)
        except Exception as exc:  # the live invite handler joins the rest
            logger.warning("joining pending invitations failed: %s", type(exc).__name__)
        self.link.scan_rooms()
        if self._first_sync_ok:
            dropped = self.link.drop_unconfirmed()
            if dropped:
                self._model_changed(dropped)
        self.session.start()
        self.online = True
        self.queue_ready = True
        self._refresh_queue()
        self._render_status()
        await self.link.load_history()
        self.history_loaded = True
        self._refresh_queue()
        self._take_alerts()
        self._save_snapshot_later()
        self._render_status()

    @work(exit_on_error=False, group="history")
    async def _load_history(self, rooms: frozenset[str]) -> None:
        """History of rooms joined while running (a new client, a new case channel)."""
        assert self.link is not None
        await self.link.load_history(rooms)

    def _state_listener(self, state: ConnectionState) -> None:
        self.post_message(ConnectionChanged(state))

    def _model_changed(self, rooms: set[str]) -> None:
        self._dirty |= rooms
        if not self._refresh_posted:
            self._refresh_posted = True
            self.post_message(QueueChanged(frozenset(rooms)))

    def on_queue_changed(self, message: QueueChanged) -> None:
        self._refresh_posted = False
        dirty, self._dirty = self._dirty, set()
        if self.link is not None and self.link.forgotten:
            self.link.forgotten.clear()
            self._save_snapshot()  # a client no longer ours leaves the disk at once
        else:
            self._snapshot_soon()
        if self.link is not None and self.link.needs_history and self.history_loaded:
            self._load_history(frozenset(self.link.needs_history))
            self.link.needs_history.clear()
        self._take_alerts()
        self._refresh_queue(dirty)
        if self.current is not None and self.current in dirty:
            self._render_thread()
            self._render_card()
        elif self.current_page is not None and PAGE_PREFIX + self.current_page in dirty:
            self._render_page()

    # ------------------------------------------------------------------ snapshot

    def _snapshot_soon(self) -> None:
        if self._snapshot_timer is None and self.snapshot is not None:
            self._snapshot_timer = self.set_timer(SNAPSHOT_DELAY_S, self._save_snapshot_later)

    def _save_snapshot_later(self) -> None:
        """The state now, written by a thread (sealing and fsync take tens of ms
        with hundreds of clients: not on the loop that draws the screen)."""
        if self._snapshot_timer is not None:
            self._snapshot_timer.stop()
            self._snapshot_timer = None
        if self.snapshot is not None and self.link is not None and self.queue_ready:
            self._write_snapshot(self.snapshot, self.snapshot.prepare(self.link.remember()))

    @work(group="snapshot", exit_on_error=False)
    async def _write_snapshot(self, snapshot: QueueSnapshot, prepared: Prepared) -> None:
        try:
            await asyncio.to_thread(snapshot.write_prepared, prepared)
        except OSError:
            logger.warning("the queue snapshot could not be written")

    def _save_snapshot(self) -> None:
        """Write the queue's sealed snapshot now, before anything else runs (a client
        no longer ours, quitting; see :mod:`tui.snapshot`)."""
        if self._snapshot_timer is not None:
            self._snapshot_timer.stop()
            self._snapshot_timer = None
        if self.snapshot is None or self.link is None or not self.queue_ready:
            return
        try:
            self.snapshot.write(self.link.remember())
        except OSError:
            logger.warning("the queue snapshot could not be written")

    # ------------------------------------------------------------------ alerts

    def _take_alerts(self) -> None:
        """Ring and show a toast for what the counselor must notice now (once per
        batch of changes, however many arrived together)."""
        if self.link is None or not self.history_loaded:
            return
        ring = False
        messages: list[str] = []
        urgent: list[str] = []
        for alert in self.link.take_alerts():
            if alert.kind == "released":
                self._released(alert)
            elif alert.kind == "page":
                ring = self._page_toast(alert.text) or ring
            elif not alert.live:
                continue
            elif alert.kind == "message" and alert.urgent:
                # An active crisis: rung and shown every time, even to a counselor
                # in the thread (the bot does not page again for each message).
                ring = True
                urgent.append(self.link.entry(alert.room_id).pseudonym)
            elif alert.kind == "message":
                if alert.room_id == self.current and self._replying():
                    continue  # they are looking at it
                ring = True
                messages.append(self.link.entry(alert.room_id).pseudonym)
            elif alert.kind == "flag":
                ring = True
                self.notify(alert.text, title="Flag", severity="warning", timeout=20, markup=False)
            elif alert.kind == "take":
                mine = self.session is not None and alert.text == self.session.user_id
                self.notify(
                    "You took the page: the service puts you in a room with the client."
                    if mine
                    else f"A page was taken by {alert.text}.",
                    title="Page",
                    markup=False,
                )
            elif alert.kind == "closed":
                who = self.link.entry(alert.room_id).pseudonym
                self.notify(
                    f"{who}: the case is closed ({alert.text}); the thread is read-only.",
                    markup=False,
                )
            elif alert.kind == "said":
                self.notify(
                    alert.text,
                    title="Service",
                    severity="information" if alert.ok else "warning",
                    timeout=12,
                    markup=False,
                )
        if urgent:
            names = ", ".join(dict.fromkeys(urgent))
            self.notify(
                f"Urgent: new message from {names} (active crisis)",
                title="Urgent",
                severity="error",
                timeout=20,
                markup=False,
            )
        if messages:
            names = ", ".join(dict.fromkeys(messages))
            self.notify(f"New message from {names}", title="Queue", markup=False)
        if ring:
            self.bell()

    def _replying(self) -> bool:
        focused = self.focused
        return focused is not None and focused.id == "composer"

    def _page_toast(self, page_id: str) -> bool:
        """Toast an open page; False if it was taken meanwhile (history is read in
        parallel, a page's take may come after the page)."""
        assert self.link is not None
        page = self.link.pages.get(page_id)
        if page is None or page.taken_by:
            return False
        why = f" ({page.reason})" if page.reason else ""
        self.notify(
            f"Crisis page {page_id}{why}. Highlight it at the top of the queue and press t "
            "to take it.",
            title="Crisis page",
            severity="error",
            timeout=30,
            markup=False,
        )
        return True

    def _released(self, alert: Alert) -> None:
        """The client is no longer ours: out of the queue, their notes deleted."""
        room = alert.room_id
        if self._notes_room == room:
            self._notes_room = None  # never save the open notes back
            self.query_one("#notes", TextArea).load_text("")
        if self.notes is not None:
            try:
                self.notes.set(room, "")
            except OSError:
                logger.warning("notes of a released client could not be deleted")
                self.notify_status("Notes of a former client could not be deleted (disk?).")
        self._sending.pop(room, None)
        if self.current == room:
            self.current = None
            self._render_thread()
            self._render_card()
        if alert.live:
            self.notify("A client is no longer in your care; their notes were deleted.")

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        if self.is_running:
            self._render_status()

    def on_problem(self, message: Problem) -> None:
        self.status_note = message.text
        self._render_status()

    def _tick(self) -> None:
        self._refresh_queue(everything=True)
        self._render_status()

    # ------------------------------------------------------------------ queue

    def queue_entries(self) -> list[ClientEntry]:
        """The queue as shown, in order (tests and the round read it)."""
        if self.link is None:
            return []
        return order(self.link.active_entries())

    def queue_pages(self) -> list[Page]:
        """The open crisis pages shown above the queue, newest first."""
        if self.link is None:
            return []
        return open_pages(self.link.pages.values())

    def _queue_line(self, e: ClientEntry, now_ms: int) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        if e.closed:
            line.append(" DONE ", style="dim reverse")
            line.append(" ")
            line.append(e.pseudonym[:18], style="dim")
            line.append(f"  {e.outcome.replace('_', '-')}", style="dim")
            return line
        line.append(f" {e.risk.upper()[:4]:<4} ", style=RISK_STYLE.get(e.risk, ""))
        line.append(" ")
        if e.urgent:
            line.append("‼ ", style=URGENT_STYLE)
        line.append(e.pseudonym[:18], style="bold" if e.unread else "")
        since = e.awaiting_since_ms
        if since is not None:
            line.append(f"  {format_wait(now_ms - since)}", style="yellow")
        if e.unread:
            line.append(f"  ({e.unread})", style="bold cyan")
        if e.flags:
            marks = " ".join(FLAG_ROW.get(r, f"⚑ {r}") for r in e.flags)
            line.append(f"\n       {marks}", style=FLAG_STYLE)
        if e.next_booking:
            line.append(f"\n       next: {e.next_booking}", style="dim")
        return line

    def _page_line(self, p: Page, now_ms: int) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" PAGE ", style="bold white on red")
        line.append(f" {p.page_id[:8]}", style="bold red")
        if p.reason:
            line.append(f" {p.reason[:12]}", style="red")
        line.append(f"  {format_wait(now_ms - p.ts_ms)}", style="yellow")
        return line

    def _row_text(self, row: str) -> Text:
        """What a row of the queue shows now (asked when the row is drawn)."""
        assert self.link is not None
        now_ms = int(self.now() * 1000)
        if row.startswith(PAGE_PREFIX):
            page = self.link.pages.get(row.removeprefix(PAGE_PREFIX))
            return Text() if page is None else self._page_line(page, now_ms)
        entry = self.link.entries.get(row)
        return Text() if entry is None else self._queue_line(entry, now_ms)

    def _row_height(self, row: str) -> int:
        """The lines of :meth:`_queue_line` (a page's row has one), without drawing it."""
        assert self.link is not None
        e = self.link.entries.get(row)
        if e is None or e.closed:  # a page, or a client no longer in the model
            return 1
        return 1 + bool(e.flags) + bool(e.bookings)

    def _refresh_queue(self, dirty: set[str] | None = None, *, everything: bool = False) -> None:
        """Show the model in the queue: ``dirty`` rooms or pages changed (None:
        anything may have, the order is taken from scratch), ``everything`` for
        the clock. A changed client only has its own place looked up again, and
        the queue draws only the rows in view, so this costs the same for 30
        clients or 1000."""
        if self.link is None:
            return
        ql = self.query_one("#queue", QueueView)
        link = self.link
        pages = self.queue_pages()
        page_rows = [PAGE_PREFIX + p.page_id for p in pages]
        order = self._order
        anew = dirty is None and not everything
        moved = anew
        if anew:
            order.rebuild(link.active_entries())
        elif dirty:
            for room in dirty:
                if not room.startswith(PAGE_PREFIX):
                    active = room in link.entries and link.is_client(room)
                    moved |= order.update(room, link.entries[room] if active else None)
        if moved or page_rows != self._page_rows:
            self._page_rows = page_rows
            ql.set_rows([*page_rows, *order.ids], dirty or (), all_changed=anew)
            keep = PAGE_PREFIX + self.current_page if self.current_page else self.current
            moved_away = keep is not None and ql.highlighted_id != keep
            index = ql.index_of(keep) if moved_away and keep is not None else None
            if index is not None:  # the highlight was elsewhere: back on what is shown
                with ql.quietly():
                    ql.highlighted = index
            if (keep is None or ql.highlighted_id != keep) and len(order) and self.current is None:
                ql.highlighted = len(pages)  # opens the first client
        elif dirty:
            ql.rows_changed(dirty)
        if everything:
            ql.redraw_in_view()
        title = f"Queue · {len(order)} clients · {order.awaiting} awaiting"
        if pages:
            title = f"{len(pages)} PAGE · " + title
        if title != self._queue_title:
            self._queue_title = title
            self.query_one("#queue-title", Static).update(Text(title), layout=False)

    def _cursor_moved(self, option_id: str) -> None:
        if option_id.startswith(PAGE_PREFIX):
            self.open_page(option_id.removeprefix(PAGE_PREFIX))
        else:
            self.open_room(option_id)

    @on(QueueView.Selected, "#queue")
    def _selected(self, event: QueueView.Selected) -> None:
        if not event.row_id.startswith(PAGE_PREFIX):
            self.open_room(event.row_id, focus_composer=True)

    def open_room(self, room_id: str, *, focus_composer: bool = False) -> None:
        """Show a client's thread and card; with ``focus_composer`` the counselor
        is replying, so the thread counts as read.

        Moving through the queue selects the client at once (the row cursor and
        what a send or command acts on) and draws their thread, card and notes
        at most once a frame: a held arrow key moves the cursor without waiting
        for panes nobody has time to read. Replying draws them first.
        """
        if self.link is None:
            return
        self.current_page = None
        if room_id != self.current:
            self.current = room_id
            self._detail_soon()
            self._trust_soon(room_id)
        if focus_composer:
            self.show_detail()
            self.link.entry(room_id).mark_read()
            self.query_one("#composer", TextArea).focus()
            self._refresh_queue({room_id})

    def open_page(self, page_id: str) -> None:
        """Show a crisis page in the centre (what it says; ``t`` takes it)."""
        self.current = None
        self.current_page = page_id
        self.show_detail()

    def _detail_soon(self) -> None:
        """Draw the detail now, in the cursor's frame, unless it was drawn within
        the last frame: then once, when that frame is over, for the latest row."""
        if self._detail_timer is not None:
            return
        since = time.monotonic() - self._detail_drawn_at
        if since >= DETAIL_FRAME_S:
            self.show_detail()
        else:
            self._detail_timer = self.set_timer(DETAIL_FRAME_S - since, self.show_detail)

    def show_detail(self) -> None:
        """Draw the centre and the card for what is selected now (a client or a
        page), and swap the private notes if the client changed."""
        if self._detail_timer is not None:
            self._detail_timer.stop()
            self._detail_timer = None
        self._detail_drawn_at = time.monotonic()
        if self._notes_room != self.current:
            self._save_notes()
            self._load_notes()
        page = self.current_page is not None and self.current is None
        scroll = self.query_one("#page", VerticalScroll)
        if scroll.display != page:
            scroll.display = page
            self.query_one("#conversation", TextPane).display = not page
        if page:
            self._render_page()
        else:
            self._render_thread()
        self._render_card()

    def page_text(self) -> Text:
        out = Text()
        page = self.link.pages.get(self.current_page or "") if self.link else None
        if page is None:
            return out
        out.append(f"Crisis page {page.page_id}\n", style="bold red")
        out.append(f"Received {self._stamp(page.ts_ms)}\n")
        if page.reason:
            out.append(f"Reason: {page.reason}\n")
        if page.engagement is not None:
            out.append(f"Case {page.engagement}\n")
        mine = (
            page.room_id is not None and self.link is not None and self.link.is_client(page.room_id)
        )
        if mine:
            assert page.room_id is not None and self.link is not None
            out.append(f"Your client: {self.link.entry(page.room_id).pseudonym}\n", style="bold")
        if page.taken_by:
            out.append(f"\nTaken by {page.taken_by}.\n", style="green")
        else:
            out.append(
                "\nPress t to take it: the service then puts you in a room with the client.\n",
                style="bold",
            )
        return out

    def _render_page(self) -> None:
        self._set_title(Text("Crisis page", style="bold white on red"))
        self.query_one("#thread-body", Static).update(self.page_text())

    def _set_title(self, heading: Text) -> None:
        if heading != self._title:
            self._title = heading
            self.query_one("#thread-title", Static).update(heading, layout=False)

    # ------------------------------------------------------------------ thread

    def _stamp(self, ts_ms: int) -> str:
        when = datetime.fromtimestamp(ts_ms / 1000)
        today = datetime.fromtimestamp(self.now()).date()
        return when.strftime("%H:%M") if when.date() == today else when.strftime("%a %d %b %H:%M")

    def thread_text(self) -> Text:
        """The current thread as the widget shows it (literal text, styled by sender)."""
        out = Text()
        if self.link is None or self.current is None:
            return out
        entry = self.link.entry(self.current)
        trust = self.link.trust_info.get(self.current)
        for m in entry.messages:
            if out:
                out.append("\n")
            out.append(f"{self._stamp(m.ts_ms)} ", style="dim")
            if m.kind == "counselor":
                out.append("You", style="bold green")
            elif m.kind == "bot":
                out.append("Service bot", style="italic magenta")
            elif m.kind == "client":
                out.append(entry.pseudonym if entry.brief else "Client", style="bold cyan")
            else:
                out.append(m.sender, style="bold")
            urgent = entry.is_urgent(m)
            if urgent:
                out.append(f" {URGENT_MARK}", style=f"{URGENT_STYLE} reverse")
            if (
                m.kind == "client"
                and not m.undecryptable
                and trust is not None
                and trust.checked
                and not self.link.is_trusted(m)
            ):
                out.append(" ⚠ unverified device", style="bold yellow")
            out.append("\n")
            if m.undecryptable:
                out.append(
                    "  ⚠ This message could not be decrypted (no key for it on this device).",
                    style="bold red",
                )
            else:
                style = "italic magenta" if m.kind == "bot" else URGENT_STYLE if urgent else ""
                for i, line in enumerate(m.body.split("\n")):
                    if i:
                        out.append("\n")
                    out.append(("‼ " if urgent else "  ") + line, style=style)
        for body in self._sending.get(self.current, ()):
            if out:
                out.append("\n")
            out.append("… You (sending)\n", style="dim green")
            out.append("  " + body.replace("\n", "\n  "), style="dim")
        return out

    def _render_thread(self) -> None:
        body = self.query_one("#conversation", TextPane)
        if self.link is None or self.current is None:
            self._set_title(Text())
            body.show(Text())
            return
        entry = self.link.entry(self.current)
        heading = Text.assemble(("Conversation with ", "bold"), (entry.pseudonym, "bold cyan"))
        if entry.engagement is not None:
            heading.append(f" · case {entry.engagement}", style="dim")
        composer = self.query_one("#composer", TextArea)
        if entry.closed:
            heading.append(" · closed, read-only", style="bold yellow")
        border = CLOSED_TITLE if entry.closed else REPLY_TITLE
        if composer.border_title != border:
            composer.border_title = border
        self._set_title(heading)
        body.show(self.thread_text())

    # ------------------------------------------------------------------ card

    def card_text(self) -> Text:
        out = Text()
        if self.link is None or self.current is None:
            return out
        e = self.link.entry(self.current)
        trust = self.link.trust_info.get(self.current)
        out.append(e.pseudonym + "\n", style="bold cyan")
        if e.engagement is not None:
            out.append(f"Case {e.engagement}\n", style="dim")
        if e.closed:
            out.append(f"Closed: {e.outcome.replace('_', '-') or 'yes'}\n", style="bold yellow")
        if e.client_id:
            out.append(e.client_id + "\n", style="dim")
        out.append("Risk: ")
        out.append(f" {e.risk} ", style=RISK_STYLE.get(e.risk, ""))
        out.append("\n")
        since = e.awaiting_since_ms
        if since is not None and not e.closed:
            out.append(f"Awaiting a reply for {format_wait(int(self.now() * 1000) - since)}\n")
        if trust is not None and trust.identity_changed:
            out.append(
                "⚠ This client's identity (security key) changed. If unexpected, check "
                "with them before sharing anything sensitive.\n",
                style="bold red",
            )
        if trust is not None and trust.unsigned_devices:
            out.append(
                f"⚠ {len(trust.unsigned_devices)} device(s) of this client are not "
                "verified by them: they get no keys until the client verifies them.\n",
                style="bold yellow",
            )
        b = e.brief
        out.append("\nBrief\n", style="bold underline")
        if b is None:
            out.append("No brief in the case channel yet.\n")
        elif not b.shared:
            out.append("The client chose not to share their intake summary.\n")
        else:
            out.append(f"Language: {b.language}\nCountry: {b.country}\nTopic: {b.topic}\n")
            out.append(f"Risk at intake: {b.risk}\n")
            if b.consent_date:
                out.append(f"Consent given: {b.consent_date}\n")
            if b.received_ms:
                out.append(f"Brief received: {self._stamp(b.received_ms)}\n")
            if b.screening:
                out.append("Screening:\n")
                for line in b.screening:
                    out.append(f"  {line}\n")
            for line in b.critical:
                out.append(f"⚠ {line}\n", style="bold red")
        if e.urgent:
            out.append(
                "‼ Active crisis: every message of this client is shown as urgent.\n",
                style=URGENT_STYLE,
            )
        if e.flags:
            out.append("\nFlags\n", style="bold underline")
            for reason, ts_ms in e.flags.items():
                out.append(self._flag_text(reason, ts_ms, b), style=FLAG_STYLE)
        out.append("\nBookings\n", style="bold underline")
        if e.bookings:
            for when in sorted(e.bookings.values()):
                out.append(f"  {format_when(when)}\n")
        else:
            out.append("  none\n")
        return out

    def _flag_text(self, reason: str, ts_ms: int, brief: Brief | None) -> str:
        """A flag in words, with when it was raised."""
        when = self._stamp(ts_ms)
        if reason != CHECK_NO:
            return f"⚑ {reason} ({when})\n"
        if brief is not None and brief.received_ms == ts_ms and CHECK_NO in brief.flags:
            when = f"during intake (brief of {when})"
        return (
            "⚑ The client was asked the crisis check question (are you thinking about "
            f"ending your life?) and said no: {when}. Please look in soon.\n"
        )

    def _render_card(self) -> None:
        shown = self.current or PAGE_PREFIX + (self.current_page or "")
        self.query_one("#card", TextPane).show(self.card_text(), top=shown != self._card_of)
        self._card_of = shown

    def _trust_soon(self, room_id: str) -> None:
        """Check the client's devices once the counselor rests on them.

        The check asks the homeserver for every member's keys, so moving through
        the queue does not fire one per row: it waits for the highlight to stay,
        and a room checked within the last minute is not asked again. Sending is
        never affected: the device policy runs before every encrypted send.
        """
        if self._trust_timer is not None:
            self._trust_timer.stop()
            self._trust_timer = None
        if not self.online:
            return  # checked before any send once the link is live
        last = self._trust_checked_at.get(room_id)
        if last is not None and self.now() - last < TRUST_RECHECK_S:
            return

        def check() -> None:
            self._trust_timer = None
            if self.current == room_id:
                self._check_trust(room_id)

        self._trust_timer = self.set_timer(TRUST_SETTLE_S, check)

    @work(exclusive=True, exit_on_error=False, group="trust")
    async def _check_trust(self, room_id: str) -> None:
        if self.link is None:
            return
        try:
            await self.link.check_trust(room_id)
        except E2ECounselError as exc:
            logger.warning("trust check failed: %s", type(exc).__name__)
            return
        self._trust_checked_at[room_id] = self.now()
        self.post_message(TrustChecked(room_id))

    def on_trust_checked(self, message: TrustChecked) -> None:
        """Redraw only what the check changed: in the usual case (every device
        verified, same identity) nothing, so a move in the queue renders once."""
        if message.room_id != self.current or self.link is None:
            return
        info = self.link.trust_info.get(message.room_id)
        if info is not None and (info.unsigned_devices or info.identity_changed):
            self._render_card()
        entry = self.link.entry(message.room_id)
        if any(
            m.kind == "client" and not m.undecryptable and not self.link.is_trusted(m)
            for m in entry.messages
        ):
            self._render_thread()

    # ------------------------------------------------------------------ notes

    def _load_notes(self) -> None:
        area = self.query_one("#notes", TextArea)
        self._notes_room = self.current
        text = self.notes.get(self.current) if self.notes and self.current else ""
        if area.text != text:  # loading lays the screen out again: only when it differs
            area.load_text(text)

    def _save_notes(self) -> None:
        if self.notes is None or self._notes_room is None:
            return
        try:
            text = self.query_one("#notes", TextArea).text
        except Exception:  # the widget is already gone at shutdown
            return
        try:
            self.notes.set(self._notes_room, text)
        except OSError:
            logger.warning("notes could not be saved")
            self.status_note = "Your notes could not be saved (disk full or read-only?)."
            self._render_status()

    def action_focus_notes(self) -> None:
        self.query_one("#notes", TextArea).focus()

    def action_focus_queue(self) -> None:
        self.query_one("#queue", QueueView).focus()

    # ------------------------------------------------------------------ status

    def status_text(self) -> Text:
        state = self.session.state if self.session is not None else ConnectionState.STARTING
        if state is ConnectionState.STARTING and self._first_sync_ok:
            state = ConnectionState.ONLINE
        label, style = STATE_TEXT[state]
        out = Text()
        out.append(label, style=style)
        if self.session is not None:
            out.append(f"  {self.session.user_id}", style="dim")
        if self.link is not None and not self.history_loaded:
            out.append("  ·  " + (CATCHING_UP if self._restored else LOADING), style="yellow")
        if self.round is not None:
            out.append("  ·  " + self.round.label(), style="bold")
        if self.status_note:
            out.append("  ·  " + self.status_note)
        return out

    def _render_status(self) -> None:
        self.query_one("#status", Static).update(self.status_text(), layout=False)

    def notify_status(self, text: str) -> None:
        self.status_note = text
        self._render_status()

    # ------------------------------------------------------------------ sending

    def action_send(self) -> None:
        """Send the composer's text to the open client (or, a ``!`` line, to the
        case channel as a command for this case).

        The text leaves the composer at once and is shown as "sending" in the
        thread, so the composer stays free: whatever is typed meanwhile is kept.
        If the homeserver does not take the message, it comes back in front of it.
        """
        if self._detail_timer is not None:
            self.show_detail()  # what is sent goes to the client on screen
        focused = self.focused
        if focused is not None and focused.id == "notes":
            self._save_notes()
            self.notify_status("Notes saved (sealed on this machine).")
            return
        composer = self.query_one("#composer", TextArea)
        body = composer.text.strip()
        if not body:
            return
        if self.link is None:
            return
        if not self.online:
            self.notify_status(NOT_YET_SENT)
            return
        if is_command(body) and (self.current is not None or not needs_case(body)):
            engagement = self.link.entry(self.current).engagement if self.current else None
            try:
                command = route(body, engagement)
            except CommandRefused as exc:
                self.notify_status(str(exc))
                return
            composer.load_text("")
            self._command(command, restore=body)
            return
        if self.current is None:
            self.notify_status("Choose a client in the queue first.")
            return
        entry = self.link.entry(self.current)
        if entry.closed:
            self.notify_status("This case is closed: the thread is read-only, nothing was sent.")
            return
        composer.load_text("")
        self._sending.setdefault(self.current, []).append(body)
        self._render_thread()
        self.notify_status("Sending…")
        self._send(self.current, body)

    @work(group="send", exit_on_error=False)
    async def _send(self, room_id: str, body: str) -> None:
        assert self.link is not None
        try:
            await self.link.send(room_id, body)
        except E2ECounselError as exc:
            logger.warning("send failed: %s", type(exc).__name__)
            self.post_message(
                SendFinished(
                    room_id,
                    False,
                    "Not sent: the homeserver did not take the message. "
                    "It is back in the composer.",
                    body,
                )
            )
            return
        except Exception:
            logger.exception("send failed")
            self.post_message(
                SendFinished(room_id, False, "Not sent; it is back in the composer.", body)
            )
            return
        self.post_message(SendFinished(room_id, True, "", body))

    def on_send_finished(self, message: SendFinished) -> None:
        pending = self._sending.get(message.room_id, [])
        if message.body in pending:
            pending.remove(message.body)
        if not message.ok:
            if message.body:
                self._restore(message.body)
            self.notify_status(message.error)
            if message.room_id == self.current:
                self._render_thread()
            return
        if self.link is not None and message.room_id:
            self.link.entry(message.room_id).mark_read()
        self.notify_status("Sent.")
        if message.room_id == self.current:
            self._render_thread()
        if message.room_id and self.round is not None and self.round.current == message.room_id:
            self._round_next()

    def _restore(self, body: str) -> None:
        """Put an unsent text back in the composer, before what was typed since."""
        composer = self.query_one("#composer", TextArea)
        typed = composer.text
        composer.load_text(body + ("\n" + typed if typed.strip() else ""))

    # ------------------------------------------------------------------ reply round

    def action_round(self) -> None:
        if self.link is None:
            return
        now = datetime.fromtimestamp(self.now())
        windows = self.settings.reply_windows
        self.round = ReplyRound.start(
            self.link.active_entries(), round_number(now, windows), max(len(windows), 1)
        )
        if self.round.finished:
            self.notify_status("Nobody is waiting for a reply.")
        else:
            self.status_note = ""
            self._open_round_current()
        self._render_status()

    def action_next(self) -> None:
        if self.round is None:
            self.notify_status("Start a reply round with F2.")
            return
        self._round_next()

    def _round_next(self) -> None:
        assert self.round is not None
        self.round.advance()
        if self.round.finished:
            self.notify_status("Round done: everyone waiting has a reply.")
        else:
            self._open_round_current()
        self._render_status()

    def _open_round_current(self) -> None:
        assert self.round is not None
        room = self.round.current
        if room is None:
            return
        self.open_room(room, focus_composer=True)
        ql = self.query_one("#queue", QueueView)
        index = ql.index_of(room)
        if index is not None:  # else the client left the queue meanwhile
            with ql.quietly():
                ql.highlighted = index

    # ------------------------------------------------------------------ actions

    def _need_room(self) -> ClientEntry | None:
        if self.link is None or self.current is None:
            self.notify_status("Choose a client in the queue first.")
            return None
        return self.link.entry(self.current)

    def _command(self, command: str, *, restore: str = "") -> None:
        """Send a command to the case channel; ``restore`` goes back into the
        composer if it does not get there."""
        if not self.online:
            self.notify_status("Still catching up with the homeserver: nothing was sent.")
            return
        self.notify_status(f"Sending {command.split(chr(10), 1)[0][:60]} to the service…")
        self._send_command(command, restore)

    def _case_command(self, entry: ClientEntry, word: str, *args: str) -> None:
        try:
            command = for_case(word, entry.engagement, *args)
        except CommandRefused as exc:
            self.notify_status(str(exc))
            return
        self._command(command)

    @work(group="send", exit_on_error=False)
    async def _send_command(self, command: str, restore: str) -> None:
        assert self.link is not None
        try:
            await self.link.send_command(command)
        except E2ECounselError as exc:
            logger.warning("command not sent: %s", type(exc).__name__)
            text = (
                "Not sent: there is no case channel with the service yet."
                if isinstance(exc, NoCaseChannel)
                else "Not sent: the homeserver did not take the command."
            )
            self.post_message(SendFinished("", False, text, restore))
            return
        self.post_message(SendFinished("", True, "", ""))

    def action_take_page(self) -> None:
        """Answer a crisis page: ``!take P`` in the case channel."""
        pages = self.queue_pages()
        chosen = next((p for p in pages if p.page_id == self.current_page), None)
        if chosen is None and len(pages) == 1:
            chosen = pages[0]
        if chosen is None:
            self.notify_status(
                "Highlight a crisis page at the top of the queue, then press t."
                if pages
                else "There is no open crisis page."
            )
            return
        self._command(f"!take {chosen.page_id}")

    def action_close_case(self) -> None:
        entry = self._need_room()
        if entry is None:
            return

        def chosen(outcome: str | None) -> None:
            if outcome is None:
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self._case_command(entry, "close", outcome)

            self.push_screen(
                ConfirmScreen(
                    Text.assemble(
                        "Close the counseling with ",
                        (entry.pseudonym, "bold"),
                        f" as “{OUTCOMES[outcome]}”? The client gets the closing message "
                        "and a short survey. This cannot be undone here.",
                    )
                ),
                confirmed,
            )

        self.push_screen(ChoiceScreen("Close with which outcome?", OUTCOMES), chosen)

    def action_risk(self) -> None:
        entry = self._need_room()
        if entry is None:
            return

        def chosen(level: str | None) -> None:
            if level is not None:
                self._case_command(entry, "risk", level)

        self.push_screen(
            ChoiceScreen("Set the risk level", {"high": "High", "medium": "Medium", "low": "Low"}),
            chosen,
        )

    def action_refer(self) -> None:
        entry = self._need_room()
        if entry is None:
            return

        def entered(values: dict[str, str] | None) -> None:
            if not values:
                return
            target = values["mxid"].strip()
            if not (target.startswith("@") and ":" in target):
                self.notify_status("A Matrix ID looks like @name:server.")
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self._case_command(entry, "refer", target)

            self.push_screen(
                ConfirmScreen(
                    Text.assemble(
                        "Hand ",
                        (entry.pseudonym, "bold"),
                        " over to ",
                        (target, "bold"),
                        "? You will be removed from the room.",
                    )
                ),
                confirmed,
            )

        self.push_screen(
            FormScreen("Refer to a colleague", [("mxid", "Colleague's Matrix ID", False)]),
            entered,
        )

    def action_offer_slots(self) -> None:
        """Ask the bot to offer the client free live-session times in the room."""
        entry = self._need_room()
        if entry is None:
            return
        self._case_command(entry, "book")

    # ------------------------------------------------------------------ snippets

    def snippets(self) -> list[Snippet]:
        if self._snippets is None:
            try:
                self._snippets = load_snippets(self.settings.snippets_file)
            except E2ECounselError as exc:
                self.notify_status(str(exc))
                self._snippets = []
        return self._snippets

    def action_snippets(self) -> None:
        items = self.snippets()
        if not items:
            self.notify_status(f"No snippets yet: add them to {self.settings.snippets_file}")
            return
        lang = ""
        if self.link is not None and self.current is not None:
            brief = self.link.entry(self.current).brief
            lang = brief.language if brief else ""

        def chosen(text: str | None) -> None:
            if text:
                composer = self.query_one("#composer", TextArea)
                composer.insert(text)
                composer.focus()

        self.push_screen(SnippetScreen(items, lang), chosen)

    # ------------------------------------------------------------------ keys

    def action_export_keys(self) -> None:
        self._keys_form("export")

    def action_import_keys(self) -> None:
        self._keys_form("import")

    def _keys_form(self, what: str) -> None:
        if self.session is None:
            return
        title = "Export room keys (Element format)" if what == "export" else "Import room keys"

        def entered(values: dict[str, str] | None) -> None:
            if values and values["path"] and values["passphrase"]:
                self._keys(what, Path(values["path"]).expanduser(), values["passphrase"])

        self.push_screen(
            FormScreen(
                title,
                [("path", "File", False), ("passphrase", "Passphrase for the file", True)],
            ),
            entered,
        )

    @work(exclusive=True, exit_on_error=False, group="keys")
    async def _keys(self, what: str, path: Path, passphrase: str) -> None:
        assert self.session is not None
        client = self.session.client
        try:
            if what == "export":
                await client.export_keys(str(path), passphrase)
                self.post_message(Problem(f"Room keys exported to {path}."))
            else:
                await client.import_keys(str(path), passphrase)
                self.post_message(Problem("Room keys imported; older messages will now open."))
                if self.link is not None:
                    await self.link.load_history()
        except Exception as exc:  # nio raises its own EncryptionError/OSError here
            logger.warning("key %s failed: %s", what, type(exc).__name__)
            self.post_message(
                Problem(
                    "Key export failed: check the file location."
                    if what == "export"
                    else "Key import failed: wrong passphrase or not a key file."
                )
            )

    # ------------------------------------------------------------------ help

    def action_help(self) -> None:
        rows = list(QUEUE_KEYS)
        for b in self.BINDINGS:
            assert isinstance(b, Binding)
            rows.append((b.key, b.description))
        rows.append(("ctrl+q", "quit"))
        self.push_screen(HelpScreen(rows))


def make_app(
    settings: TuiSettings,
    session: MatrixSession | None = None,
    notes: NoteBook | None = None,
    *,
    now: Callable[[], float] = time.time,
    snapshot: QueueSnapshot | None = None,
    online: Callable[[], Awaitable[Connected]] | None = None,
) -> CounselorApp:
    """Build the app with its services. Without a session it opens on sign-in.

    With ``online`` the session is not signed in yet: the app shows ``snapshot``
    (the queue as it was) at once and awaits ``online`` (sign-in, first sync)
    behind it; otherwise the session is already signed in and synced.
    """
    return CounselorApp(settings, session, notes, now=now, snapshot=snapshot, online=online)


def signing_in(settings: TuiSettings, opened: Unlocked) -> Callable[[], Awaitable[Connected]]:
    """Sign in the saved device of an unlocked store (for ``online``)."""
    return lambda: go_online(settings, opened)


def app_of_store(
    settings: TuiSettings, opened: Unlocked, *, now: Callable[[], float] = time.time
) -> CounselorApp:
    """The app over an unlocked store with a saved device: the snapshot at once,
    signed in behind it."""
    return make_app(
        settings,
        opened.session,
        opened.notes,
        now=now,
        snapshot=opened.snapshot,
        online=signing_in(settings, opened),
    )
