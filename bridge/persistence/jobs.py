"""The ``jobs`` table: every reminder, digest and escalation as a row (see :mod:`bridge.scheduler`).

A job's ``key`` names its cause, so scheduling the same thing twice adds one
row. A finished job's row is pruned after the operational age (see
:mod:`bridge.persistence.pruning`), but its key may still come back: an SLA
reminder is keyed by the start of the client's wait and planned again at every
message of that wait. So pruning leaves the key behind as a compact marker in
``handled_events`` (``job:<key>``, no payload), and :meth:`Jobs.add` adds
nothing for a marked key: a job fires once, however long ago its row went.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge.persistence.markers import is_marked, prune_leaving_markers
from bridge.persistence.store import iso
from e2ecounsel.store import Database, Row

_PAYLOAD = "jobs.payload"
#: ``handled_events`` ids of pruned jobs; a Matrix event id starts with ``$``.
JOB_MARKER = "job:"
#: Statuses of a job that will not fire again.
FINISHED = ("done", "skipped", "folded", "cancelled")


@dataclass(frozen=True)
class Job:
    id: int
    key: str
    kind: str
    due: datetime
    target: str
    payload: dict[str, Any]


class Jobs:
    """The rows of :class:`bridge.scheduler.DurableScheduler`; clock injected."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime]) -> None:
        self.db = db
        self._clock = clock

    async def add(
        self, kind: str, due: datetime, target: str, *, key: str, payload: dict[str, Any]
    ) -> bool:
        """Add a pending job unless ``key`` is known (a row, or a pruned job's marker)."""
        sealed = self.db.seal(json.dumps(payload), context=_PAYLOAD)
        async with self.db.transaction():
            if await is_marked(self.db, JOB_MARKER + key):
                return False
            result = await self.db.execute(
                "INSERT INTO jobs (key, kind, due_at, target, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (key, kind, iso(due), target, sealed, iso(self._clock())),
            )
        return bool(result.rowcount)

    async def cancel(self, key_prefix: str) -> int:
        """Cancel pending jobs whose key starts with ``key_prefix``; how many."""
        result = await self.db.execute(
            "UPDATE jobs SET status = 'cancelled'"
            " WHERE status = 'pending' AND key LIKE ? ESCAPE '\\'",
            (key_prefix.replace("%", "\\%").replace("_", "\\_") + "%",),
        )
        return result.rowcount

    async def pending(self, *, due_by: datetime | None = None) -> list[Job]:
        """Pending jobs in firing order (those due by ``due_by``, if given)."""
        if due_by is None:
            rows = await self.db.fetchall(
                "SELECT * FROM jobs WHERE status = 'pending' ORDER BY due_at, id"
            )
        else:
            rows = await self.db.fetchall(
                "SELECT * FROM jobs WHERE status = 'pending' AND due_at <= ? ORDER BY due_at, id",
                (iso(due_by),),
            )
        return [self._job(r) for r in rows]

    def _job(self, row: Row) -> Job:
        payload = json.loads(self.db.open_sealed(row["payload"], context=_PAYLOAD))
        return Job(
            row["id"],
            row["key"],
            row["kind"],
            datetime.fromisoformat(row["due_at"]),
            row["target"],
            payload,
        )

    async def next_due(self) -> datetime | None:
        value = await self.db.fetchval("SELECT MIN(due_at) FROM jobs WHERE status = 'pending'")
        return datetime.fromisoformat(value) if value else None

    async def finish(self, job_id: int, status: str, at: datetime) -> None:
        """Mark a pending job ``done``/``skipped``/``folded`` (in the firing's transaction)."""
        if status not in FINISHED:
            raise ValueError(f"unknown job status {status!r}")
        await self.db.execute(
            "UPDATE jobs SET status = ?, fired_at = ? WHERE id = ? AND status = 'pending'",
            (status, iso(at), job_id),
        )

    async def prune(self, older_than: timedelta) -> int:
        """Delete jobs finished before ``now - older_than``, keeping their keys as markers.

        A cancelled job never fired (no ``fired_at``); its age is its due time.
        """
        return await prune_leaving_markers(
            self.db,
            "jobs",
            prefix=JOB_MARKER,
            key="key",
            at="COALESCE(fired_at, due_at)",
            where="status IN ('done', 'skipped', 'folded', 'cancelled')"
            " AND COALESCE(fired_at, due_at) < ?",
            cutoff=iso(self._clock() - older_than),
        )
