"""Pruning of operational rows over real SQLite and PostgreSQL: old finished rows go, newer
and unfinished ones stay, and nothing pruned is ever handled, fired or followed up twice."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.kernel.effects import Effects, txn_id
from bridge.kernel.work import Work
from bridge.persistence.inbox import Inbox, InboxItem
from bridge.persistence.jobs import Job
from bridge.persistence.pruning import MARKERS_KEPT, Pruned, prune_operational
from bridge.persistence.store import ABOUT, BridgeStore, iso
from bridge.scheduler import DurableScheduler
from e2ecounsel.errors import PolicyError
from e2ecounsel.policy import MisfirePolicy, load_policy
from e2ecounsel.sealing import Sealer
from tests.clock import Clock
from tests.pgkit import Target

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAYS = 14


@dataclass
class Bridge:
    """The bridge's persistence parts on one database, all on one clock the test moves."""

    clock: Clock
    store: BridgeStore
    inbox: Inbox
    scheduler: DurableScheduler
    work: Work
    handled: list[str]
    fired: list[str]
    followed: list[dict[str, Any]]

    async def prune(self) -> Pruned:
        return await prune_operational(
            self.store, self.inbox, self.scheduler.jobs, operational_days=DAYS
        )

    async def receive(self, event_id: str, room: str = "!dm:x") -> bool:
        """What the sync callback and the room worker do with one event."""
        item = InboxItem(event_id, room, "@c:x", 1, "text", "hello", True)
        if not await self.inbox.put(item):
            return False
        for pending in await self.inbox.pending(room):
            if await self.store.is_handled(pending.event_id):
                continue
            self.handled.append(pending.event_id)
            fx = Effects(pending.event_id)
            fx.say(room, "answer")
            await self.work.commit(fx, pending.event_id)
        return True

    async def rows(self, table: str) -> int:
        return int(await self.store.db.fetchval(f"SELECT COUNT(*) FROM {table}"))


@pytest.fixture
async def bridge(database_target: Target) -> AsyncIterator[Bridge]:
    clock = Clock(T0)
    store = await BridgeStore.open(database_target, Sealer(b"p" * 32), clock=clock)
    inbox = Inbox(store.db, clock=clock)
    scheduler = DurableScheduler(store, misfire=MisfirePolicy(60, "fire-late"), clock=clock)
    work = Work(store, txn_id=txn_id, mark_done=inbox.done)
    b = Bridge(clock, store, inbox, scheduler, work, [], [], [])

    @scheduler.handle("remind")
    async def remind(job: Job, now: datetime) -> list[tuple[str, dict[str, Any]]]:
        b.fired.append(job.key)
        return [("!case:x", {"msgtype": "m.text", "body": "reminder"})]

    async def follow(payload: dict[str, Any]) -> None:
        b.followed.append(payload)

    @scheduler.handle("broken")
    async def broken(job: Job, now: datetime) -> list[tuple[str, dict[str, Any]]]:
        raise RuntimeError("the handler fails: the job stays pending")

    work.handle("place", follow)
    try:
        yield b
    finally:
        await store.close()


async def sent(store: BridgeStore, room: str, txn: str, event_id: str, **about: str) -> None:
    await store.queue(room, {"body": "x", **({ABOUT: about["about"]} if about else {})}, txn)
    await store.mark_sent(txn, event_id)


