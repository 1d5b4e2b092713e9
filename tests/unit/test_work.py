"""The unit of work over a real SQLite file: follow-ups commit with the step, run once
done, retry with back-off, survive a crash between commit and run."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.kernel.effects import Effects, txn_id
from bridge.kernel.work import Retry, Work, delay_after, handling_room
from bridge.persistence.store import BridgeStore
from e2ecounsel.errors import MatrixError
from e2ecounsel.sealing import Sealer
from tests.clock import Clock


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[BridgeStore]:
    clock = Clock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    s = await BridgeStore.open(tmp_path / "bridge.db", Sealer(secrets.token_bytes(32)), clock=clock)
    yield s
    await s.close()


def recorder(calls: list[dict[str, Any]], *, fail: int = 0, retry: bool = False):
    async def handler(payload: dict[str, Any]) -> None:
        calls.append(payload)
        if len(calls) <= fail:
            if retry:
                raise Retry("not yet")
            raise RuntimeError("homeserver said no")

    return handler


async def test_a_follow_up_commits_with_the_step_and_runs_after_it(store) -> None:
    calls: list[dict[str, Any]] = []
    work = Work(store, txn_id=txn_id)
    work.handle("place", recorder(calls))
    fx = Effects("event-1")
    fx.say("!dm:x", "hello")
    fx.follow("place", client="@c:x")
    await work.commit(fx, "event-1")
    assert calls == [{"client": "@c:x"}]
    assert await store.pending_followups() == 0
    assert await store.is_handled("event-1")


async def test_a_crash_after_the_commit_leaves_the_follow_up_for_the_restart(store) -> None:
    calls: list[dict[str, Any]] = []

    def crash(point: str) -> None:
        if point.startswith("committed"):
            raise Crash

    work = Work(store, txn_id=txn_id, crash_point=crash)
    work.handle("place", recorder(calls))
    fx = Effects("event-1")
    fx.follow("place", client="@c:x")
    with pytest.raises(Crash):
        await work.commit(fx, "event-1")
    assert calls == [] and await store.pending_followups() == 1
    # The step replayed (say its event came again) records nothing twice.
    again = Effects("event-1")
    again.follow("place", client="@c:x")
    restarted = Work(store, txn_id=txn_id)
    restarted.handle("place", recorder(calls))
    await restarted.commit(again, None)
    assert calls == [{"client": "@c:x"}]
    assert await restarted.run() == 0 and await store.pending_followups() == 0


async def test_a_crash_before_the_commit_leaves_nothing(store) -> None:
    async def boom() -> None:
        raise Crash

    work = Work(store, txn_id=txn_id)
    fx = Effects("event-1")
    fx.write(boom)
    fx.follow("place", client="@c:x")
    with pytest.raises(Crash):
        await work.commit(fx, "event-1")
    assert await store.pending_followups() == 0
    assert not await store.is_handled("event-1")


@pytest.mark.parametrize("retry", [False, True])
async def test_a_failed_follow_up_is_retried_with_back_off_until_done(store, retry) -> None:
    calls: list[dict[str, Any]] = []
    work = Work(store, txn_id=txn_id)
    work.handle("leave", recorder(calls, fail=2, retry=retry))
    fx = Effects("event-1")
    fx.follow("leave", room="!r:x")
    await work.commit(fx, None)
    assert len(calls) == 1 and await store.pending_followups() == 1
    assert await work.run() == 0, "not due before its back-off"
    clock = store._clock
    assert isinstance(clock, Clock)
    clock.now += delay_after(0)
    assert await work.run() == 0 and len(calls) == 2
    clock.now += delay_after(1) - timedelta(seconds=1)
    assert await work.run() == 0 and len(calls) == 2, "the second back-off is longer"
    clock.now += timedelta(seconds=1)
    assert await work.run() == 1 and len(calls) == 3
    assert await store.pending_followups() == 0


async def test_a_done_follow_up_keeps_no_payload(store) -> None:
    work = Work(store, txn_id=txn_id)
    work.handle("erase.about", recorder([]))
    fx = Effects("event-1")
    fx.follow("erase.about", subject="@client:x")
    await work.commit(fx, None)
    rows = await store.db.fetchall("SELECT status, payload FROM followups")
    assert [(r["status"], r["payload"]) for r in rows] == [("done", None)]


async def test_the_follow_up_is_written_inside_the_steps_transaction(store) -> None:
    seen: list[int] = []

    async def mark_done(event_id: str) -> None:
        # Called inside the step's transaction, after its writes and follow-ups.
        seen.append(await store.pending_followups())

    work = Work(store, txn_id=txn_id, mark_done=mark_done, crash_point=_crash)
    fx = Effects("event-1")
    fx.follow("place", client="@c:x")
    with pytest.raises(Crash):
        await work.commit(fx, "event-1")
    assert seen == [1]


def _crash(point: str) -> None:
    raise Crash


async def test_finished_follow_ups_are_forgotten_after_a_week(store) -> None:
    work = Work(store, txn_id=txn_id)
    work.handle("sla", recorder([]))
    for n in range(2):
        fx = Effects(f"event-{n}")
        fx.follow("sla", room="!r:x")
        await work.commit(fx, None)
    fx = Effects("event-late")
    fx.follow("unknown-kind", room="!r:x")
    await work.commit(fx, None)  # no handler: stays pending, never purged
    clock = store._clock
    assert isinstance(clock, Clock)
    clock.now += timedelta(days=6)
    assert await store.purge_followups(timedelta(days=7)) == 0
    clock.now += timedelta(days=2)
    assert await store.purge_followups(timedelta(days=7)) == 2
    assert await store.pending_followups() == 1


async def hourly(store: BridgeStore, handler, runs: int) -> None:
    """Commit one ``erase.room`` follow-up (at most 3 refused attempts), then run every hour."""
    work = Work(store, txn_id=txn_id, max_attempts=3)
    work.handle("erase.room", handler)
    fx = Effects("event-1")
    fx.follow("erase.room", room="!r:x", client="@client:x")
    await work.commit(fx, None)
    clock = store._clock
    assert isinstance(clock, Clock)
    for _ in range(runs):
        clock.now += timedelta(hours=1)
        await work.run()


async def test_a_follow_up_that_keeps_failing_is_given_up_and_reported(store, caplog) -> None:
    calls: list[dict[str, Any]] = []
    await hourly(store, recorder(calls, fail=100), 4)  # say a kick that always gets 403
    assert len(calls) == 3, "no attempt after the third"
    assert await store.pending_followups() == 0
    [failed] = await store.failed_followups()
    assert (failed.kind, failed.attempts) == ("erase.room", 3)
    [line] = [r for r in caplog.records if "given up" in r.getMessage()]
    assert line.levelname == "WARNING" and "@client:x" not in line.getMessage()
    [audit] = [a for a in await store.audit_lines() if a.action == "followup.failed"]
    assert audit.detail == f"erase.room:{failed.id}"


async def test_a_follow_up_that_recovers_before_the_limit_is_not_given_up(store) -> None:
    calls: list[dict[str, Any]] = []
    await hourly(store, recorder(calls, fail=2), 2)
    assert len(calls) == 3 and await store.failed_followups() == []
    assert await store.pending_followups() == 0


@pytest.mark.parametrize(
    "error",
    [
        Retry("the goodbye is not sent yet"),
        OSError("connection refused"),
        TimeoutError(),
        MatrixError("removing a member: 502", status=502),
        MatrixError("creating a room: rate limited", status=429),
    ],
)
async def test_an_unreachable_homeserver_or_a_wait_never_gives_a_follow_up_up(store, error) -> None:
    calls: list[dict[str, Any]] = []

    async def handler(payload: dict[str, Any]) -> None:
        calls.append(payload)
        if len(calls) <= 6:
            raise error

    await hourly(store, handler, 6)
    assert len(calls) == 7 and await store.failed_followups() == []
    assert await store.pending_followups() == 0


async def test_a_refusal_of_the_homeserver_counts_towards_giving_up(store) -> None:
    calls: list[dict[str, Any]] = []

    async def handler(payload: dict[str, Any]) -> None:
        calls.append(payload)
        if len(calls) % 2:
            raise OSError("connection reset")  # between outages: 403 every time
        raise MatrixError("removing a member: 403", status=403)

    await hourly(store, handler, 8)
    [failed] = await store.failed_followups()
    assert len(calls) == 6 and failed.attempts == 6


async def test_on_an_events_path_only_its_own_room_is_waited_for(store) -> None:
    """A step handling an event in the client's DM waits for its send there; its pages
    to other rooms are queued durably and handed to the background sender."""
    waited: list[set[str] | None] = []
    later: list[set[str]] = []

    async def flush(rooms: set[str] | None) -> None:
        waited.append(rooms)

    work = Work(store, txn_id=txn_id, flush=flush)
    work.flush_later = later.append
    fx = Effects("event-1")
    fx.say("!dm:x", "the crisis reply")
    fx.say("!case:x", "a page")
    fx.say("!supervisors:x", "a page")
    token = handling_room.set("!dm:x")
    try:
        await work.commit(fx, "event-1")
    finally:
        handling_room.reset(token)
    assert waited == [{"!dm:x"}]
    assert later == [{"!case:x", "!supervisors:x"}]
    # Durable before the commit returned: a crash now is finished by the next start.
    assert {item.room_id for item in await store.unsent()} == {"!dm:x", "!case:x", "!supervisors:x"}

    # A follow-up on that path, and anything outside it (the tick, the scheduler, a
    # restart), waits for all its rooms: it may act on a room right after writing to it.
    for handling in ("!dm:x", None):
        fx = Effects(f"follow-up-{handling}")
        fx.say("!session:x", "this room stays yours")
        fx.say("!case:x", "handed over")
        token = handling_room.set(handling)
        try:
            await work.commit(fx, None)
        finally:
            handling_room.reset(token)
        assert waited[-1] == {"!session:x", "!case:x"} and len(later) == 1
