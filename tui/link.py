"""The TUI's view of Matrix: which rooms are clients, what the case channel says.

Everything the app knows comes from here, through the counselor's own E2EE
session: session rooms (the bot at power 100, the counselor at 50, the client),
the case channel (the bot's DM with the counselor, whose briefs are parsed by
:mod:`tui.briefs`), and the timeline of each. It feeds :mod:`tui.queue` and calls
``on_change`` with the rooms that changed; it holds no widgets.
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

from e2ecounsel.domain.text import clean_text
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.matrix.trust import TrustPolicy, TrustReport
from tui.briefs import CaseFact, CaseReader, screening_lines
from tui.queue import Brief, ClientEntry, Message

logger = logging.getLogger(__name__)

MAX_BODY = 20_000
BOT_POWER = 100
COUNSELOR_POWER = 50
OUTCOMES = ("resolved", "face-to-face", "continue", "refer")
RISKS = ("high", "medium", "low")
CASE_PAGES = 20


@dataclass
class TrustInfo:
    """What the card shows about the client's devices and identity."""

    checked: bool = False
    unsigned_devices: list[str] = field(default_factory=list)
    identity_changed: bool = False


class MatrixLink:
    """Keeps the queue model in step with the counselor's Matrix account."""

    def __init__(
        self,
        session: MatrixSession,
        reader: CaseReader,
        *,
        bot_id: str,
        trust_file: Path | None = None,
        on_change: Callable[[set[str]], None] = lambda rooms: None,
    ) -> None:
        self.session = session
        self.reader = reader
        self.bot_id = bot_id
        self.on_change = on_change
        self.entries: dict[str, ClientEntry] = {}
        self.session_rooms: set[str] = set()
        self.trust_info: dict[str, TrustInfo] = {}
        self._identity_changed: set[str] = set()
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

    def active_entries(self) -> list[ClientEntry]:
        return [self.entries[r] for r in self.session_rooms if r in self.entries]

    # ------------------------------------------------------------------ events

    async def _on_event(self, room: MatrixRoom, event: Any) -> None:
        changed = self.ingest(room, event)
        if changed:
            self.on_change(changed)

    def ingest(self, room: MatrixRoom, event: Any) -> set[str]:
        """Take one timeline event (from sync or history) into the model."""
        kind = self._classify(room)
        if kind == "session":
            return self._session_event(room, event)
        if kind == "case" and getattr(event, "sender", None) == self.bot_id:
            return self._case_event(event)
        return set()

    def _session_event(self, room: MatrixRoom, event: Any) -> set[str]:
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
            ts_ms=int(getattr(event, "server_timestamp", 0) or 0),
            body=body,
            kind=role,
            notice=isinstance(event, RoomMessageNotice),
            undecryptable=undecryptable,
            sender_key=getattr(event, "sender_key", None),
        )
        if not entry.add(msg):
            return set()
        if role == "counselor" and body.startswith("!"):
            self._own_command(entry, body, msg.ts_ms)
        return {room.room_id}

    def _own_command(self, entry: ClientEntry, body: str, ts_ms: int) -> None:
        """Our own ``!close``/``!risk`` in the room: the queue follows at once."""
        word, _, rest = body[1:].partition(" ")
        arg = rest.strip().split(" ", 1)[0].lower() if rest.strip() else ""
        if word.lower() == "close" and arg in OUTCOMES:
            entry.closed = True
        elif word.lower() == "risk" and arg in RISKS and entry.risk_set_ms <= ts_ms:
            entry.risk = arg
            entry.risk_set_ms = ts_ms
        elif word.lower() == "refer" and arg.startswith("@"):
            entry.closed = True

    def _case_event(self, event: Any) -> set[str]:
        if not isinstance(event, RoomMessage) or isinstance(event, MegolmEvent):
            return set()
        fact = self.reader.read(str(getattr(event, "body", "")))
        if fact is None or not fact.room_id:
            return set()
        return self.apply_fact(fact, int(getattr(event, "server_timestamp", 0) or 0))

    def apply_fact(self, fact: CaseFact, ts_ms: int) -> set[str]:
        entry = self.entry(fact.room_id)
        f = fact.fields
        if fact.kind == "brief.new":
            if entry.brief is not None and entry.brief.received_ms > ts_ms:
                return set()
            risk = self.reader.risk_level(f.get("risk", "")) or "low"
            entry.brief = Brief(
                pseudonym=clean_text(f.get("pseudonym", ""), 80),
                language=clean_text(f.get("language", ""), 20),
                country=clean_text(f.get("country", ""), 80),
                topic=clean_text(f.get("topic", ""), 120),
                consent_date=clean_text(f.get("consent_date", ""), 40),
                risk=risk,
                screening=screening_lines(clean_text(f.get("screening", ""), 2000)),
                received_ms=ts_ms,
            )
            if not entry.risk_set_ms or entry.risk_set_ms < ts_ms:
                entry.risk = risk
                entry.risk_set_ms = ts_ms
        elif fact.kind in ("page.crisis", "page.urgent"):
            if entry.risk_set_ms < ts_ms:
                entry.risk = "high"
                entry.risk_set_ms = ts_ms
        elif fact.kind == "digest.line":
            level = self.reader.risk_level(f.get("risk", ""))
            if level and entry.risk_set_ms < ts_ms:
                entry.risk = level
                entry.risk_set_ms = ts_ms
        elif fact.kind == "booking.counselor_new":
            when = clean_text(f.get("when", ""), 80)
            if when and when not in entry.bookings:
                entry.bookings.append(when)
        elif fact.kind == "booking.counselor_cancelled":
            when = clean_text(f.get("when", ""), 80)
            if when in entry.bookings:
                entry.bookings.remove(when)
        return {fact.room_id}

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        # Only the service's bot adds us to rooms; other invitations wait for
        # the counselor's own Matrix client.
        if (
            event.state_key == self.me
            and event.membership == "invite"
            and event.sender == self.bot_id
        ):
            await self.session.client.join(room.room_id)

    async def _on_member(self, room: MatrixRoom, event: RoomMemberEvent) -> None:
        if event.state_key == self.me and event.membership in ("leave", "ban"):
            if room.room_id in self.session_rooms:
                self.session_rooms.discard(room.room_id)
                self.on_change({room.room_id})
        else:
            self._classify(room)

    # ------------------------------------------------------------------ history

    async def load_history(self, rooms: Iterable[str] | None = None, *, limit: int = 40) -> None:
        """Fetch the recent timeline of each room (a restart starts from the saved
        sync token, so history comes from here). A few requests at a time."""
        client = self.session.client
        targets = list(rooms) if rooms is not None else list(client.rooms)
        gate = asyncio.Semaphore(6)

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
                    resp = await client.room_messages(room_id, start=token, limit=depth)
                if isinstance(resp, RoomMessagesError):
                    logger.warning("history of a room could not be read: %s", resp.status_code)
                    break
                for event in reversed(resp.chunk):
                    changed |= self.ingest(room, event)
                if not resp.chunk or not resp.end or resp.end == token:
                    break
                token = resp.end
            return changed

        results = await asyncio.gather(*(one(r) for r in targets), return_exceptions=True)
        changed: set[str] = set()
        for r in results:
            if isinstance(r, BaseException):
                logger.warning("history fetch failed: %s", type(r).__name__)
            else:
                changed |= r
        if changed:
            self.on_change(changed)

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
        return await self.session.send_text(room_id, body)
