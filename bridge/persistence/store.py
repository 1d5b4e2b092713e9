"""Typed access to the bridge's main tables (clients, counselors, engagements, rooms, outbox).

Each method is one short query (or a few inside one transaction) and holds no
business rule: matching, crisis handling and the intake live in
``e2ecounsel.domain`` and the bridge's handlers. Callers group several calls
atomically with ``async with store.transaction():``.

Sensitive values go through sealed columns, each with its own context
(``clients.intake``, ``clients.profile``, ``clients.pending``,
``outbox.content``, ``engagements.survey_comment``), so the database file
alone reveals nothing a client said. Times are ISO-8601 UTC strings with
milliseconds from the injected clock (a fixed width, so they sort as text);
Matrix timestamps (``origin_server_ts``) stay integers in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from bridge.persistence import audit
from bridge.persistence.audit import AuditLine, AuditReport
from bridge.persistence.markers import is_marked, prune_leaving_markers
from bridge.persistence.schema import MIGRATIONS
from e2ecounsel.errors import StorageError
from e2ecounsel.sealing import Sealer, load_or_create_key
from e2ecounsel.store import Database, IntegrityError, Row

RoomKind = Literal["dm", "session", "case", "supervisors"]

_ENGAGEMENT_COLUMNS = (
    "id, client_id, counselor_id, room_id, status, risk, crisis, outcome, share_brief, "
    "opened_at, assigned_at, closed_at, last_client_ts, last_counselor_ts, awaiting_since, "
    "survey_score"
)
_COUNSELOR_COLUMNS = (
    "user_id, name, credentials, languages, specialties, capacity, timezone, reply_windows, "
    "on_call, active, case_room_id"
)
_CLIENT_COLUMNS = (
    "user_id, dm_room_id, language, consent_version, consented_at, intake, profile, pending, "
    "created_at"
)


#: The bridge's files inside a data dir.
DB_FILE = "bridge.db"
KEY_FILE = "sealing.key"


def utcnow() -> datetime:
    """The default clock: now, in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """The stored form of a time: ISO-8601 in UTC with milliseconds (fixed width)."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _prepare_data_dir(root: Path, create: bool, database: str | Path | None) -> bytes:
    """The sealing key of ``root``, creating the folder and key when ``create``."""
    target = root / DB_FILE if database is None else database
    if not create and isinstance(target, Path) and not target.is_file():
        where = f"in {root}" if database is None else f"at {target}"
        raise StorageError(
            f"no bridge database {where}; check --data-dir or --config "
            "(the database appears with the first `counselor add` or `up`)"
        )
    root.mkdir(parents=True, exist_ok=True)
    return load_or_create_key(root / KEY_FILE)


class DuplicateError(StorageError):
    """A row that must be unique exists already (a counselor, an open engagement)."""


def _refused(exc: IntegrityError, duplicate: str, other: str) -> StorageError:
    """Turn a constraint failure into our error; the database's text names only the constraint."""
    if exc.unique:
        return DuplicateError(duplicate)
    return StorageError(f"{other} ({exc})")


@dataclass(frozen=True)
class ClientRecord:
    """A client as the bridge keeps them. ``intake``, ``profile`` and ``pending`` are sealed.

    ``created_at`` may be left empty for a new client; :meth:`BridgeStore.save_client`
    fills it in on first save and returns the stored record.
    """

    user_id: str
    dm_room_id: str | None = None
    language: str | None = None
    consent_version: str | None = None
    consented_at: str | None = None
    intake: dict[str, Any] | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] | None = None
    created_at: str = ""


@dataclass(frozen=True)
class Counselor:
    """A counselor on the roster (``active`` false once removed; the row stays for history)."""

    user_id: str
    name: str
    credentials: str
    languages: tuple[str, ...]
    specialties: tuple[str, ...]
    capacity: int
    timezone: str
    reply_windows: tuple[str, ...]
    on_call: bool = False
    active: bool = True
    case_room_id: str | None = None


@dataclass(frozen=True)
class FailedFollowUp:
    """A follow-up given up on (see :meth:`BridgeStore.failed_followups`)."""

    id: int
    kind: str
    attempts: int
    created_at: str
    failed_at: str


@dataclass(frozen=True)
class PendingFollowUp:
    """A follow-up row not done yet (see :mod:`bridge.kernel.work`)."""

    id: int
    key: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    failures: int  # attempts that count towards giving up


@dataclass(frozen=True)
class RoomRequest:
    """A room the bot is creating for ``purpose`` (see :meth:`BridgeStore.request_room`)."""

    purpose: str
    counselor_id: str
    attempted_at: str | None
    room_id: str | None


@dataclass(frozen=True)
class Engagement:
    """One client–counselor relationship: ``waiting`` (no counselor yet), ``active``, ``closed``.

    ``last_client_ts``, ``last_counselor_ts`` and ``awaiting_since`` are
    ``origin_server_ts`` values in milliseconds; ``awaiting_since`` is the
    client's oldest unanswered message.
    """

    id: int
    client_id: str
    counselor_id: str | None
    room_id: str | None
    status: str
    risk: str
    crisis: bool
    outcome: str | None
    share_brief: bool
    opened_at: str
    assigned_at: str | None
    closed_at: str | None
    last_client_ts: int | None
    last_counselor_ts: int | None
    awaiting_since: int | None
    survey_score: int | None = None


