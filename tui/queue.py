"""The counselor's queue as plain data: who is waiting, in what order, and the reply round.

No Textual and no Matrix here. The Matrix adapter feeds in messages (sender, time,
body) and case-channel facts (brief, risk, booking); the widgets read the order
back. Everything takes ``now`` explicitly, so the unit tests need no clock.

Order, from the counseling practice this app follows: by risk (high first; a client
with an open crisis page counts as high whatever their level says); within a level,
flagged clients (e.g. asked the crisis check question and said no) first, then
everyone awaiting a reply, longest wait first; then the rest, most recent activity
first; closed engagements (read-only threads) last. Open crisis pages are not
clients: the app shows them as alerts above the queue.

A client in an active crisis (an open page, or risk high) is *urgent*: every message
of theirs is shown and rung as urgent, whether or not the bot sent a new page (it
does not repeat pages for the same client within its window).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time

from e2ecounsel.casechannel import RISKS

RISK_RANK: dict[str, int] = {level: rank for rank, level in enumerate(RISKS)}
#: The flag of a crisis check answered "no" (case channel ``flag`` or a brief's ``flags``).
CHECK_NO = "check:no"
#: How long before a crisis began a client message still counts as part of it: the
#: message that made the bot page arrives a moment before the page itself.
URGENT_LEAD_MS = 5 * 60_000

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
    """What the case channel told us about a client (the bot's brief)."""

    pseudonym: str = ""
    language: str = ""
    country: str = ""
    topic: str = ""
    risk: str = ""
    consent_date: str = ""
    screening: tuple[str, ...] = ()
    critical: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    shared: bool = True
    received_ms: int = 0


@dataclass
class Page:
    """A crisis page from the case channel, open until someone takes it."""

    page_id: str
    ts_ms: int
    reason: str = ""
    engagement: int | None = None
    room_id: str | None = None
    client_room: str | None = None
    taken_by: str = ""


@dataclass(frozen=True)
class Alert:
    """Something the counselor should notice now: the app rings and shows a toast.

    ``kind`` is "page", "take", "message", "released", "closed", "flag" or "said"
    (a reply, reminder or notice of the bot); the bot's own text is in ``text``. A
    message is ``urgent`` when its client was in an active crisis.
    """

    kind: str
    room_id: str = ""
    text: str = ""
    ok: bool = True
    live: bool = True
    urgent: bool = False


@dataclass
class ClientEntry:
    """One active client (= one session room) and what the queue shows about them."""

    room_id: str
    client_id: str = ""
    brief: Brief | None = None
    engagement: int | None = None
    risk: str = "low"
    risk_set_ms: int = 0
    bookings: dict[str, datetime] = field(default_factory=dict)  # booking id -> start
    flags: dict[str, int] = field(default_factory=dict)  # reason -> latest time
    open_pages: dict[str, int] = field(default_factory=dict)  # page id -> time
    messages: list[Message] = field(default_factory=list)
    read_up_to_ms: int = 0
    closed_ms: int = 0
    outcome: str = ""
    _seen: set[str] = field(default_factory=set, repr=False)

    @property
    def closed(self) -> bool:
        """Closed by the bot after the latest brief (a new brief opens it again)."""
        return self.closed_ms > (self.brief.received_ms if self.brief is not None else 0)

    @property
    def pseudonym(self) -> str:
        if self.brief is not None and self.brief.pseudonym:
            return self.brief.pseudonym
        return "(no brief yet)"

    def flag(self, reason: str, ts_ms: int) -> bool:
        """Record a flag (the latest time it was raised); False if nothing changed."""
        if self.flags.get(reason, -1) >= ts_ms:
            return False
        self.flags[reason] = ts_ms
        return True

    @property
    def checked_no_ms(self) -> int | None:
        """When the client last answered the crisis check question "no" (None: never)."""
        return self.flags.get(CHECK_NO)

    @property
    def urgent_since_ms(self) -> int | None:
        """Start of the active crisis (the oldest open page, or when risk became
        high); None when there is none. A closed case is never urgent."""
        if self.closed:
            return None
        starts = list(self.open_pages.values())
        if self.risk == "high":
            starts.append(self.risk_set_ms)
        return min(starts) if starts else None

    @property
    def urgent(self) -> bool:
        return self.urgent_since_ms is not None

    def is_urgent(self, message: Message) -> bool:
        """A client message written during the active crisis (or just before it
        began: the one that started it)."""
        since = self.urgent_since_ms
        return (
            since is not None
            and message.kind == "client"
            and message.ts_ms >= since - URGENT_LEAD_MS
        )

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
        """The earliest booked live session, in this machine's time zone."""
        if not self.bookings:
            return None
        return format_when(min(self.bookings.values()))


def format_when(when: datetime) -> str:
    """A booking's start as the queue and the card show it (local time)."""
    return when.astimezone().strftime("%a %d %b %H:%M")


def sort_key(entry: ClientEntry) -> tuple[int, int, int, int, int]:
    """Closed last; then by risk (high first, and so anyone urgent); within a level
    the flagged first, then awaiting (oldest first), then the rest (latest activity
    first)."""
    if entry.closed:
        return (1, 0, 1, 1, -entry.last_activity_ms)
    rank = 0 if entry.urgent else RISK_RANK.get(entry.risk, len(RISKS))
    flagged = 0 if entry.flags else 1
    since = entry.awaiting_since_ms
    if since is not None:
        return (0, rank, flagged, 0, since)
    return (0, rank, flagged, 1, -entry.last_activity_ms)


QueueKey = tuple[int, int, int, int, int, str]


def queue_key(entry: ClientEntry) -> QueueKey:
    """Where a client stands in the queue (:func:`sort_key`, then the room id)."""
    return (*sort_key(entry), entry.room_id)


def order(entries: Iterable[ClientEntry]) -> list[ClientEntry]:
    """The queue, in the order the counselor works it."""
    return sorted(entries, key=queue_key)


class QueueOrder:
    """The queue's order, kept up to date one client at a time.

    Sorting the whole queue on every message costs what the queue holds; a
    changed client only needs its own place looked up again (a bisection). The
    order does not depend on the clock, so the 30 s tick leaves it alone.
    """

    def __init__(self, entries: Iterable[ClientEntry] = ()) -> None:
        self._keys: list[QueueKey] = []
        self._ids: list[str] = []
        self._key_of: dict[str, QueueKey] = {}
        self._awaiting: set[str] = set()
        self.rebuild(entries)

    def rebuild(self, entries: Iterable[ClientEntry]) -> None:
        """The order from scratch (a start, a restored snapshot, history read)."""
        entries = list(entries)
        self._key_of = {e.room_id: queue_key(e) for e in entries}
        self._keys = sorted(self._key_of.values())
        self._ids = [key[-1] for key in self._keys]
        self._awaiting = {e.room_id for e in entries if e.awaiting}

    @property
    def ids(self) -> Sequence[str]:
        """The clients' room ids, in the order the counselor works them."""
        return self._ids

    @property
    def awaiting(self) -> int:
        """How many clients await a reply."""
        return len(self._awaiting)

    def __len__(self) -> int:
        return len(self._ids)

    def update(self, room_id: str, entry: ClientEntry | None) -> bool:
        """Take one client's change (``None``: no longer in the queue); True when
        the order or the membership changed."""
        if entry is not None and entry.awaiting:
            self._awaiting.add(room_id)
        else:
            self._awaiting.discard(room_id)
        old = self._key_of.get(room_id)
        new = None if entry is None else queue_key(entry)
        if old == new:
            return False
        was = -1
        if old is not None:
            was = bisect_left(self._keys, old)
            del self._keys[was]
            del self._ids[was]
            del self._key_of[room_id]
        if new is None:
            return True
        at = bisect_left(self._keys, new)
        self._keys.insert(at, new)
        self._ids.insert(at, room_id)
        self._key_of[room_id] = new
        return at != was


def open_pages(pages: Iterable[Page]) -> list[Page]:
    """Pages nobody took yet, newest first: the alerts above the queue."""
    return sorted((p for p in pages if not p.taken_by), key=lambda p: (-p.ts_ms, p.page_id))


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
