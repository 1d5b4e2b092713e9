"""What one store statement costs: on the event loop's thread, or one trip to a thread.

    python -m bench.store_statements [--steps 2000] [--tasks 20]

Prints figures; asserts nothing. Each *step* is what the bridge's store does for an
ordinary intake answer (eight statements): a read of the room, a read of the client,
then one transaction (``BEGIN IMMEDIATE``, an upsert, an insert, an update, an
insert, ``COMMIT``), the same SQL in both ways, each on its own new SQLite file in WAL
mode with ``synchronous=NORMAL``:

* **ours**: :class:`e2ecounsel.store.Database`, whose statements run on the event
  loop's thread (a wait for another process's write lock goes to a worker thread;
  none happens here);
* **baseline**: aiosqlite, one trip to its thread per statement
  (``execute_fetchall``: execute, rows and cursor together), as the store did before.

Both run in this process, one after the other, then again in the other order; each
figure is the median of the two. CPU is ``time.process_time()`` (both threads), wall
the step's own clock. With ``--tasks`` steps run concurrently, as the bridge's rooms do,
the longest single statement is what holds up the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite

from e2ecounsel.store import PRAGMAS, Database, MigrationRegistry

SCHEMA = (
    "CREATE TABLE room (room_id TEXT PRIMARY KEY, kind TEXT NOT NULL)",
    "CREATE TABLE client (user_id TEXT PRIMARY KEY, state BLOB NOT NULL, n INTEGER NOT NULL)",
    "CREATE TABLE outbox (id INTEGER PRIMARY KEY, room_id TEXT NOT NULL, body BLOB NOT NULL,"
    " sent INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE handled (event_id TEXT PRIMARY KEY, at TEXT NOT NULL)",
)

STEP: tuple[tuple[str, str], ...] = (
    ("read", "SELECT kind FROM room WHERE room_id = ?"),
    ("read", "SELECT state, n FROM client WHERE user_id = ?"),
    ("begin", ""),
    (
        "write",
        "INSERT INTO client (user_id, state, n) VALUES (?, ?, 1) ON CONFLICT (user_id) "
        "DO UPDATE SET state = excluded.state, n = client.n + 1",
    ),
    ("write", "INSERT INTO outbox (room_id, body) VALUES (?, ?)"),
    ("write", "UPDATE room SET kind = kind WHERE room_id = ?"),
    ("write", "INSERT INTO handled (event_id, at) VALUES (?, ?)"),
    ("commit", ""),
)

STATE = b"\x01" * 300  # about a sealed client's size


def params(sql: str, task: int, i: int) -> tuple[object, ...]:
    room, user = f"!r{task}:bench", f"@c{task}:bench"
    if "FROM room" in sql or "UPDATE room" in sql:
        return (room,)
    if "FROM client" in sql:
        return (user,)
    if "INTO client" in sql:
        return (user, STATE)
    if "INTO outbox" in sql:
        return (room, STATE)
    return (f"$e{task}-{i}", "2026-12-01T00:00:00")


Run = Callable[[str, str, tuple[object, ...]], Awaitable[float]]


async def ours(path: Path) -> tuple[Run, Callable[[], Awaitable[None]]]:
    registry = MigrationRegistry()
    registry.add_sql("bench schema", ";\n".join(SCHEMA))
    db = await Database.open(path, registry)
    transaction: list[object] = []

    async def run(kind: str, sql: str, args: tuple[object, ...]) -> float:
        t0 = time.perf_counter()
        if kind == "begin":
            cm = db.transaction()
            await cm.__aenter__()
            transaction.append(cm)
        elif kind == "commit":
            await transaction.pop().__aexit__(None, None, None)  # type: ignore[attr-defined]
        elif kind == "read":
            await db.fetchone(sql, args)
        else:
            await db.execute(sql, args)
        return time.perf_counter() - t0

    return run, db.close


async def baseline(path: Path) -> tuple[Run, Callable[[], Awaitable[None]]]:
    conn = await aiosqlite.connect(path, isolation_level=None)
    for name, value in PRAGMAS:
        await conn.execute_fetchall(f"PRAGMA {name}={value}")
    await conn.execute_fetchall("PRAGMA busy_timeout=5000")
    for statement in SCHEMA:
        await conn.execute_fetchall(statement)
    lock = asyncio.Lock()  # as the store's: one transaction at a time

    async def run(kind: str, sql: str, args: tuple[object, ...]) -> float:
        t0 = time.perf_counter()
        if kind == "begin":
            await lock.acquire()
            await conn.execute_fetchall("BEGIN IMMEDIATE")
        elif kind == "commit":
            await conn.execute_fetchall("COMMIT")
            lock.release()
        elif kind == "read" and not lock.locked():
            async with lock:
                await conn.execute_fetchall(sql, args)
        else:
            await conn.execute_fetchall(sql, args)
        return time.perf_counter() - t0

    return run, conn.close


async def measure(
    way: Callable[[Path], Awaitable[tuple[Run, Callable[[], Awaitable[None]]]]],
    steps: int,
    tasks: int,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run, close = await way(Path(tmp) / "bench.db")
        longest = 0.0
        step_times: list[float] = []

        async def worker(task: int, count: int) -> None:
            nonlocal longest
            for i in range(count):
                t0 = time.perf_counter()
                for kind, sql in STEP:
                    longest = max(longest, await run(kind, sql, params(sql, task, i)))
                step_times.append(time.perf_counter() - t0)

        await worker(-1, 50)  # warm up: statements prepared, file grown
        step_times.clear()
        longest = 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        per_task = max(1, steps // tasks)
        await asyncio.gather(*(worker(t, per_task) for t in range(tasks)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await close()
    done = per_task * tasks
    ordered = sorted(step_times)
    return {
        "cpu per step (ms)": cpu / done * 1000,
        "cpu per statement (us)": cpu / done / len(STEP) * 1e6,
        "wall per step (ms)": wall / done * 1000,
        "step p50 (ms)": statistics.median(ordered) * 1000,
        "step p99 (ms)": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "longest statement (ms)": longest * 1000,
    }


async def main(steps: int, tasks: int) -> None:
    print(
        f"store statements: {steps} steps of {len(STEP)} statements, "
        f"1 task and {tasks} concurrent tasks"
    )
    for concurrency in (1, tasks):
        results: dict[str, list[dict[str, float]]] = {"ours": [], "baseline": []}
        for order in (("ours", "baseline"), ("baseline", "ours")):
            for name in order:
                way = ours if name == "ours" else baseline
                results[name].append(await measure(way, steps, concurrency))
        print(f"\n{concurrency} task(s)")
        print(f"{'figure':28} {'loop thread':>12} {'aiosqlite':>12} {'ratio':>7}")
        for figure in results["ours"][0]:
            a = statistics.median(r[figure] for r in results["ours"])
            b = statistics.median(r[figure] for r in results["baseline"])
            print(f"{figure:28} {a:12.3f} {b:12.3f} {a / b if b else 0:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.steps, args.tasks))
