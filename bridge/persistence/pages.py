"""Crisis pages and supervisors, as rows.

A page is opened when the crisis protocol starts and taken by the first person
who answers it with ``!take``. Taking is one conditional ``UPDATE … WHERE
taken_by IS NULL``: the database, not the code, decides who won a race.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from e2ecounsel.store import Database


@dataclass(frozen=True)
class Page:
    id: int
    client_id: str
    engagement_id: int | None
    reason: str
    created_at: str
    taken_by: str | None
    room_id: str | None


@dataclass(frozen=True)
class Supervisor:
    user_id: str
    name: str


_PAGE_COLUMNS = "id, client_id, engagement_id, reason, created_at, taken_by, room_id"


class Pages:
    def __init__(
        self, db: Database, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.db = db
        self._clock = clock

    def _now(self) -> str:
        return self._clock().isoformat()

    async def open(
        self, *, cause: str, client_id: str, engagement_id: int | None, reason: str
    ) -> int:
        """The page for ``cause``, opened now or found again (a replayed event)."""
        await self.db.execute(
            "INSERT INTO pages (cause, client_id, engagement_id, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (cause, client_id, engagement_id, reason, self._now()),
        )
        return int(await self.db.fetchval("SELECT id FROM pages WHERE cause = ?", (cause,)))

    async def get(self, page_id: int) -> Page | None:
        row = await self.db.fetchone(f"SELECT {_PAGE_COLUMNS} FROM pages WHERE id = ?", (page_id,))
        return None if row is None else Page(*row)

    async def newest_open(self) -> Page | None:
        row = await self.db.fetchone(
            f"SELECT {_PAGE_COLUMNS} FROM pages WHERE taken_by IS NULL ORDER BY id DESC LIMIT 1"
        )
        return None if row is None else Page(*row)

    async def take(self, page_id: int, user_id: str) -> bool:
        """Give the page to ``user_id`` unless someone has it already; True if they got it."""
        result = await self.db.execute(
            "UPDATE pages SET taken_by = ?, taken_at = ? WHERE id = ? AND taken_by IS NULL",
            (user_id, self._now(), page_id),
        )
        return result.rowcount == 1

    async def set_room(self, page_id: int, room_id: str) -> None:
        await self.db.execute("UPDATE pages SET room_id = ? WHERE id = ?", (room_id, page_id))

    async def is_page_room(self, room_id: str) -> bool:
        return (
            await self.db.fetchone("SELECT 1 FROM pages WHERE room_id = ?", (room_id,)) is not None
        )

    # ------------------------------------------------------------------ supervisors

    async def add_supervisor(self, user_id: str, name: str) -> bool:
        """Add (or rename) a supervisor; True if they were not one before."""
        known = await self.is_supervisor(user_id)
        await self.db.execute(
            "INSERT INTO supervisors (user_id, name, added_at) VALUES (?, ?, ?)"
            " ON CONFLICT(user_id) DO UPDATE SET name = excluded.name",
            (user_id, name, self._now()),
        )
        return not known

    async def remove_supervisor(self, user_id: str) -> bool:
        result = await self.db.execute("DELETE FROM supervisors WHERE user_id = ?", (user_id,))
        return result.rowcount == 1

    async def supervisors(self) -> list[Supervisor]:
        rows = await self.db.fetchall("SELECT user_id, name FROM supervisors ORDER BY user_id")
        return [Supervisor(str(r["user_id"]), str(r["name"])) for r in rows]

    async def is_supervisor(self, user_id: str) -> bool:
        row = await self.db.fetchone("SELECT 1 FROM supervisors WHERE user_id = ?", (user_id,))
        return row is not None

    async def supervisor(self, user_id: str) -> Supervisor | None:
        row = await self.db.fetchone(
            "SELECT user_id, name FROM supervisors WHERE user_id = ?", (user_id,)
        )
        return None if row is None else Supervisor(str(row["user_id"]), str(row["name"]))

    async def supervisors_room(self) -> str | None:
        """The supervisors' room the bridge keeps (by id; never found through an alias)."""
        value = await self.db.fetchval(
            "SELECT room_id FROM rooms WHERE kind = 'supervisors' ORDER BY room_id LIMIT 1"
        )
        return None if value is None else str(value)