#: ``handled_events`` ids of pruned follow-ups (a Matrix event id starts with ``$``).
FOLLOWUP_MARKER = "followup:"

#: Content marker (removed before queueing): the user id a message is about.
ABOUT = "org.e2ecounsel.about"


@dataclass(frozen=True)
class OutboxItem:
    """A message decided but maybe not yet sent; ``txn_id`` makes the send idempotent."""

    txn_id: str
    room_id: str
    content: dict[str, Any]


@dataclass(frozen=True)
class OutboxMark:
    """See :meth:`BridgeStore.outbox_mark`."""

    begun: int
    ended: int
    cuts: int

    def after(self, calls: int) -> OutboxMark:
        """The mark once ``calls`` more queue calls began and ended in the room."""
        return OutboxMark(self.begun + calls, self.ended + calls, self.cuts)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _engagement(row: Row) -> Engagement:
    return Engagement(
        id=int(row["id"]),
        client_id=str(row["client_id"]),
        counselor_id=row["counselor_id"],
        room_id=row["room_id"],
        status=str(row["status"]),
        risk=str(row["risk"]),
        crisis=bool(row["crisis"]),
        outcome=row["outcome"],
        share_brief=bool(row["share_brief"]),
        opened_at=str(row["opened_at"]),
        assigned_at=row["assigned_at"],
        closed_at=row["closed_at"],
        last_client_ts=_opt_int(row["last_client_ts"]),
        last_counselor_ts=_opt_int(row["last_counselor_ts"]),
        awaiting_since=_opt_int(row["awaiting_since"]),
        survey_score=_opt_int(row["survey_score"]),
    )


def _counselor(row: Row) -> Counselor:
    return Counselor(
        user_id=str(row["user_id"]),
        name=str(row["name"]),
        credentials=str(row["credentials"]),
        languages=_split(str(row["languages"])),
        specialties=_split(str(row["specialties"])),
        capacity=int(row["capacity"]),
        timezone=str(row["timezone"]),
        reply_windows=_split(str(row["reply_windows"])),
        on_call=bool(row["on_call"]),
        active=bool(row["active"]),
        case_room_id=row["case_room_id"],
    )


def _counselor_params(c: Counselor) -> dict[str, Any]:
    return {
        "user_id": c.user_id,
        "name": c.name,
        "credentials": c.credentials,
        "languages": ",".join(c.languages),
        "specialties": ",".join(c.specialties),
        "capacity": c.capacity,
        "timezone": c.timezone,
        "reply_windows": ",".join(c.reply_windows),
        "on_call": int(c.on_call),
        "active": int(c.active),
        "case_room_id": c.case_room_id,
    }


