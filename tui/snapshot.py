"""The queue as it was at the last quit, sealed on this machine: a start shows it at once.

Counselors are offline for hours and start the app often; signing in, the first
sync and the history of every room take seconds. The app keeps what the queue and
each client's card need (brief, risk, pages, bookings, flags, the recent turns
that say who waits since when) in one sealed file beside the notes, under the
same passphrase-derived key and its own sealing context. On start it is shown
as soon as the passphrase opens the store; what arrives from the homeserver
then updates the rows in place.

The file is rewritten whole, atomically (temporary file, fsync, rename, 0600),
a moment after the model changes, at once when a client is released, and on
quit. Nothing in it is readable without the passphrase. A file that is missing,
damaged or written for another account is not used: the app starts as it would
without one, and says so in its log without any content.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from e2ecounsel.errors import SealingError
from e2ecounsel.sealing import Sealer
from tui.notes import write_private
from tui.queue import Brief, ClientEntry, Message, Page

logger = logging.getLogger(__name__)
T = TypeVar("T")

SNAPSHOT_FILE = "queue.sealed"
_CONTEXT = "tui.queue-snapshot"
_VERSION = 1
#: The recent turns kept per client: as many as the history reads at start.
KEEP_MESSAGES = 40
#: Pages kept (open and taken), newest first.
KEEP_PAGES = 200


@dataclass
class Remembered:
    """What the link knew about the queue: its clients and the case channel."""

    entries: list[ClientEntry] = field(default_factory=list)
    named_ms: dict[str, int] = field(default_factory=dict)  # room -> latest brief
    pages: list[Page] = field(default_factory=list)
    case_rooms: dict[str, int] = field(default_factory=dict)  # case channel -> latest event
    briefed_rooms: set[str] = field(default_factory=set)


class QueueSnapshot:
    """The sealed snapshot file of one account."""

    def __init__(self, path: Path, sealer: Sealer, user_id: str) -> None:
        self.path = path
        self._sealer = sealer
        self.user_id = user_id
        #: What :meth:`read` found (None: nothing usable).
        self.loaded: Remembered | None = None
        self._writing = threading.Lock()
        self._taken = 0
        self._written = 0

    def read(self) -> Remembered | None:
        """Open the file (slow parts only: call it off the event loop); None when
        there is none or it cannot be used."""
        self.loaded = None
        if not self.path.exists():
            return None
        try:
            raw = self._sealer.open_text(self.path.read_bytes(), context=_CONTEXT)
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("v") != _VERSION:
                raise ValueError("unknown version")
            if data.get("user") != self.user_id:
                logger.warning("queue snapshot not used: it belongs to another account")
                return None
            self.loaded = decode(data)
        except (OSError, SealingError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("queue snapshot not used: %s", type(exc).__name__)
            return None
        return self.loaded

    def write(self, remembered: Remembered) -> None:
        """Seal and replace the file now."""
        self.write_prepared(self.prepare(remembered))

    def prepare(self, remembered: Remembered) -> Prepared:
        """The model's state as plain data, taken now (on the event loop: the model
        keeps changing); :meth:`write_prepared` may then run in a thread."""
        data = encode(remembered)
        data["user"] = self.user_id
        self._taken += 1
        return Prepared(self._taken, data)

    def write_prepared(self, prepared: Prepared) -> None:
        """Seal and replace the file (the slow part: JSON, sealing, fsync), unless a
        state taken later was written already. One write at a time."""
        with self._writing:
            if prepared.seq <= self._written:
                return
            text = json.dumps(prepared.data, separators=(",", ":"))
            blob = self._sealer.seal(text, context=_CONTEXT)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.path, blob)
            self._written = prepared.seq


@dataclass(frozen=True)
class Prepared:
    """A snapshot's content taken at one moment (``seq`` orders the moments)."""

    seq: int
    data: dict[str, Any]


# ---------------------------------------------------------------------- encoding