def test_the_policy_sets_the_age_within_one_to_365_days(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "policies"
    assert load_policy(shipped).service.retention.operational_days == 14
    copy = tmp_path / "policies"
    shutil.copytree(shipped, copy)
    service = copy / "service.toml"
    text = service.read_text(encoding="utf-8")
    service.write_text(text.replace("operational_days = 14", "operational_days = 30"), "utf-8")
    assert load_policy(copy).service.retention.operational_days == 30
    service.write_text(text.replace("operational_days = 14", "operational_days = 0"), "utf-8")
    with pytest.raises(PolicyError, match="operational_days"):
        load_policy(copy)
    service.write_text(text.replace("operational_days = 14\n", ""), "utf-8")
    assert load_policy(copy).service.retention.operational_days == 14


async def test_handled_inbox_rows_go_after_the_age_and_a_replay_is_not_handled_twice(
    bridge: Bridge,
) -> None:
    assert await bridge.receive("$old")
    bridge.clock.advance(days=DAYS - 1)
    assert await bridge.receive("$new")
    await bridge.inbox.put(InboxItem("$waiting", "!other:x", "@c:x", 1, "text", "hi", True))
    bridge.clock.advance(days=1, seconds=1)

    pruned = await bridge.prune()

    assert pruned.inbox == 1
    ids = {r["event_id"] for r in await bridge.store.db.fetchall("SELECT event_id FROM inbox")}
    assert ids == {"$new", "$waiting"}  # newer and unhandled rows stay
    # The sync stream delivers both handled events again: neither is handled twice.
    assert not await bridge.receive("$old")
    assert not await bridge.receive("$new")
    assert bridge.handled == ["$old", "$new"]
    assert [i.event_id for i in await bridge.inbox.pending()] == ["$waiting"]


async def test_an_inbox_row_given_up_on_leaves_a_marker_when_pruned(bridge: Bridge) -> None:
    await bridge.inbox.put(InboxItem("$broken", "!dm:x", "@c:x", 1, "text", "hi", True))
    await bridge.inbox.done("$broken")  # its handler failed; the room must not jam
    bridge.clock.advance(days=DAYS + 1)
    assert (await bridge.prune()).inbox == 1
    assert not await bridge.inbox.put(InboxItem("$broken", "!dm:x", "@c:x", 1, "text", "hi", True))


async def test_markers_outlive_the_rows_then_go_too(bridge: Bridge) -> None:
    assert await bridge.receive("$e")
    bridge.clock.advance(days=DAYS + 1)
    assert (await bridge.prune()).markers == 0
    assert await bridge.store.is_handled("$e")
    bridge.clock.now = T0 + MARKERS_KEPT + timedelta(seconds=1)
    assert (await bridge.prune()).markers == 1
    assert not await bridge.store.is_handled("$e")


async def test_sent_outbox_rows_go_but_stay_redactable_and_unsent_ones_stay(
    bridge: Bridge,
) -> None:
    store = bridge.store
    await sent(store, "!s:x", "t-old", "$old", about="@c:x")
    await store.queue("!s:x", {"body": "not sent yet"}, "t-unsent")
    bridge.clock.advance(days=DAYS - 1)
    await sent(store, "!s:x", "t-new", "$new")
    bridge.clock.advance(days=1, seconds=1)

    assert (await bridge.prune()).outbox == 1

    txns = {r["txn_id"] for r in await store.db.fetchall("SELECT txn_id FROM outbox")}
    assert txns == {"t-unsent", "t-new"}
    assert [i.txn_id for i in await store.unsent()] == ["t-unsent"]
    # The sealed copy is gone; erasure still finds the bot's old message to redact.
    assert await store.sent_events("!s:x") == ["$old", "$new"]
    assert await store.events_about("@c:x") == [("!s:x", "$old")]
    await store.forget_about("@c:x")
    assert await store.events_about("@c:x") == []
    await store.forget_room("!s:x")
    assert await store.sent_events("!s:x") == []
    assert await bridge.rows("sent_log") == 0


async def test_finished_jobs_go_pending_ones_stay_and_none_fires_twice(bridge: Bridge) -> None:
    sched = bridge.scheduler
    assert await sched.schedule("remind", T0, "!case:x", key="sla:1:remind")
    assert await sched.schedule("remind", T0, "!case:x", key="cancelled")
    assert await sched.cancel("cancelled") == 1
    assert await sched.schedule("broken", T0, "!case:x", key="overdue")
    assert await sched.run_due() == 2  # one fired, one failed (tried again each round)
    assert await sched.schedule("remind", T0 + timedelta(days=30), "!case:x", key="later")
    bridge.clock.advance(days=DAYS - 1)
    assert await sched.schedule("remind", bridge.clock.now, "!case:x", key="recent")
    assert await sched.run_due() == 2
    bridge.clock.advance(days=1, seconds=1)

    assert (await bridge.prune()).jobs == 2

    keys = {r["key"] for r in await bridge.store.db.fetchall("SELECT key FROM jobs")}
    assert keys == {"overdue", "later", "recent"}
    assert [j.key for j in await sched.pending()] == ["overdue", "later"]
    # A client's next message during the same wait plans the same reminder again.
    assert not await sched.schedule("remind", T0, "!case:x", key="sla:1:remind")
    assert not await sched.schedule("remind", T0, "!case:x", key="cancelled")
    assert await sched.run_due() == 1  # the failing one only
    assert bridge.fired == ["sla:1:remind", "recent"]


async def test_done_follow_ups_go_pending_ones_stay_and_none_runs_twice(bridge: Bridge) -> None:
    fx = Effects("step-1")
    fx.follow("place", client="@c:x")
    await bridge.work.commit(fx, None)
    waiting = Effects("step-2")
    waiting.follow("unknown-kind", client="@d:x")  # no handler: stays pending
    await bridge.work.commit(waiting, None)
    given_up = Effects("step-4")
    given_up.follow("unknown-kind", client="@f:x")
    await bridge.work.commit(given_up, None)
    (failed,) = await bridge.store.due_followups([given_up.follow_ups[0].key])
    await bridge.store.followup_failed(failed.id)  # waits for an operator
    bridge.clock.advance(days=DAYS - 1)
    recent = Effects("step-3")
    recent.follow("place", client="@e:x")
    await bridge.work.commit(recent, None)
    bridge.clock.advance(days=1, seconds=1)

    assert (await bridge.prune()).followups == 1

    assert await bridge.store.pending_followups() == 1
    assert await bridge.rows("followups") == 3
    assert [f.id for f in await bridge.store.failed_followups()] == [failed.id]
    again = Effects("step-1")
    again.follow("place", client="@c:x")
    await bridge.work.commit(again, None)
    assert bridge.followed == [{"client": "@c:x"}, {"client": "@e:x"}]
    assert await bridge.store.pending_followups() == 1


async def test_the_daily_retention_job_prunes_beside_the_client_data_retention(
    bridge: Bridge,
) -> None:
    from bridge.router import Router
    from tests.handlers.kit import RecordingMatrix

    policy = load_policy(None)
    store, clock = bridge.store, bridge.clock
    router = Router(
        RecordingMatrix(), store, policy, bridge.scheduler, supervisors_room=None, clock=clock
    )
    cadence = router.cadence
    await cadence.plan_all(clock())
    await sent(store, "!s:x", "t-old", "$old")
    fx = Effects("step-1")
    fx.follow("place", client="@c:x")
    await bridge.work.commit(fx, None)
    # The bridge's inbox writes on the wall clock; this row was handled long ago.
    await Inbox(store.db).put(InboxItem("$e", "!dm:x", "@c:x", 1, "text", "hi", True))
    long_ago = datetime.now(UTC) - timedelta(days=DAYS + 6)
    await store.db.execute("UPDATE inbox SET done_at = ?", (iso(long_ago),))
    clock.advance(days=DAYS + 1)

    await bridge.scheduler.run_due()

    assert await bridge.rows("outbox") == 0
    assert await bridge.rows("followups") == 0
    assert await bridge.rows("inbox") == 0
    assert await store.is_handled("$e")
    assert [j.kind for j in await bridge.scheduler.pending()] == ["retention.purge"]


async def test_a_pending_inbox_row_is_never_one_marked_handled(bridge: Bridge) -> None:
    # The room worker hands pending rows to the router without asking again.
    for event_id in ("$a", "$b"):
        await bridge.inbox.put(InboxItem(event_id, "!dm:x", "@c:x", 1, "text", "hi", True))
    await bridge.store.mark_handled("$a")
    assert [item.event_id for item in await bridge.inbox.pending("!dm:x")] == ["$b"]
    assert [item.event_id for item in await bridge.inbox.pending()] == ["$b"]
