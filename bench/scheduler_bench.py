"""Benchmark of the durable scheduler. Prints figures; asserts nothing.

    python -m bench.scheduler_bench [--pending 10000] [--burst 1000] [--window 60]

1. Start-up with N pending reminders in the database: our start (fire what is
   due, arm one alarm from MIN(due_at)) next to the naive way (one APScheduler
   job per row, rebuilt at start), measured in the same run. Peak memory of
   each with tracemalloc.
2. Firing lateness: B reminders due within one window (default a minute),
   fired by the real alarm on the real clock; each firing writes its message to
   the outbox in a transaction, as in production (no homeserver involved).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from bridge.persistence.store import BridgeStore
from bridge.scheduler import DurableScheduler
from e2ecounsel.policy import MisfirePolicy
from e2ecounsel.sealing import Sealer

KEY = Sealer(b"b" * 32)


async def seed(path: Path, n: int, first_due: datetime, spread: timedelta) -> None:
    store = await BridgeStore.open(path, KEY)
    sched = DurableScheduler(store, misfire=MisfirePolicy(900, "fire-late"))
    step = spread / max(n, 1)
    async with store.transaction():
        for i in range(n):
            await sched.schedule(
                "notice",
                first_due + step * i,
                "!room:bench",
                key=f"bench:{i}",
                payload={"body": f"reminder {i}"},
            )
    await store.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def startup(path: Path) -> tuple[float, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    store = await BridgeStore.open(path, KEY)
    sched = DurableScheduler(store, misfire=MisfirePolicy(900, "fire-late"))
    sched.handle("notice")(lambda job, now: _none())
    await sched.start()
    await asyncio.sleep(0)  # let the alarm be armed
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    await sched.stop()
    await store.close()
    return elapsed, peak


async def _none() -> list:
    return []


async def naive_startup(path: Path) -> tuple[float, int]:
    """The baseline: read every row and give APScheduler one job each."""
    tracemalloc.start()
    t0 = time.perf_counter()
    store = await BridgeStore.open(path, KEY)
    sched = DurableScheduler(store, misfire=MisfirePolicy(900, "fire-late"))
    timer = AsyncIOScheduler(timezone=UTC)
    timer.start(paused=True)
    for job in await sched.pending():
        timer.add_job(_none, DateTrigger(run_date=job.due, timezone=UTC), id=str(job.id))
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    timer.shutdown(wait=False)
    await store.close()
    return elapsed, peak


async def lateness(path: Path, burst: int, window: float) -> list[float]:
    start = datetime.now(UTC) + timedelta(seconds=2)
    await seed(path, burst, start, timedelta(seconds=window))
    store = await BridgeStore.open(path, KEY)
    sched = DurableScheduler(store, misfire=MisfirePolicy(900, "fire-late"))
    late: list[float] = []
    done = asyncio.Event()

    @sched.handle("notice")
    async def fire(job, now):
        late.append((datetime.now(UTC) - job.due).total_seconds())
        if len(late) == burst:
            done.set()
        return [(job.target, {"msgtype": "m.notice", "body": job.payload["body"]})]

    await sched.start()
    try:
        await asyncio.wait_for(done.wait(), window + 60)
    finally:
        await sched.stop()
        await store.close()
    return late


async def main(pending: int, burst: int, window: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "pending.db"
        t0 = time.perf_counter()
        await seed(db, pending, datetime.now(UTC) + timedelta(days=1), timedelta(days=30))
        seeded = time.perf_counter() - t0
        ours, ours_peak = await startup(db)
        naive, naive_peak = await naive_startup(db)
        late = await lateness(Path(tmp) / "burst.db", burst, window)
    ms = [v * 1000 for v in late]
    print(f"seeded {pending} pending reminders in {seeded:.2f} s")
    print()
    print(f"{'start-up with pending reminders':40} {'time':>10} {'peak memory':>14}")
    print(
        f"{'  e2ecounsel (one alarm from the rows)':40} {ours * 1000:>8.1f} ms "
        f"{ours_peak / 1e6:>11.2f} MB"
    )
    print(
        f"{'  baseline (one APScheduler job a row)':40} {naive * 1000:>8.1f} ms "
        f"{naive_peak / 1e6:>11.2f} MB"
    )
    print(f"{'  ratio (ours / baseline)':40} {ours / naive:>10.3f} {ours_peak / naive_peak:>14.3f}")
    print()
    print(f"firing lateness, {burst} reminders due within {window:g} s (real alarm, real clock):")
    print(
        f"  p50 {statistics.median(ms):.1f} ms   p99 {pct(ms, 0.99):.1f} ms   max {max(ms):.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=1_000)
    parser.add_argument("--window", type=float, default=60.0)
    a = parser.parse_args()
    asyncio.run(main(a.pending, a.burst, a.window))
