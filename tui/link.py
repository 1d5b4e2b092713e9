"""The TUI's view of Matrix: which rooms are clients, what the case channel says.

Everything the app knows comes from here, through the counselor's own E2EE
session: session rooms (the bot at power 100, the counselor at 50, the client),
the case channel (the bot's DM with the counselor, read through the
machine-readable field of :mod:`e2ecounsel.casechannel`, see :mod:`tui.case`), and
the timeline of each. Only the configured bot's invitations are joined, at start
(those that waited while the app was closed) and whenever one arrives. It feeds
:mod:`tui.queue`, collects :class:`~tui.queue.Alert` items for the app, and calls
``on_change`` with the rooms that changed; it holds no widgets.

A room shaped like a session room is a client's only once the case channel named
it (a brief) and until it says ``released``; both are compared by time, because
history arrives newest page first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nio import (
    InviteMemberEvent,
    JoinError,
    MatrixRoom,
    MegolmEvent,
    RoomMemberEvent,
    RoomMessage,
    RoomMessageEmote,
    RoomMessageMedia,
    RoomMessageNotice,
    RoomMessagesError,
    RoomMessageText,
)

from e2ecounsel.casechannel import CaseEvent, parse
from e2ecounsel.domain.text import clean_text
from e2ecounsel.errors import E2ECounselError
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.matrix.trust import TrustPolicy, TrustReport
from tui.case import booking_of, brief_of, flag_of, page_of, risk_of, text
from tui.queue import Alert, ClientEntry, Message, Page
from tui.snapshot import Remembered

logger = logging.getLogger(__name__)

MAX_BODY = 20_000
BOT_POWER = 100
COUNSELOR_POWER = 50
CASE_PAGES = 20
#: History asks for messages only: the rooms' state events (a dozen per session
#: room) would be parsed and validated for nothing.
HISTORY_FILTER = {"types": ["m.room.encrypted", "m.room.message"]}
#: Session rooms whose history is reported to the app together, at start.
HISTORY_BATCH = 50
#: History requests in flight at once.
HISTORY_REQUESTS = 16
#: Case-channel kinds whose own text is worth a toast when they arrive.
_SAID = frozenset({"reply", "reminder", "notice"})


@dataclass
class TrustInfo:
    """What the card shows about the client's devices and identity."""

    checked: bool = False
    unsigned_devices: list[str] = field(default_factory=list)
    identity_changed: bool = False


def _ts(event: Any) -> int:
    return int(getattr(event, "server_timestamp", 0) or 0)