def _message(m: Message) -> list[Any]:
    return [m.event_id, m.sender, m.ts_ms, m.body, m.kind, m.notice, m.undecryptable, m.sender_key]


def _entry(e: ClientEntry, named_ms: int) -> dict[str, Any]:
    return {
        "room": e.room_id,
        "client": e.client_id,
        "named_ms": named_ms,
        "brief": asdict(e.brief) if e.brief is not None else None,
        "engagement": e.engagement,
        "risk": e.risk,
        "risk_ms": e.risk_set_ms,
        "bookings": {k: v.isoformat() for k, v in e.bookings.items()},
        "flags": dict(e.flags),
        "open_pages": dict(e.open_pages),
        "messages": [_message(m) for m in e.messages[-KEEP_MESSAGES:]],
        "read_ms": e.read_up_to_ms,
        "closed_ms": e.closed_ms,
        "outcome": e.outcome,
    }


def encode(r: Remembered) -> dict[str, Any]:
    pages = sorted(r.pages, key=lambda p: -p.ts_ms)[:KEEP_PAGES]
    return {
        "v": _VERSION,
        "clients": [_entry(e, r.named_ms.get(e.room_id, 0)) for e in r.entries],
        "pages": [asdict(p) for p in pages],
        "case_rooms": dict(r.case_rooms),
        "briefed": sorted(r.briefed_rooms),
    }


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not a number")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _strs(values: Any) -> tuple[str, ...]:
    return tuple(_str(v) for v in values)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a yes/no")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


#: How a field of each annotated type is read back (the dataclasses' own annotations).
_READ: dict[str, Callable[[Any], Any]] = {
    "str": _str,
    "int": _int,
    "bool": _bool,
    "tuple[str, ...]": _strs,
    "int | None": _opt_int,
    "str | None": _opt_str,
}


def _dataclass(cls: type[T], d: dict[str, Any]) -> T:
    """A :class:`Brief` or :class:`Page` from its ``asdict``, every value checked."""
    return cls(**{f.name: _READ[str(f.type)](d[f.name]) for f in fields(cls)})  # type: ignore[arg-type]


def _decode_message(m: list[Any]) -> Message:
    event_id, sender, ts, body, kind, notice, undecryptable, sender_key = m
    return Message(
        event_id=_str(event_id),
        sender=_str(sender),
        ts_ms=_int(ts),
        body=_str(body),
        kind=_str(kind),
        notice=bool(notice),
        undecryptable=bool(undecryptable),
        sender_key=_opt_str(sender_key),
    )


def _decode_entry(d: dict[str, Any]) -> ClientEntry:
    entry = ClientEntry(
        _str(d["room"]),
        client_id=_str(d["client"]),
        brief=_dataclass(Brief, d["brief"]) if d["brief"] is not None else None,
        engagement=_opt_int(d["engagement"]),
        risk=_str(d["risk"]),
        risk_set_ms=_int(d["risk_ms"]),
        bookings={_str(k): datetime.fromisoformat(_str(v)) for k, v in d["bookings"].items()},
        flags={_str(k): _int(v) for k, v in d["flags"].items()},
        open_pages={_str(k): _int(v) for k, v in d["open_pages"].items()},
        read_up_to_ms=_int(d["read_ms"]),
        closed_ms=_int(d["closed_ms"]),
        outcome=_str(d["outcome"]),
    )
    for m in d["messages"]:
        entry.add(_decode_message(m))
    return entry


def decode(data: dict[str, Any]) -> Remembered:
    """The snapshot's content; TypeError, KeyError or ValueError on anything malformed."""
    out = Remembered()
    for d in data["clients"]:
        entry = _decode_entry(d)
        out.entries.append(entry)
        out.named_ms[entry.room_id] = _int(d["named_ms"])
    out.pages = [_dataclass(Page, p) for p in data["pages"]]
    out.case_rooms = {_str(k): _int(v) for k, v in data["case_rooms"].items()}
    out.briefed_rooms = set(_strs(data["briefed"]))
    return out
