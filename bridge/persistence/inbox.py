"""The durable inbox between the sync loop and the handlers.

A nio callback only writes the event here (one small local insert) and
returns; per-room workers handle it afterwards. The sync token is saved only
after the callbacks ran, so every event the homeserver delivered is either in
the inbox or will be delivered again: a crash never loses one. The body is
sealed, and is wiped as soon as the event is handled. A handled row is pruned
after the operational age and leaves its event id behind as a marker in
``handled_events`` (see :mod:`bridge.persistence.pruning`): an event that
comes again after that is not put in the inbox a second time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge.persistence.markers import MARKER_QUERY, prune_leaving_markers
from bridge.persistence.store import iso, utcnow
from e2ecounsel.store import Database

_CONTEXT = "inbox.payload"


@dataclass(frozen=True)
class InboxItem:
    event_id: str
    room_id: str
    sender: str
    ts: int
    kind: str  # "text" | "edit" | "undecryptable" | "joined"
    body: str
    encrypted: bool  # the room is encrypted
    #: The event itself arrived encrypted and was decrypted (a plaintext event
    #: in an encrypted room is not: anyone with the access token can send one).
    decrypted: bool = False
    #: Curve25519 identity key of the device the room key came from ("" if none).
    sender_key: str = ""


class Inbox:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self._clock = clock

    async def put(self, item: InboxItem) -> bool:
        """Record an event once; False when it was there already or was handled (a replay)."""
        payload = self.db.seal(
            json.dumps(
                {
                    "body": item.body,
                    "encrypted": item.encrypted,
                    "decrypted": item.decrypted,
                    "sender_key": item.sender_key,
                }
            ),
            context=_CONTEXT,
        )
        # One statement (atomic by itself): not when a marker says it was handled
        # and pruned, and not twice.
        result = await self.db.execute(
            "INSERT INTO inbox"
            " (event_id, room_id, sender, ts, kind, payload, received_at)"
            " SELECT ?, ?, ?, ?, ?, ?, ?"
            f" WHERE NOT EXISTS ({MARKER_QUERY}) ON CONFLICT DO NOTHING",
            (
                item.event_id,
                item.room_id,
                item.sender,
                item.ts,
                item.kind,
                payload,
                iso(self._clock()),
                item.event_id,
            ),
        )
        return bool(result.rowcount)

    async def pending(self, room_id: str | None = None) -> list[InboxItem]:
        """Events not handled yet, oldest first: neither done here nor marked handled (a
        step marks both in its transaction), so the handler need not ask again."""
        sql = (
            "SELECT event_id, room_id, sender, ts, kind, payload FROM inbox"
            " WHERE done_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM handled_events h WHERE h.event_id = inbox.event_id)"
            " {} ORDER BY seq"
        )
        if room_id is None:
            rows = await self.db.fetchall(sql.format(""))
        else:
            rows = await self.db.fetchall(sql.format("AND room_id = ?"), (room_id,))
        return [self._item(row) for row in rows]

    def _item(self, row: Any) -> InboxItem:
        data = json.loads(self.db.open_sealed(row["payload"], context=_CONTEXT))
        return InboxItem(
            row["event_id"],
            row["room_id"],
            row["sender"],
            row["ts"],
            row["kind"],
            data["body"],
            data["encrypted"],
            bool(data.get("decrypted", False)),
            str(data.get("sender_key") or ""),
        )

    async def done(self, event_id: str) -> None:
        """Mark handled and wipe the body (call inside the handler's transaction)."""
        await self.db.execute(
            "UPDATE inbox SET done_at = ?, payload = NULL WHERE event_id = ?",
            (iso(self._clock()), event_id),
        )

    async def forget_room(self, room_id: str) -> None:
        await self.db.execute("DELETE FROM inbox WHERE room_id = ?", (room_id,))

    async def prune(self, older_than: timedelta) -> int:
        """Delete rows handled before ``now - older_than``; their ids stay as markers.

        A row is done together with its marker in the step's transaction; the
        copy here covers a row given up on after its handler failed.
        """
        return await prune_leaving_markers(
            self.db,
            "inbox",
            prefix="",
            key="event_id",
            at="done_at",
            where="done_at IS NOT NULL AND done_at < ?",
            cutoff=iso(self._clock() - older_than),
        )
