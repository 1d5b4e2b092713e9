"""Durable jobs and bookings over a real SQLite file, with an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bridge.persistence.bookings import Bookings, SlotTaken
from bridge.persistence.jobs import Job
from bridge.persistence.store import BridgeStore, ClientRecord, Counselor
from bridge.scheduler import DurableScheduler, job_txn
from e2ecounsel.policy import MisfirePolicy
from e2ecounsel.sealing import Sealer
from tests.clock import Clock

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
async def store(database_target):
    s = await BridgeStore.open(database_target, Sealer(b"k" * 32))
    yield s
    await s.close()


def make(store, clock, mode="fire-late", grace=60, summarize=None):
    return DurableScheduler(
        store, misfire=MisfirePolicy(grace, mode), clock=clock, summarize=summarize
    )


async def outbox(store) -> list[tuple[str, str, str]]:
    return [(i.txn_id, i.room_id, i.content["body"]) for i in await store.unsent()]


async def test_a_job_fires_once_when_due_and_never_again(store):
    clock = Clock(T0)
    sched = make(store, clock)
    calls: list[Job] = []

    @sched.handle("remind")
    async def remind(job: Job, now: datetime):
        calls.append(job)
        return [("!room:x", {"msgtype": "m.notice", "body": f"hello {job.payload['n']}"})]

    assert await sched.schedule("remind", T0 + timedelta(hours=1), "e1", key="r1", payload={"n": 1})
    assert not await sched.schedule("remind", T0 + timedelta(hours=1), "e1", key="r1")
    assert await sched.run_due() == 0
    clock.advance(hours=1)
    assert await sched.run_due() == 1
    assert await sched.run_due() == 0
    assert len(calls) == 1
    assert await outbox(store) == [(job_txn("r1", 0), "!room:x", "hello 1")]


async def test_a_failing_handler_leaves_the_job_pending(store):
    clock = Clock(T0)
    sched = make(store, clock)
    attempts = []

    @sched.handle("flaky")
    async def flaky(job, now):
        attempts.append(now)
        if len(attempts) == 1:
            raise RuntimeError("homeserver away")
        return [("!r:x", {"msgtype": "m.notice", "body": "ok"})]

    await sched.schedule("flaky", T0, "t", key="f")
    await sched.run_due()
    assert await outbox(store) == [] and len(await sched.pending()) == 1
    await sched.run_due()
    assert [b for _, _, b in await outbox(store)] == ["ok"]
    assert await sched.pending() == []


async def test_a_crash_mid_commit_neither_loses_nor_duplicates(store, monkeypatch):
    clock = Clock(T0)
    sched = make(store, clock)

    @sched.handle("two")
    async def two(job, now):
        return [
            ("!r:x", {"msgtype": "m.notice", "body": "a"}),
            ("!r:x", {"msgtype": "m.notice", "body": "b"}),
        ]

    await sched.schedule("two", T0, "t", key="k2")
    real_queue = store.queue
    calls = {"n": 0}

    async def dying_queue(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies between the two messages
        return await real_queue(*args, **kw)

    monkeypatch.setattr(store, "queue", dying_queue)
    with pytest.raises(KeyboardInterrupt):
        await sched.run_due()
    monkeypatch.setattr(store, "queue", real_queue)
    assert await outbox(store) == []  # the half-done transaction rolled back
    assert len(await sched.pending()) == 1
    await sched.run_due()
    assert [b for _, _, b in await outbox(store)] == ["a", "b"]


async def test_jobs_survive_a_restart_and_misfires_fire_late(tmp_path):
    key = Sealer(b"k" * 32)
    store = await BridgeStore.open(tmp_path / "b.db", key)
    sched = make(store, Clock(T0))
    await sched.schedule("remind", T0 + timedelta(minutes=5), "e1", key="a")
    await sched.schedule("remind", T0 + timedelta(minutes=10), "e2", key="b")
    await store.close()

    # Down for a day; at start both are late beyond grace and fire, in order.
    store = await BridgeStore.open(tmp_path / "b.db", key)
    sched = make(store, Clock(T0 + timedelta(days=1)))
    seen = []

    @sched.handle("remind")
    async def remind(job, now):
        seen.append(job.key)
        return [("!r:x", {"msgtype": "m.notice", "body": job.key})]

    try:
        assert await sched.start() == 2
        assert seen == ["a", "b"]
    finally:
        await sched.stop()
        await store.close()


async def test_summarize_folds_late_jobs_into_one_message_per_target(store):
    clock = Clock(T0)

    async def summary(target, jobs, now):
        return [(f"!{target}:x", {"msgtype": "m.notice", "body": f"{len(jobs)} while offline"})]

    sched = make(store, clock, mode="summarize", summarize=summary)

    @sched.handle("remind")
    async def remind(job, now):
        return [("!r:x", {"msgtype": "m.notice", "body": "on time"})]

    for i in range(3):
        await sched.schedule("remind", T0 + timedelta(minutes=i), "c1", key=f"s{i}")
    await sched.schedule("remind", T0, "c2", key="other")
    await sched.schedule(
        "remind", T0 + timedelta(hours=5, minutes=59, seconds=30), "c3", key="fresh"
    )
    clock.advance(hours=6)
    await sched.run_due()
    bodies = sorted((room, body) for _, room, body in await outbox(store))
    assert bodies == [
        ("!c1:x", "3 while offline"),
        ("!c2:x", "1 while offline"),
        ("!r:x", "on time"),
    ]
    assert await sched.pending() == []


async def test_the_alarm_fires_without_anyone_calling_run_due(store):
    sched = DurableScheduler(store, misfire=MisfirePolicy(60, "fire-late"))
    fired = asyncio.Event()

    @sched.handle("ping")
    async def ping(job, now):
        fired.set()
        return []

    await sched.start()
    try:
        await sched.schedule("ping", datetime.now(UTC) + timedelta(milliseconds=300), "t", key="p")
        await asyncio.wait_for(fired.wait(), 10)
    finally:
        await sched.stop()


async def test_cancel_stops_pending_jobs_by_key_prefix(store):
    clock = Clock(T0)
    sched = make(store, clock)
    await sched.schedule("remind", T0, "b", key="booking:7:24h")
    await sched.schedule("remind", T0, "b", key="booking:7:15m")
    await sched.schedule("remind", T0, "b", key="booking:70:15m")
    assert await sched.cancel("booking:7:") == 2
    assert [j.key for j in await sched.pending()] == ["booking:70:15m"]


async def _engagement(store, client="@c:x", counselor="@co:x"):
    if await store.get_counselor(counselor) is None:
        await store.add_counselor(
            Counselor(
                counselor, "Co", "M.Psi.", ("en",), ("anxiety",), 3, "Asia/Jakarta", ("09:00",)
            )
        )
    await store.save_client(ClientRecord(user_id=client))
    eng = await store.open_engagement(client)
    return await store.assign(eng.id, counselor, f"!room-{client}")


async def test_two_clients_racing_for_one_slot_exactly_one_wins(store):
    a = await _engagement(store, "@a:x")
    b = await _engagement(store, "@b:x")
    bookings = Bookings(store)
    await bookings.set_schedule("@co:x", availability="mon-fri 10:00-16:00", days_off="")
    free = await bookings.free_slots(
        "@co:x", "Asia/Jakarta", now=T0, slot_minutes=50, horizon_days=7
    )
    assert free, "availability gives slots"
    slot = free[0]
    results = await asyncio.gather(
        bookings.book(a.id, "@co:x", slot, 50, now=T0),
        bookings.book(b.id, "@co:x", slot, 50, now=T0),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, SlotTaken)]
    assert len(wins) == 1 and len(losses) == 1
    after = await bookings.free_slots(
        "@co:x", "Asia/Jakarta", now=T0, slot_minutes=50, horizon_days=7
    )
    assert slot not in after and after[0] > slot
    # Cancelled, the slot is free again and can be booked once more.
    assert await bookings.cancel(wins[0].id, now=T0)
    await bookings.book(b.id, "@co:x", slot, 50, now=T0)