class BridgeStore:
    """The bridge's tables over one :class:`Database` (which must have a sealer)."""

    def __init__(
        self, db: Database, sealer: Sealer, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self._clock = clock
        self._audit_key = sealer.subkey("audit")
        #: room -> [queue calls begun, queue calls ended] in this process; with
        #: ``_outbox_cuts`` (deletions of queued rows) what :meth:`outbox_mark` reports.
        self._queue_calls: dict[str, list[int]] = {}
        self._outbox_cuts = 0

    @classmethod
    async def open(
        cls, path: Path | str, sealer: Sealer, *, clock: Callable[[], datetime] = utcnow
    ) -> BridgeStore:
        """Open (creating and migrating when needed) the bridge database.

        ``path`` is an SQLite file or a ``postgresql://`` URL.
        """
        db = await Database.open(path, MIGRATIONS, sealer=sealer)
        return cls(db, sealer, clock=clock)

    @classmethod
    async def open_data_dir(
        cls,
        root: Path,
        *,
        create: bool = True,
        clock: Callable[[], datetime] = utcnow,
        database: str | Path | None = None,
    ) -> BridgeStore:
        """Open ``root/bridge.db`` sealed with the key in ``root/sealing.key`` (or the env).

        ``database`` (the config's setting) replaces ``root/bridge.db``. With
        ``create=False`` a missing SQLite file is a :class:`StorageError`
        instead of a new empty one (commands that only read or change rows).
        """
        key = await asyncio.to_thread(_prepare_data_dir, root, create, database)
        target = database if database is not None else root / DB_FILE
        return await cls.open(target, Sealer(key), clock=clock)

    async def close(self) -> None:
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[BridgeStore]:
        """Group several calls atomically (nested: a savepoint)."""
        async with self.db.transaction():
            yield self

    def _now(self) -> str:
        return iso(self._clock())

    def _seal_json(self, value: dict[str, Any] | None, context: str) -> bytes | None:
        if value is None:
            return None
        return self.db.seal(json.dumps(value, ensure_ascii=False), context=context)

    def _open_json(self, blob: bytes | None, context: str) -> dict[str, Any] | None:
        if blob is None:
            return None
        value = json.loads(self.db.open_sealed(blob, context=context))
        if not isinstance(value, dict):
            raise StorageError(f"sealed column {context} does not hold an object")
        return value

    # ------------------------------------------------------------------ events

    async def is_handled(self, event_id: str) -> bool:
        return await is_marked(self.db, event_id)

    async def mark_handled(self, event_id: str) -> bool:
        """Record ``event_id``; True if it was new (False: someone handled it already)."""
        result = await self.db.execute(
            "INSERT INTO handled_events (event_id, handled_at) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            (event_id, self._now()),
        )
        return result.rowcount == 1

    async def purge_handled(self, older_than: timedelta) -> int:
        """Forget markers written before ``now - older_than`` (see :mod:`.pruning` for how long)."""
        result = await self.db.execute(
            "DELETE FROM handled_events WHERE handled_at < ?",
            (iso(self._clock() - older_than),),
        )
        return result.rowcount

    # ------------------------------------------------------------------ outbox

    async def queue(self, room_id: str, content: dict[str, Any], txn_id: str) -> bool:
        """Queue a send; True if queued, False if ``txn_id`` was queued before."""
        return await self.queue_item(room_id, content, txn_id) is not None

    async def queue_item(
        self, room_id: str, content: dict[str, Any], txn_id: str
    ) -> OutboxItem | None:
        """Queue a send; the row as :meth:`unsent` would read it, or None if ``txn_id``
        was queued before.

        A message about a client (``ABOUT`` in its content) is tagged with a
        keyed hash of them, so erasing the client finds it in any room.
        """
        content = dict(content)
        about = content.pop(ABOUT, None)
        subject = self.actor_ref(str(about)) if about else None
        text = json.dumps(content, ensure_ascii=False)
        calls = self._queue_calls.setdefault(room_id, [0, 0])
        calls[0] += 1
        try:
            result = await self.db.execute(
                "INSERT INTO outbox (txn_id, room_id, content, created_at, subject) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    txn_id,
                    room_id,
                    self.db.seal(text, context="outbox.content"),
                    self._now(),
                    subject,
                ),
            )
        finally:
            calls[1] += 1
        if result.rowcount != 1:
            return None
        return OutboxItem(txn_id, room_id, json.loads(text))

    def outbox_mark(self, room_id: str) -> OutboxMark:
        """Where the outbox of ``room_id`` stands in this process: queue calls begun and
        ended there, and deletions of queued rows anywhere.

        The sender compares two marks to know, without a read, that the rows a step
        just queued are all that is unsent in a room (see ``Bridge.send_queued``).
        Every row of the outbox is queued through this store, in this process.
        """
        begun, ended = self._queue_calls.get(room_id, (0, 0))
        return OutboxMark(begun, ended, self._outbox_cuts)

    async def events_about(self, user_id: str) -> list[tuple[str, str]]:
        """(room, event id) of every sent message about ``user_id`` (pruned ones included)."""
        rows = await self.db.fetchall(
            "SELECT room_id, event_id, created_at, 0 AS pruned, rowid FROM outbox"
            " WHERE subject = :subject AND event_id != '' AND event_id IS NOT NULL"
            " UNION ALL SELECT room_id, event_id, created_at, 1, rowid FROM sent_log"
            " WHERE subject = :subject ORDER BY created_at, pruned DESC, rowid",
            {"subject": self.actor_ref(user_id)},
        )
        return [(str(r["room_id"]), str(r["event_id"])) for r in rows]

    async def forget_about(self, user_id: str) -> None:
        subject = self.actor_ref(user_id)
        self._outbox_cuts += 1
        async with self.db.transaction():
            await self.db.execute("DELETE FROM outbox WHERE subject = ?", (subject,))
            await self.db.execute("DELETE FROM sent_log WHERE subject = ?", (subject,))

    async def set_close_note(self, engagement_id: int, note: str) -> None:
        await self.db.execute(
            "UPDATE engagements SET close_note = ? WHERE id = ?",
            (self.db.seal(note, context="engagements.close_note"), engagement_id),
        )

    async def unsent(self, room_id: str | None = None) -> list[OutboxItem]:
        """Queued sends not yet confirmed, oldest first (of one room, if given)."""
        where, params = ("AND room_id = ? ", (room_id,)) if room_id is not None else ("", ())
        rows = await self.db.fetchall(
            f"SELECT txn_id, room_id, content FROM outbox WHERE sent_at IS NULL {where}"
            "ORDER BY created_at, rowid",
            params,
        )
        return [
            OutboxItem(
                str(r["txn_id"]),
                str(r["room_id"]),
                self._open_json(r["content"], "outbox.content") or {},
            )
            for r in rows
        ]

    async def unsent_rooms(self) -> set[str]:
        rows = await self.db.fetchall("SELECT DISTINCT room_id FROM outbox WHERE sent_at IS NULL")
        return {str(r["room_id"]) for r in rows}

    async def mark_sent(self, txn_id: str, event_id: str) -> None:
        await self.db.execute(
            "UPDATE outbox SET sent_at = ?, event_id = ? WHERE txn_id = ?",
            (self._now(), event_id, txn_id),
        )

    async def sent_events(self, room_id: str) -> list[str]:
        """Event ids of the bot's sends in ``room_id`` on record, oldest first (to redact).

        Pruned sends (:meth:`purge_sent`) are still on record by their id.
        """
        rows = await self.db.fetchall(
            "SELECT event_id, created_at, 0 AS pruned, rowid FROM outbox"
            " WHERE room_id = :room AND event_id IS NOT NULL AND event_id != ''"
            " UNION ALL SELECT event_id, created_at, 1, rowid FROM sent_log WHERE room_id = :room"
            " ORDER BY created_at, pruned DESC, rowid",
            {"room": room_id},
        )
        return [str(r["event_id"]) for r in rows]

    async def forget_room(self, room_id: str) -> None:
        """Drop what is kept about ``room_id``: its outbox rows (sent or not), its
        rooms row, the request it was created by."""
        self._outbox_cuts += 1
        async with self.db.transaction():
            await self.db.execute("DELETE FROM outbox WHERE room_id = ?", (room_id,))
            await self.db.execute("DELETE FROM sent_log WHERE room_id = ?", (room_id,))
            await self.db.execute("DELETE FROM room_requests WHERE room_id = ?", (room_id,))
            await self.db.execute("DELETE FROM rooms WHERE room_id = ?", (room_id,))

    async def purge_sent(self, older_than: timedelta) -> int:
        """Delete sends confirmed before ``now - older_than`` with their sealed copies.

        What erasure needs to redact them (room, event id, subject) moves to
        ``sent_log``: the bot's old messages are still found and redacted when
        their client asks to be erased. Returns how many sends were pruned.
        """
        old = "sent_at IS NOT NULL AND sent_at < ?"
        cutoff = iso(self._clock() - older_than)
        async with self.db.transaction():
            await self.db.execute(
                "INSERT INTO sent_log (event_id, room_id, subject, created_at)"
                f" SELECT event_id, room_id, subject, created_at FROM outbox WHERE {old}"
                " AND event_id IS NOT NULL AND event_id != '' ON CONFLICT DO NOTHING",
                (cutoff,),
            )
            result = await self.db.execute(f"DELETE FROM outbox WHERE {old}", (cutoff,))
        return result.rowcount

    # ------------------------------------------------------------------ clients

    def _client(self, row: Row) -> ClientRecord:
        return ClientRecord(
            user_id=str(row["user_id"]),
            dm_room_id=row["dm_room_id"],
            language=row["language"],
            consent_version=row["consent_version"],
            consented_at=row["consented_at"],
            intake=self._open_json(row["intake"], "clients.intake"),
            profile=self._open_json(row["profile"], "clients.profile") or {},
            pending=self._open_json(row["pending"], "clients.pending"),
            created_at=str(row["created_at"]),
        )

    async def get_client(self, user_id: str) -> ClientRecord | None:
        row = await self.db.fetchone(
            f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE user_id = ?", (user_id,)
        )
        return None if row is None else self._client(row)

    async def client_by_dm(self, room_id: str) -> ClientRecord | None:
        row = await self.db.fetchone(
            f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE dm_room_id = ?", (room_id,)
        )
        return None if row is None else self._client(row)

    async def save_client(self, rec: ClientRecord) -> ClientRecord:
        """Insert or update ``rec``; returns it as stored (``created_at`` filled on insert)."""
        created_at = rec.created_at or self._now()
        try:
            stored = await self.db.fetchval(
                "INSERT INTO clients (user_id, dm_room_id, language, consent_version, "
                "consented_at, intake, profile, pending, created_at) "
                "VALUES (:user_id, :dm, :lang, :cv, :cat, :intake, :profile, :pending, :created) "
                "ON CONFLICT(user_id) DO UPDATE SET dm_room_id = excluded.dm_room_id, "
                "language = excluded.language, consent_version = excluded.consent_version, "
                "consented_at = excluded.consented_at, intake = excluded.intake, "
                "profile = excluded.profile, pending = excluded.pending RETURNING created_at",
                {
                    "user_id": rec.user_id,
                    "dm": rec.dm_room_id,
                    "lang": rec.language,
                    "cv": rec.consent_version,
                    "cat": rec.consented_at,
                    "intake": self._seal_json(rec.intake, "clients.intake"),
                    "profile": self._seal_json(rec.profile, "clients.profile"),
                    "pending": self._seal_json(rec.pending, "clients.pending"),
                    "created": created_at,
                },
            )
        except IntegrityError as exc:
            raise _refused(
                exc, "another client already uses this direct chat room", "client not saved"
            ) from exc
        return replace(rec, created_at=str(stored))

    async def page_rooms(self, user_id: str) -> list[str]:
        """The rooms where someone who took one of the client's pages met them."""
        rows = await self.db.fetchall(
            "SELECT DISTINCT room_id FROM pages WHERE client_id = ? AND room_id IS NOT NULL"
            " ORDER BY room_id",
            (user_id,),
        )
        return [str(r["room_id"]) for r in rows]

    async def delete_client(self, user_id: str) -> bool:
        """Erase a client: their row, their engagements (cascade) and their rooms rows.

        The outbox is left alone: the bridge still needs the event ids of its
        own messages to redact them, and a goodbye queued in the same
        transaction must still go out; :meth:`forget_room` clears each room
        afterwards. Their pages go too: read :meth:`page_rooms` first, the
        rooms a page's taker met them in must be cleared like their session
        rooms. Audit lines stay (they name nobody). True if the client existed.
        """
        async with self.db.transaction():
            await self.db.execute("DELETE FROM rooms WHERE user_id = ?", (user_id,))
            await self.db.execute("DELETE FROM pages WHERE client_id = ?", (user_id,))
            result = await self.db.execute("DELETE FROM clients WHERE user_id = ?", (user_id,))
        return result.rowcount == 1

    # ------------------------------------------------------------------ counselors

    async def add_counselor(self, c: Counselor) -> None:
        """Add ``c``; :class:`DuplicateError` if the id is on the roster already."""
        params = _counselor_params(c) | {"added_at": self._now()}
        try:
            await self.db.execute(
                "INSERT INTO counselors (user_id, name, credentials, languages, specialties, "
                "capacity, timezone, reply_windows, on_call, active, case_room_id, added_at) "
                "VALUES (:user_id, :name, :credentials, :languages, :specialties, :capacity, "
                ":timezone, :reply_windows, :on_call, :active, :case_room_id, :added_at)",
                params,
            )
        except IntegrityError as exc:
            raise _refused(
                exc, f"{c.user_id} is already on the roster", f"{c.user_id} not added"
            ) from exc

    async def update_counselor(self, c: Counselor) -> bool:
        """Replace every field of ``c`` (found by ``user_id``); True if it existed."""
        result = await self.db.execute(
            "UPDATE counselors SET name = :name, credentials = :credentials, "
            "languages = :languages, specialties = :specialties, capacity = :capacity, "
            "timezone = :timezone, reply_windows = :reply_windows, on_call = :on_call, "
            "active = :active, case_room_id = :case_room_id WHERE user_id = :user_id",
            _counselor_params(c),
        )
        return result.rowcount == 1

    async def get_counselor(self, user_id: str) -> Counselor | None:
        row = await self.db.fetchone(
            f"SELECT {_COUNSELOR_COLUMNS} FROM counselors WHERE user_id = ?", (user_id,)
        )
        return None if row is None else _counselor(row)

    async def counselor_by_case_room(self, room_id: str) -> Counselor | None:
        row = await self.db.fetchone(
            f"SELECT {_COUNSELOR_COLUMNS} FROM counselors WHERE case_room_id = ?", (room_id,)
        )
        return None if row is None else _counselor(row)

    async def list_counselors(self, *, active_only: bool = True) -> list[Counselor]:
        """The roster ordered by id (a stable order for matching and display)."""
        rows = await self.db.fetchall(
            f"SELECT {_COUNSELOR_COLUMNS} FROM counselors "
            "WHERE active = 1 OR :active_only = 0 ORDER BY user_id",
            {"active_only": int(active_only)},
        )
        return [_counselor(r) for r in rows]

    async def set_on_call(self, user_id: str, on: bool) -> bool:
        result = await self.db.execute(
            "UPDATE counselors SET on_call = ? WHERE user_id = ?", (int(on), user_id)
        )
        return result.rowcount == 1

    async def deactivate_counselor(self, user_id: str) -> bool:
        """Take a counselor off the roster (and off call); their rows stay for history."""
        result = await self.db.execute(
            "UPDATE counselors SET active = 0, on_call = 0 WHERE user_id = ?", (user_id,)
        )
        return result.rowcount == 1

    async def set_case_room(self, user_id: str, room_id: str | None) -> bool:
        result = await self.db.execute(
            "UPDATE counselors SET case_room_id = ? WHERE user_id = ?", (room_id, user_id)
        )
        return result.rowcount == 1

    # ------------------------------------------------------------------ engagements

    async def _engagement_where(self, where: str, params: Any = ()) -> Engagement | None:
        row = await self.db.fetchone(
            f"SELECT {_ENGAGEMENT_COLUMNS} FROM engagements WHERE {where}", params
        )
        return None if row is None else _engagement(row)

    async def _engagements_where(self, where: str, params: Any = ()) -> list[Engagement]:
        rows = await self.db.fetchall(
            f"SELECT {_ENGAGEMENT_COLUMNS} FROM engagements WHERE {where}", params
        )
        return [_engagement(r) for r in rows]

    async def open_engagement(
        self, client_id: str, *, crisis: bool = False, share_brief: bool = True
    ) -> Engagement:
        """A new ``waiting`` engagement; :class:`DuplicateError` if one is open already."""
        async with self.db.transaction():
            try:
                new_id = await self.db.fetchval(
                    "INSERT INTO engagements (client_id, status, crisis, share_brief, opened_at) "
                    "VALUES (?, 'waiting', ?, ?, ?) RETURNING id",
                    (client_id, int(crisis), int(share_brief), self._now()),
                )
            except IntegrityError as exc:
                raise _refused(
                    exc,
                    "this client already has an open engagement",
                    "engagement not opened: the client is not stored",
                ) from exc
            found = await self._engagement_where("id = ?", (new_id,))
        assert found is not None
        return found

    async def current_engagement(self, client_id: str) -> Engagement | None:
        """The client's engagement that is not closed, if any (at most one, by constraint)."""
        return await self._engagement_where("client_id = ? AND status != 'closed'", (client_id,))

    async def last_engagement(self, client_id: str) -> Engagement | None:
        """The client's most recent engagement, closed or not (for the survey, status)."""
        return await self._engagement_where("client_id = ? ORDER BY id DESC LIMIT 1", (client_id,))

    async def engagements_of_client(self, client_id: str) -> list[Engagement]:
        """Every engagement of the client, oldest first (closed ones included)."""
        return await self._engagements_where("client_id = ? ORDER BY id", (client_id,))

    async def get_engagement(self, engagement_id: int) -> Engagement | None:
        return await self._engagement_where("id = ?", (engagement_id,))

    async def engagement_by_room(self, room_id: str) -> Engagement | None:
        return await self._engagement_where("room_id = ?", (room_id,))

    async def assign(self, engagement_id: int, counselor_id: str, room_id: str) -> Engagement:
        """Give the engagement a counselor and session room; it becomes ``active``."""
        async with self.db.transaction():
            result = await self.db.execute(
                "UPDATE engagements SET counselor_id = ?, room_id = ?, status = 'active', "
                "assigned_at = ? WHERE id = ? AND status != 'closed'",
                (counselor_id, room_id, self._now(), engagement_id),
            )
            if result.rowcount != 1:
                raise StorageError(f"engagement {engagement_id} is not open")
            found = await self.get_engagement(engagement_id)
        assert found is not None
        return found

    async def set_risk(self, engagement_id: int, risk: str) -> bool:
        result = await self.db.execute(
            "UPDATE engagements SET risk = ? WHERE id = ?", (risk, engagement_id)
        )
        return result.rowcount == 1

    async def set_crisis(self, engagement_id: int, crisis: bool) -> bool:
        result = await self.db.execute(
            "UPDATE engagements SET crisis = ? WHERE id = ?", (int(crisis), engagement_id)
        )
        return result.rowcount == 1

    async def close_engagement(self, engagement_id: int, outcome: str | None) -> bool:
        """Close with one of the four outcomes, or ``None`` (a switch, an erasure)."""
        result = await self.db.execute(
            "UPDATE engagements SET status = 'closed', outcome = ?, closed_at = ?, "
            "awaiting_since = NULL WHERE id = ? AND status != 'closed'",
            (outcome, self._now(), engagement_id),
        )
        return result.rowcount == 1

    async def record_survey(self, engagement_id: int, score: int, comment: str | None) -> bool:
        sealed = (
            None if comment is None else self.db.seal(comment, context="engagements.survey_comment")
        )
        result = await self.db.execute(
            "UPDATE engagements SET survey_score = ?, survey_comment = ? WHERE id = ?",
            (score, sealed, engagement_id),
        )
        return result.rowcount == 1

    async def survey_comment(self, engagement_id: int) -> str | None:
        blob = await self.db.fetchval(
            "SELECT survey_comment FROM engagements WHERE id = ?", (engagement_id,)
        )
        return (
            None
            if blob is None
            else self.db.open_sealed(blob, context="engagements.survey_comment")
        )

    async def waiting(self) -> list[Engagement]:
        """The waiting list in serving order: crisis first, then first come first served."""
        return await self._engagements_where(
            "status = 'waiting' ORDER BY crisis DESC, opened_at ASC, id ASC"
        )

    async def active_for_counselor(self, counselor_id: str) -> list[Engagement]:
        return await self._engagements_where(
            "status = 'active' AND counselor_id = ? ORDER BY id", (counselor_id,)
        )

    async def active_engagements(self) -> list[Engagement]:
        return await self._engagements_where("status = 'active' ORDER BY id")

    async def caseloads(self, *, dormant_after_days: int) -> dict[str, int]:
        """Active, non-dormant engagements per counselor (every counselor listed, 0 included).

        Dormant: no client message for ``dormant_after_days``, counted from the
        last client message, or from the assignment when there was none yet.
        """
        cutoff = self._clock() - timedelta(days=dormant_after_days)
        rows = await self.db.fetchall(
            "SELECT c.user_id, COUNT(e.id) AS n FROM counselors c "
            "LEFT JOIN engagements e ON e.counselor_id = c.user_id AND e.status = 'active' "
            "AND CASE WHEN e.last_client_ts IS NOT NULL THEN e.last_client_ts >= :ms "
            "ELSE e.assigned_at >= :iso END "
            "GROUP BY c.user_id",
            {"ms": int(cutoff.timestamp() * 1000), "iso": iso(cutoff)},
        )
        return {str(r["user_id"]): int(r["n"]) for r in rows}

    async def closed_clients(self) -> list[tuple[str, str]]:
        """``(client_id, last closed_at)`` of every client whose engagements are all closed."""
        rows = await self.db.fetchall(
            "SELECT client_id, MAX(closed_at) AS last_closed FROM engagements GROUP BY client_id"
            " HAVING COUNT(CASE WHEN status != 'closed' THEN 1 END) = 0"
        )
        return [
            (str(r["client_id"]), str(r["last_closed"]))
            for r in rows
            if r["last_closed"] is not None
        ]

    async def record_message(self, room_id: str, *, role: str, ts_ms: int) -> Engagement | None:
        """Note a message's metadata in an open engagement's room; the engagement, or None.

        ``role`` is ``"client"`` or ``"counselor"`` (ValueError otherwise).

        A client message starts the wait unless one is running (or the message
        predates the counselor's last reply); a counselor message ends a wait
        that began no later than it. Replays and out-of-order events are harmless.
        """
        if role == "client":
            sql = (
                "UPDATE engagements SET "
                "awaiting_since = CASE "
                "WHEN last_counselor_ts IS NOT NULL AND :ts <= last_counselor_ts "
                "THEN awaiting_since "
                "WHEN awaiting_since IS NULL THEN :ts "
                "WHEN awaiting_since < :ts THEN awaiting_since ELSE :ts END, "
                "last_client_ts = CASE WHEN last_client_ts > :ts THEN last_client_ts ELSE :ts END "
                "WHERE room_id = :room AND status != 'closed'"
            )
        elif role == "counselor":
            sql = (
                "UPDATE engagements SET "
                "awaiting_since = CASE WHEN awaiting_since > :ts THEN awaiting_since END, "
                "last_counselor_ts = CASE WHEN last_counselor_ts > :ts "
                "THEN last_counselor_ts ELSE :ts END "
                "WHERE room_id = :room AND status != 'closed'"
            )
        else:
            raise ValueError(f"unknown role {role!r}")
        async with self.db.transaction():
            result = await self.db.execute(sql, {"ts": ts_ms, "room": room_id})
            if result.rowcount == 0:
                return None
            return await self.engagement_by_room(room_id)

    # ------------------------------------------------------------------ follow-ups

    async def add_followup(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        """Record a follow-up (inside the step's transaction); False if ``key`` exists.

        A done follow-up whose row was pruned (:meth:`purge_followups`) left
        its key as a marker, and is not added again either.
        """
        async with self.db.transaction():
            if await is_marked(self.db, FOLLOWUP_MARKER + key):
                return False
            result = await self.db.execute(
                "INSERT INTO followups (key, kind, payload, next_at, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    key,
                    kind,
                    self._seal_json(payload, "followups.payload"),
                    self._now(),
                    self._now(),
                ),
            )
        return bool(result.rowcount)

    async def due_followups(self, keys: list[str] | None = None) -> list[PendingFollowUp]:
        """Pending follow-ups due now (or the pending ones among ``keys``), oldest first."""
        if keys is None:
            rows = await self.db.fetchall(
                "SELECT id, key, kind, payload, attempts, failures FROM followups"
                " WHERE status = 'pending' AND next_at <= ? ORDER BY id",
                (self._now(),),
            )
        else:
            marks = ", ".join("?" * len(keys))
            rows = await self.db.fetchall(
                "SELECT id, key, kind, payload, attempts, failures FROM followups"
                f" WHERE status = 'pending' AND key IN ({marks}) ORDER BY id",
                tuple(keys),
            )
        return [
            PendingFollowUp(
                int(r["id"]),
                str(r["key"]),
                str(r["kind"]),
                self._open_json(r["payload"], "followups.payload") or {},
                int(r["attempts"]),
                int(r["failures"]),
            )
            for r in rows
        ]

    async def followup_done(self, followup_id: int) -> None:
        """Done: the payload (it may name a client) is dropped with it."""
        await self.db.execute(
            "UPDATE followups SET status = 'done', payload = NULL, done_at = ? WHERE id = ?",
            (self._now(), followup_id),
        )

    async def followup_later(
        self, followup_id: int, delay: timedelta, *, failed: bool = False
    ) -> None:
        """Try again after ``delay``; ``failed``: the attempt counts towards giving up."""
        await self.db.execute(
            "UPDATE followups SET attempts = attempts + 1, failures = failures + ?, next_at = ?"
            " WHERE id = ?",
            (int(failed), iso(self._clock() + delay), followup_id),
        )

    async def followup_failed(self, followup_id: int) -> None:
        """Given up on: not retried any more; kept (payload sealed) for an operator to see."""
        await self.db.execute(
            "UPDATE followups SET status = 'failed', attempts = attempts + 1,"
            " failures = failures + 1, done_at = ?"
            " WHERE id = ?",
            (self._now(), followup_id),
        )

    async def failed_followups(self) -> list[FailedFollowUp]:
        """Follow-ups given up on after too many attempts, oldest first (ids and kinds only)."""
        rows = await self.db.fetchall(
            "SELECT id, kind, attempts, created_at, done_at FROM followups"
            " WHERE status = 'failed' ORDER BY id"
        )
        return [
            FailedFollowUp(
                int(r["id"]),
                str(r["kind"]),
                int(r["attempts"]),
                str(r["created_at"]),
                str(r["done_at"]),
            )
            for r in rows
        ]

    async def purge_followups(self, older_than: timedelta) -> int:
        """Forget follow-ups done before ``now - older_than``; their keys stay as markers.

        Pending and failed ones (waiting for an operator) are never pruned.
        """
        return await prune_leaving_markers(
            self.db,
            "followups",
            prefix=FOLLOWUP_MARKER,
            key="key",
            at="done_at",
            where="status = 'done' AND done_at < ?",
            cutoff=iso(self._clock() - older_than),
        )

    async def pending_followups(self) -> int:
        return int(
            await self.db.fetchval("SELECT COUNT(*) FROM followups WHERE status = 'pending'") or 0
        )

    # ------------------------------------------------------------------ rooms being created

    async def request_room(self, purpose: str, counselor_id: str) -> RoomRequest:
        """Note that a room for ``purpose`` is wanted (kept if noted before); return the row."""
        await self.db.execute(
            "INSERT INTO room_requests (purpose, counselor_id) VALUES (?, ?)"
            " ON CONFLICT DO NOTHING",
            (purpose, counselor_id),
        )
        found = await self.room_request(purpose)
        assert found is not None
        return found

    async def room_request(self, purpose: str) -> RoomRequest | None:
        row = await self.db.fetchone(
            "SELECT purpose, counselor_id, attempted_at, room_id FROM room_requests"
            " WHERE purpose = ?",
            (purpose,),
        )
        if row is None:
            return None
        return RoomRequest(
            str(row["purpose"]), str(row["counselor_id"]), row["attempted_at"], row["room_id"]
        )

    async def room_attempted(self, purpose: str) -> None:
        """Written (and committed) right before the homeserver is asked to create the room."""
        await self.db.execute(
            "UPDATE room_requests SET attempted_at = ? WHERE purpose = ?", (self._now(), purpose)
        )

    async def room_created(self, purpose: str, room_id: str) -> None:
        await self.db.execute(
            "UPDATE room_requests SET room_id = ? WHERE purpose = ?", (room_id, purpose)
        )

    async def drop_room_request(self, purpose: str) -> None:
        await self.db.execute("DELETE FROM room_requests WHERE purpose = ?", (purpose,))

    async def known_rooms(self) -> set[str]:
        """Every room the bridge has on record (to tell an orphan from a known room)."""
        rows = await self.db.fetchall("SELECT room_id FROM rooms")
        return {str(r["room_id"]) for r in rows}

    # ------------------------------------------------------------------ rooms

    async def set_room(self, room_id: str, kind: RoomKind, user_id: str | None) -> None:
        await self.db.execute(
            "INSERT INTO rooms (room_id, kind, user_id) VALUES (?, ?, ?) "
            "ON CONFLICT(room_id) DO UPDATE SET kind = excluded.kind, user_id = excluded.user_id",
            (room_id, kind, user_id),
        )

    async def room_kind(self, room_id: str) -> tuple[str, str | None] | None:
        row = await self.db.fetchone(
            "SELECT kind, user_id FROM rooms WHERE room_id = ?", (room_id,)
        )
        return None if row is None else (str(row["kind"]), row["user_id"])

    async def rooms_of(self, user_id: str) -> list[tuple[str, str]]:
        """``(room_id, kind)`` of every room recorded for ``user_id``."""
        rows = await self.db.fetchall(
            "SELECT room_id, kind FROM rooms WHERE user_id = ? ORDER BY room_id", (user_id,)
        )
        return [(str(r["room_id"]), str(r["kind"])) for r in rows]

    # ------------------------------------------------------------------ audit

    def actor_ref(self, user_id: str) -> str:
        """How ``user_id`` appears in the audit's actor column."""
        return audit.actor_ref(self._audit_key, user_id)

    async def audit(
        self, actor: str, action: str, *, engagement_id: int | None = None, detail: str = ""
    ) -> int:
        """Append a content-free audit line (see :mod:`.audit`); returns its seq."""
        return await audit.append(
            self.db,
            self._audit_key,
            actor=actor,
            action=action,
            engagement_id=engagement_id,
            detail=detail,
            at=self._now(),
        )

    async def audit_lines(
        self, *, user_id: str | None = None, engagement_id: int | None = None
    ) -> list[AuditLine]:
        """Audit lines, optionally those whose actor is ``user_id`` or of one engagement."""
        actor = None if user_id is None else audit.stored_actor(self._audit_key, user_id)
        return await audit.lines(self.db, actor=actor, engagement_id=engagement_id)

    async def verify_audit(self) -> AuditReport:
        return await audit.verify(self.db, self._audit_key)