class MatrixLink:
    """Keeps the queue model in step with the counselor's Matrix account."""

    def __init__(
        self,
        session: MatrixSession,
        *,
        bot_id: str,
        trust_file: Path | None = None,
        on_change: Callable[[set[str]], None] = lambda rooms: None,
    ) -> None:
        self.session = session
        self.bot_id = bot_id
        self.on_change = on_change
        self.entries: dict[str, ClientEntry] = {}
        self.session_rooms: set[str] = set()
        self.pages: dict[str, Page] = {}
        self.alerts: list[Alert] = []
        #: Rooms joined since start whose history the app should fetch.
        self.needs_history: set[str] = set()
        self.trust_info: dict[str, TrustInfo] = {}
        self._case_rooms: dict[str, int] = {}  # case-channel room -> latest case event
        self._briefed_rooms: set[str] = set()
        self._named_ms: dict[str, int] = {}  # session room -> latest brief
        self._released_ms: dict[str, int] = {}
        self._history_done: set[str] = set()
        self._identity_changed: set[str] = set()
        #: Rooms taken from a snapshot that the homeserver has not confirmed yet.
        self.restored: set[str] = set()
        #: Clients dropped (released, or no longer ours) since the app last looked:
        #: the snapshot is rewritten at once without them.
        self.forgotten: set[str] = set()
        self.trust = TrustPolicy(
            "cross-signed-only",
            known_identities=trust_file,
            on_identity_change=lambda change: self._identity_changed.add(change.user_id),
        )
        self._attached = False

    @property
    def me(self) -> str:
        return self.session.user_id

    # ------------------------------------------------------------------ wiring

    def attach(self) -> None:
        """Register the callbacks and the trust hook (once)."""
        if self._attached:
            return
        self._attached = True
        s = self.session
        s.add_event_callback(
            self._on_event,
            (RoomMessageText, RoomMessageNotice, RoomMessageEmote, RoomMessageMedia, MegolmEvent),
        )
        s.add_event_callback(self._on_invite, InviteMemberEvent)
        s.add_event_callback(self._on_member, RoomMemberEvent)
        s.use_trust(self.trust)
        s.before_encrypt.append(self._before_encrypt)

    async def join_invitations(self) -> set[str]:
        """Join every invitation from the bot still pending (sent while the app was
        closed); the rooms joined. Invitations from anyone else are left for the
        counselor's own Matrix client."""
        joined: set[str] = set()
        for room_id, room in list(self.session.client.invited_rooms.items()):
            if getattr(room, "inviter", None) == self.bot_id and await self._join(room_id):
                joined.add(room_id)
        return joined

    async def _join(self, room_id: str) -> bool:
        resp = await self.session.client.join(room_id)
        if isinstance(resp, JoinError):
            logger.warning("could not join a room the bot invited us to: %s", resp.status_code)
            return False
        return True

    def scan_rooms(self) -> None:
        """Classify every joined room (after the first sync)."""
        changed = set()
        for room in list(self.session.client.rooms.values()):
            if self._classify(room) == "session":
                changed.add(room.room_id)
        if changed:
            self.on_change(changed)

    def _classify(self, room: MatrixRoom) -> str | None:
        """ "session", "case" or None, from the room's shape (as the bridge builds it).

        The bot created the room (since room version 12 the creator is not listed
        in the power levels) and we hold 50. A session room also has a
        client; the case channel is the bot and us alone.
        """
        levels = getattr(room.power_levels, "users", {}) or {}
        # nio does not keep the room's creator; a bot that is a member and either
        # holds 100 or is absent from the levels (a v12 creator) made the room.
        bot_rules = self.bot_id in room.users and levels.get(self.bot_id, BOT_POWER) == BOT_POWER
        if not (bot_rules and room.encrypted and levels.get(self.me) == COUNSELOR_POWER):
            return None
        if room.room_id in self.session_rooms:
            return "session"
        client = self._client_of(room)
        if not client:
            return "case"
        self.session_rooms.add(room.room_id)
        self.entry(room.room_id).client_id = client
        return "session"

    def _client_of(self, room: MatrixRoom) -> str:
        others = [u for u in room.users if u not in (self.me, self.bot_id)]
        levels = getattr(room.power_levels, "users", {}) or {}
        others += [u for u in levels if u not in (self.me, self.bot_id) and u not in others]
        return others[0] if others else ""

    def entry(self, room_id: str) -> ClientEntry:
        e = self.entries.get(room_id)
        if e is None:
            e = self.entries[room_id] = ClientEntry(room_id)
        return e

    def is_client(self, room_id: str) -> bool:
        """A session room the case channel gave us (a brief) and did not take back."""
        named = self._named_ms.get(room_id)
        return (
            named is not None
            and named > self._released_ms.get(room_id, -1)
            and room_id in self.session_rooms
        )

    def active_entries(self) -> list[ClientEntry]:
        return [
            self.entries[r] for r in self.session_rooms if r in self.entries and self.is_client(r)
        ]

    @property
    def case_room(self) -> str | None:
        """The case channel commands go to: of the bot-and-us rooms, one that
        carried briefs (a supervisors' room with us alone never does), the one
        that spoke last."""
        if self._case_rooms:
            return max(
                self._case_rooms,
                key=lambda r: (r in self._briefed_rooms, self._case_rooms[r], r),
            )
        for room in self.session.client.rooms.values():
            if self._classify(room) == "case":
                return str(room.room_id)
        return None

    def take_alerts(self) -> list[Alert]:
        alerts, self.alerts = self.alerts, []
        return alerts

    # ------------------------------------------------------------------ snapshot

    def remember(self) -> Remembered:
        """The queue's state, for the sealed snapshot: current clients only."""
        entries = [e for e in self.entries.values() if self.is_client(e.room_id)]
        return Remembered(
            entries=entries,
            named_ms={e.room_id: self._named_ms[e.room_id] for e in entries},
            pages=list(self.pages.values()),
            case_rooms=dict(self._case_rooms),
            briefed_rooms=set(self._briefed_rooms),
        )

    def restore(self, remembered: Remembered) -> set[str]:
        """Show a snapshot until the homeserver has spoken (before the first sync);
        what history then brings is merged in (events already there are skipped)."""
        for e in remembered.entries:
            self.entries[e.room_id] = e
            self.session_rooms.add(e.room_id)
            self._named_ms[e.room_id] = remembered.named_ms.get(e.room_id, 0)
            self.restored.add(e.room_id)
        for p in remembered.pages:
            self.pages[p.page_id] = p
        self._case_rooms.update(remembered.case_rooms)
        self._briefed_rooms |= remembered.briefed_rooms
        return {e.room_id for e in remembered.entries}

    def drop_unconfirmed(self) -> set[str]:
        """After the first sync: forget the snapshot's rooms we are no longer in
        as a counselor (and case channels we left); the rooms dropped."""
        rooms = self.session.client.rooms
        dropped = set()
        for room_id in self.restored:
            room = rooms.get(room_id)
            if room is None or self._classify(room) != "session":
                dropped.add(room_id)
                self.session_rooms.discard(room_id)
                self.entries.pop(room_id, None)
                self._named_ms.pop(room_id, None)
                self.trust_info.pop(room_id, None)
        self.restored.clear()
        for room_id in [r for r in self._case_rooms if r not in rooms]:
            del self._case_rooms[room_id]
            self._briefed_rooms.discard(room_id)
        self.forgotten |= dropped
        return dropped

    # ------------------------------------------------------------------ events

    async def _on_event(self, room: MatrixRoom, event: Any) -> None:
        changed = self.ingest(room, event, live=True)
        if changed:
            self.on_change(changed)

    def ingest(self, room: MatrixRoom, event: Any, *, live: bool = False) -> set[str]:
        """Take one timeline event (``live`` from sync, else from history) into the model."""
        kind = self._classify(room)
        if kind is None:
            return set()
        if getattr(event, "sender", None) == self.bot_id and not self.is_client(room.room_id):
            case = self._case_of(event)
            if case is not None:
                if kind == "case":
                    seen = self._case_rooms.get(room.room_id, 0)
                    self._case_rooms[room.room_id] = max(seen, _ts(event))
                    if case.kind == "brief":
                        self._briefed_rooms.add(room.room_id)
                return self.apply_case(case, _ts(event), body=self._body(event), live=live)
        if kind == "session":
            return self._session_event(room, event, live)
        return set()

    @staticmethod
    def _case_of(event: Any) -> CaseEvent | None:
        if not isinstance(event, RoomMessage) or isinstance(event, MegolmEvent):
            return None
        content = (getattr(event, "source", None) or {}).get("content")
        return parse(content) if isinstance(content, dict) else None

    @staticmethod
    def _body(event: Any) -> str:
        return clean_text(str(getattr(event, "body", "")), 2000).strip()

    def _session_event(self, room: MatrixRoom, event: Any, live: bool) -> set[str]:
        entry = self.entry(room.room_id)
        sender = str(getattr(event, "sender", ""))
        if not entry.client_id or sender == entry.client_id:
            entry.client_id = entry.client_id or self._client_of(room)
        if sender == self.me:
            role = "counselor"
        elif sender == self.bot_id:
            role = "bot"
        elif sender == entry.client_id:
            role = "client"
        else:
            role = "other"
        undecryptable = isinstance(event, MegolmEvent)
        if undecryptable:
            body = ""
        elif isinstance(event, RoomMessageMedia):
            body = f"(attachment: {clean_text(str(getattr(event, 'body', '')), 200)})"
        else:
            body = clean_text(str(getattr(event, "body", "")), MAX_BODY)
        msg = Message(
            event_id=str(getattr(event, "event_id", "")),
            sender=sender,
            ts_ms=_ts(event),
            body=body,
            kind=role,
            notice=isinstance(event, RoomMessageNotice),
            undecryptable=undecryptable,
            sender_key=getattr(event, "sender_key", None),
        )
        if not entry.add(msg):
            return set()
        if live and role == "client" and self.is_client(room.room_id):
            self.alerts.append(Alert("message", room.room_id, urgent=entry.is_urgent(msg)))
        return {room.room_id}

    def apply_case(
        self, case: CaseEvent, ts_ms: int, *, body: str = "", live: bool = False
    ) -> set[str]:
        """One case-channel fact into the model; the rooms whose entry changed."""
        if case.kind in ("page", "take"):
            return self._page_fact(case, ts_ms, live)
        if case.kind == "flag":
            return self._flag(case, ts_ms, body, live)
        if case.kind in _SAID:
            if live and body:
                ok = case.data.get("ok") is not False
                self.alerts.append(Alert("said", case.room or "", body, ok=ok))
            return set()
        room = case.room
        if room is None:
            return set()
        if case.kind == "released":
            return self._released(room, ts_ms, live)
        entry = self.entry(room)
        if case.engagement is not None:
            entry.engagement = case.engagement
        if case.kind == "brief":
            if entry.brief is not None and entry.brief.received_ms > ts_ms:
                return set()
            entry.brief = brief_of(case.data, ts_ms)
            for reason in entry.brief.flags:
                entry.flag(reason, ts_ms)
            self._open_pages_of(room)  # a page read before the brief
            self._named_ms[room] = max(self._named_ms.get(room, 0), ts_ms)
            self._set_risk(entry, entry.brief.risk, ts_ms)
        elif case.kind == "risk":
            self._set_risk(entry, risk_of(case.data.get("risk")), ts_ms)
        elif case.kind == "closed":
            if ts_ms > entry.closed_ms:
                entry.closed_ms = ts_ms
                entry.outcome = text(case.data.get("outcome"), 40)
                if live and entry.closed:
                    self.alerts.append(Alert("closed", room, entry.outcome))
        elif case.kind == "booking":
            booking, when = booking_of(case.data)
            if not booking:
                return set()
            if when is None:
                entry.bookings.pop(booking, None)
            else:
                entry.bookings[booking] = when
        return {room}

    def _flag(self, case: CaseEvent, ts_ms: int, body: str, live: bool) -> set[str]:
        """A flag on a client (e.g. the crisis check answered "no"): kept on the
        entry, so the queue and the card show it, and rung when it arrives."""
        reason = flag_of(case.data.get("reason"))
        if live and (body or reason):
            self.alerts.append(Alert("flag", case.room or "", body or reason))
        if not reason or case.room is None:
            return set()
        entry = self.entry(case.room)
        if case.engagement is not None:
            entry.engagement = case.engagement
        return {case.room} if entry.flag(reason, ts_ms) else set()

    @staticmethod
    def _set_risk(entry: ClientEntry, level: str | None, ts_ms: int) -> None:
        if level and entry.risk_set_ms <= ts_ms:
            entry.risk = level
            entry.risk_set_ms = ts_ms

    def _released(self, room: str, ts_ms: int, live: bool) -> set[str]:
        if ts_ms <= self._released_ms.get(room, -1):
            return set()
        self._released_ms[room] = ts_ms
        if self._named_ms.get(room, -1) > ts_ms:
            return set()  # given back later (a newer brief)
        self.entries.pop(room, None)
        self.trust_info.pop(room, None)
        self.forgotten.add(room)
        self.alerts.append(Alert("released", room, live=live))
        return {room}

    def _page_fact(self, case: CaseEvent, ts_ms: int, live: bool) -> set[str]:
        page_id = text(case.data.get("page"), 40)
        if not page_id:
            return set()
        known = self.pages.get(page_id)
        if case.kind == "take":
            by = text(case.data.get("by"), 200) or "someone"
            if known is None:
                self.pages[page_id] = Page(page_id, ts_ms, taken_by=by)
            elif not known.taken_by:
                known.taken_by = by
                if live:
                    self.alerts.append(Alert("take", known.room_id or "", by))
            return {f"page:{page_id}"} | self._open_pages_of(known.room_id if known else None)
        page = page_of(case, ts_ms)
        if page is None:
            return set()
        if known is not None:
            page.taken_by = known.taken_by
        self.pages[page_id] = page
        changed = {f"page:{page_id}"}
        if known is None and not page.taken_by:
            self.alerts.append(Alert("page", page.room_id or "", page_id, live=live))
        if page.room_id and page.room_id in self.entries:
            self._set_risk(self.entries[page.room_id], "high", ts_ms)
            changed.add(page.room_id)
        return changed | self._open_pages_of(page.room_id)

    def _open_pages_of(self, room: str | None) -> set[str]:
        """Give a client's entry its pages nobody took yet (what makes it urgent)."""
        if room is None or room not in self.entries:
            return set()
        self.entries[room].open_pages = {
            p.page_id: p.ts_ms for p in self.pages.values() if p.room_id == room and not p.taken_by
        }
        return {room}

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        # Only the service's bot adds us to rooms; other invitations wait for
        # the counselor's own Matrix client.
        if (
            event.state_key == self.me
            and event.membership == "invite"
            and event.sender == self.bot_id
        ):
            await self._join(room.room_id)

    async def _on_member(self, room: MatrixRoom, event: RoomMemberEvent) -> None:
        if event.state_key == self.me and event.membership in ("leave", "ban"):
            if room.room_id in self.session_rooms:
                self.session_rooms.discard(room.room_id)
                self.forgotten.add(room.room_id)
                self.on_change({room.room_id})
            return
        kind = self._classify(room)
        if (
            event.state_key == self.me
            and event.membership == "join"
            and kind is not None
            and room.room_id not in self._history_done
        ):
            # Joined while running: what was said since the invitation (and the
            # case channel's briefs) is fetched by the app, off the sync loop.
            self.needs_history.add(room.room_id)
            self.on_change({room.room_id})

    # ------------------------------------------------------------------ history

    async def load_history(
        self, rooms: Iterable[str] | None = None, *, limit: int = 40, batch: int | None = None
    ) -> None:
        """Fetch the recent timeline of each room (a restart starts from the saved
        sync token, so history comes from here). A few requests at a time.

        The case channel is asked first and reported as soon as it is read (every
        client's brief: the queue lists them all); the session rooms' turns (who
        waits, since when) follow, reported every ``batch`` rooms, so the queue
        fills in while the counselor already works in it.
        """
        client = self.session.client
        targets = [
            r for r in (rooms if rooms is not None else list(client.rooms)) if r in client.rooms
        ]
        self._history_done.update(targets)
        self.needs_history.difference_update(targets)
        kinds = {r: self._classify(client.rooms[r]) for r in targets}
        targets = [r for r in targets if kinds[r] == "case"] + [
            r for r in targets if kinds[r] == "session"
        ]
        gate = asyncio.Semaphore(HISTORY_REQUESTS)
        batch = batch or HISTORY_BATCH

        async def one(room_id: str) -> set[str]:
            room = client.rooms.get(room_id)
            if room is None:
                return set()
            kind = self._classify(room)
            if kind is None:
                return set()
            # A session room needs its recent turns; the case channel holds one
            # brief per client, so it is read further back (a few pages).
            pages = 1 if kind == "session" else CASE_PAGES
            depth = limit if kind == "session" else 250
            changed: set[str] = set()
            token: str | None = None
            for _ in range(pages):
                async with gate:
                    resp = await client.room_messages(
                        room_id, start=token, limit=depth, message_filter=HISTORY_FILTER
                    )
                if isinstance(resp, RoomMessagesError):
                    logger.warning("history of a room could not be read: %s", resp.status_code)
                    break
                for event in reversed(resp.chunk):
                    if isinstance(event, RoomMessage | MegolmEvent):  # not state events
                        changed |= self.ingest(room, event)
                if not resp.chunk or not resp.end or resp.end == token:
                    break
                token = resp.end
            return changed

        async def tagged(room_id: str) -> tuple[str, set[str]]:
            try:
                return room_id, await one(room_id)
            except Exception as exc:
                logger.warning("history fetch failed: %s", type(exc).__name__)
                return room_id, set()

        # Tasks take the gate in the order they start: the case channel first.
        tasks = [asyncio.ensure_future(tagged(r)) for r in targets]
        case_left = sum(1 for r in targets if kinds[r] == "case")
        changed: set[str] = set()
        try:
            for read, done in enumerate(asyncio.as_completed(tasks), start=1):
                room_id, got = await done
                changed |= got
                report = read % batch == 0 or read == len(tasks)
                if kinds[room_id] == "case":
                    case_left -= 1
                    report = report or case_left == 0
                if changed and report:
                    self.on_change(changed)
                    changed = set()
        finally:
            for task in tasks:  # the app closed meanwhile
                task.cancel()

    # ------------------------------------------------------------------ trust

    async def _before_encrypt(self, room_id: str) -> None:
        report = await self.trust.apply(self.session.client, room_id)
        self._record_trust(room_id, report)

    async def check_trust(self, room_id: str) -> TrustInfo:
        """Apply the device policy for the room's members and say what it found."""
        report = await self.trust.apply(self.session.client, room_id)
        return self._record_trust(room_id, report)

    def _record_trust(self, room_id: str, report: TrustReport) -> TrustInfo:
        entry = self.entries.get(room_id)
        client_id = entry.client_id if entry else ""
        info = TrustInfo(
            checked=True,
            unsigned_devices=[
                d for u, d in report.excluded + report.unsigned_included if u == client_id
            ],
            identity_changed=client_id in self._identity_changed,
        )
        self.trust_info[room_id] = info
        return info

    def is_trusted(self, message: Message) -> bool:
        probe = SimpleNamespace(
            decrypted=True, sender=message.sender, sender_key=message.sender_key
        )
        return self.trust.is_event_trusted(probe)

    # ------------------------------------------------------------------ sending

    async def send(self, room_id: str, body: str) -> str:
        """A message to the client, in their session room (never a command)."""
        if body.lstrip().startswith("!"):
            raise ValueError("commands go to the case channel")
        return await self.session.send_text(room_id, body)

    async def send_command(self, command: str) -> str:
        """A command for the bot, in the case channel (the only place it goes)."""
        room = self.case_room
        if room is None:
            raise NoCaseChannel("no case channel with the service yet")
        return await self.session.send_text(room, command)


class NoCaseChannel(E2ECounselError):
    """The bot has not opened a case channel with us (or we are not in it yet)."""
