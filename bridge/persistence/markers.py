"""``handled_events``: ids of what was done once, kept after the rows that did it are pruned.

A Matrix event id (``$…``), the bridge's own event ids (``joined:<room>``), and
the keys of pruned jobs (``job:<key>``) and follow-ups (``followup:<key>``).
See :mod:`bridge.persistence.pruning` for why and how long.
"""

from __future__ import annotations

from e2ecounsel.store import Database

#: A row when the marker (one ``?``) is recorded; for use inside another statement.
MARKER_QUERY = "SELECT 1 FROM handled_events WHERE event_id = ?"


async def is_marked(db: Database, marker: str) -> bool:
    return await db.fetchone(MARKER_QUERY, (marker,)) is not None


async def prune_leaving_markers(
    db: Database, table: str, *, prefix: str, key: str, at: str, where: str, cutoff: str
) -> int:
    """Delete the rows of ``table`` matching ``where`` (one ``?``: ``cutoff``); how many.

    Each row leaves the marker ``prefix`` + its ``key`` column, written at its
    ``at`` (an SQL expression over the row), in the same transaction.
    """
    async with db.transaction():
        await db.execute(
            "INSERT INTO handled_events (event_id, handled_at)"
            f" SELECT CAST(? AS TEXT) || {key}, {at} FROM {table} WHERE {where}"
            " ON CONFLICT DO NOTHING",
            (prefix, cutoff),
        )
        result = await db.execute(f"DELETE FROM {table} WHERE {where}", (cutoff,))
    return result.rowcount
