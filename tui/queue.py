"""The counselor's queue as plain data: who is waiting, in what order, and the reply round.

No Textual and no Matrix here. The Matrix adapter feeds in messages (sender, time,
body) and case-channel facts (brief, risk, booking); the widgets read the order
back. Everything takes ``now`` explicitly, so the unit tests need no clock.

Order, from the counseling practice this app follows: clients at high risk first;
then everyone awaiting a reply, longest wait first; then the rest, most recent
activity first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time

RISK_RANK = {"high": 0, "medium": 1, "low": 2}

Kind = str  # "client" | "counselor" | "bot" | "other"


@dataclass(frozen=True)
class Message:
    """One timeline event of a session room, as the thread shows it."""

    event_id: str
    sender: str
    ts_ms: int
    body: str
    kind: Kind
    notice: bool = False
    undecryptable: bool = False
    sender_key: str | None = None


@dataclass
class Brief:
    """What the case channel told us about a client (parsed from the bot's brief)."""

    pseudonym: str = ""
    language: str = ""
    country: str = ""
    topic: str = ""
    risk: str = ""
    consent_date: str = ""
    screening: tuple[str, ...] = ()
    received_ms: int = 0


@dataclass
class ClientEntry:
    """One active client (= one session room) and what the queue shows about them."""

    room_id: str
    client_id: str = ""
    brief: Brief | None = None
    risk: str = "low"
    risk_set_ms: int = 0
    bookings: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_up_to_ms: int = 0
    closed: bool = False
    _seen: set[str] = field(default_factory=set, repr=False)

    @property
    def pseudonym(self) -> str:
        if self.brief is not None and self.brief.pseudonym:
            return self.brief.pseudonym
        return "(no brief yet)"

    def add(self, message: Message) -> bool:
        """Add a message in time order; False if it was already there (sync and
        history fetches overlap)."""
        if message.event_id in self._seen:
            return False
        self._seen.add(message.event_id)
        msgs = self.messages
        if not msgs or msgs[-1].ts_ms <= message.ts_ms:
            msgs.append(message)
        else:
            i = len(msgs)
            while i > 0 and msgs[i - 1].ts_ms > message.ts_ms:
                i -= 1
            msgs.insert(i, message)
        return True

    @property
    def awaiting_since_ms(self) -> int | None:
        """Time of the first client message after the counselor's last one.

        Bot notices do not count as a reply: a client is awaiting until a
        person answers.
        """
        since: int | None = None
        for m in reversed(self.messages):
            if m.kind == "counselor":
                break
            if m.kind == "client":
                since = m.ts_ms
        return since

    @property
    def awaiting(self) -> bool:
        return self.awaiting_since_ms is not None and not self.closed

    @property
    def unread(self) -> int:
        last_reply = max((m.ts_ms for m in self.messages if m.kind == "counselor"), default=0)
        mark = max(self.read_up_to_ms, last_reply)
        return sum(1 for m in self.messages if m.kind == "client" and m.ts_ms > mark)

    @property
    def last_activity_ms(self) -> int:
        return self.messages[-1].ts_ms if self.messages else 0

    def mark_read(self) -> None:
        self.read_up_to_ms = max(self.read_up_to_ms, self.last_activity_ms)

    @property
    def next_booking(self) -> str | None:
        return self.bookings[0] if self.bookings else None


def sort_key(entry: ClientEntry) -> tuple[int, int, int]:
    """High risk, then awaiting (oldest first), then the rest (latest activity first)."""
    high = 0 if entry.risk == "high" else 1
    since = entry.awaiting_since_ms if not entry.closed else None
    if since is not None:
        return (high, 0, since)
    return (high, 1, -entry.last_activity_ms)


def order(entries: Iterable[ClientEntry]) -> list[ClientEntry]:
    """The queue, in the order the counselor works it (closed clients left out)."""
    return sorted((e for e in entries if not e.closed), key=lambda e: (*sort_key(e), e.room_id))


def format_wait(ms: int) -> str:
    """A waiting time as the queue shows it: "3 h 12 m", "2 d 4 h", "5 m"."""
    minutes = max(ms, 0) // 60_000
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} m"
    return f"{mins} m"


# ---------------------------------------------------------------------- reply rounds


def parse_windows(values: Sequence[str]) -> tuple[time, ...]:
    """``["09:00", "13:00"]`` as sorted times; a bad value raises ValueError."""
    out = []
    for v in values:
        hh, mm = v.strip().split(":")
        out.append(time(int(hh), int(mm)))
    return tuple(sorted(out))


def round_number(now: datetime, windows: Sequence[time]) -> int:
    """Which of today's reply windows ``now`` belongs to (1-based; before the first
    window counts as the first)."""
    passed = sum(1 for w in windows if now.time() >= w)
    return max(1, passed)


@dataclass
class ReplyRound:
    """A walk through the clients awaiting a reply, fixed in queue order at its start.

    Clients who start waiting during the round are left for the next one, so the
    round has an end; the counter says how many are left.
    """

    room_ids: list[str]
    number: int
    of: int
    position: int = 0
    done: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, entries: Iterable[ClientEntry], number: int, of: int) -> ReplyRound:
        return cls([e.room_id for e in order(entries) if e.awaiting], number, of)

    @property
    def current(self) -> str | None:
        if 0 <= self.position < len(self.room_ids):
            return self.room_ids[self.position]
        return None

    @property
    def left(self) -> int:
        return sum(1 for r in self.room_ids if r not in self.done)

    @property
    def finished(self) -> bool:
        return self.current is None

    def advance(self) -> str | None:
        """Mark the current client done and move to the next; the next room id or None."""
        cur = self.current
        if cur is not None:
            self.done.add(cur)
        self.position += 1
        return self.current

    def label(self) -> str:
        if self.finished:
            return f"Round {self.number} of {self.of} today · done"
        return f"Round {self.number} of {self.of} today · {self.left} left"
