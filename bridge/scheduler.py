"""Durable scheduling: the database holds every job, APScheduler is only the timer.

Every reminder, digest and escalation is a row in ``jobs`` (kind, due time,
target, sealed payload, status) with a unique ``key`` naming its cause, so
scheduling the same thing twice is harmless. One APScheduler date job — the
"alarm" — is armed for the earliest pending row; when it rings, every due
row is fired in order and the alarm is re-armed. At start the alarm is armed
from the rows, so nothing depends on APScheduler's own (in-memory) job store.

Firing a job is one transaction: the messages it produces go to the outbox
with transaction ids derived from the job's key, and the row is marked done.
Killed before that transaction, the job is still pending and fires again;
killed after it, the outbox flush sends the messages and the homeserver drops
a repeated transaction id. Nothing is lost, nothing is sent twice.

Misfires (jobs whose time passed while the bridge was down) follow policy:
within ``grace_seconds`` they fire as if on time; older ones fire late one by
one (``fire-late``) or are folded into one summary per target
(``summarize``). They are never silently dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from bridge.persistence.jobs import Job, Jobs
from bridge.persistence.store import BridgeStore
from e2ecounsel.policy import MisfirePolicy

logger = logging.getLogger(__name__)

_ALARM_ID = "e2ecounsel-alarm"

Message = tuple[str, dict[str, Any]]


# A handler decides what a job says when it fires; it reads state but writes
# nothing: the scheduler commits its messages and the job's status together.
JobHandler = Callable[[Job, datetime], Awaitable[Sequence[Message]]]
# Folds late jobs of one target into the messages of a single summary.
Summarizer = Callable[[str, Sequence[Job], datetime], Awaitable[Sequence[Message]]]


def job_txn(key: str, index: int) -> str:
    """The outbox transaction id of a job's ``index``-th message (stable across restarts)."""
    digest = hashlib.sha256(f"job:{key}\x00{index}".encode()).hexdigest()[:40]
    return f"e2c.j.{digest}"


class DurableScheduler:
    """Jobs from the database, fired by one APScheduler alarm; clock injected."""

    def __init__(
        self,
        store: BridgeStore,
        *,
        misfire: MisfirePolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        flush: Callable[[], Awaitable[None]] | None = None,
        summarize: Summarizer | None = None,
        timer: AsyncIOScheduler | None = None,
    ) -> None:
        self.store = store
        self.jobs = Jobs(store.db, clock=clock)
        self.misfire = misfire
        self.clock = clock
        self._flush = flush
        self.summarize = summarize
        self.handlers: dict[str, JobHandler] = {}
        self._timer = timer
        self._lock = asyncio.Lock()
        self._running = False
        self._arm_task: asyncio.Task[None] | None = None

    def handle(self, kind: str) -> Callable[[JobHandler], JobHandler]:
        """Register the handler of one job kind (decorator)."""

        def register(fn: JobHandler) -> JobHandler:
            self.handlers[kind] = fn
            return fn

        return register

    # ------------------------------------------------------------------ rows

    async def schedule(
        self,
        kind: str,
        due: datetime,
        target: str,
        *,
        key: str,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        """Add a job unless one with ``key`` exists (or existed); True when it was added."""
        added = await self.jobs.add(kind, due, target, key=key, payload=payload or {})
        if added and self._running:
            self._arm()
        return added

    async def cancel(self, key_prefix: str) -> int:
        """Cancel pending jobs whose key starts with ``key_prefix`` (a booking cancelled)."""
        return await self.jobs.cancel(key_prefix)

    async def pending(self, *, due_by: datetime | None = None) -> list[Job]:
        return await self.jobs.pending(due_by=due_by)

    async def next_due(self) -> datetime | None:
        return await self.jobs.next_due()

    # ------------------------------------------------------------------ firing

    async def run_due(self, now: datetime | None = None) -> int:
        """Fire every job due at ``now`` (the injected clock by default); return how many."""
        async with self._lock:
            now = now or self.clock()
            due = await self.pending(due_by=now)
            grace = timedelta(seconds=self.misfire.grace_seconds)
            late = [j for j in due if now - j.due > grace]
            fired = 0
            if late and self.misfire.mode == "summarize" and self.summarize is not None:
                late_ids = {j.id for j in late}
                by_target: dict[str, list[Job]] = {}
                for job in late:
                    by_target.setdefault(job.target, []).append(job)
                for target, jobs in by_target.items():
                    await self._fold(target, jobs, now)
                    fired += len(jobs)
                due = [j for j in due if j.id not in late_ids]
            for job in due:
                await self._fire(job, now)
                fired += 1
        if fired and self._flush is not None:
            await self._flush()
        if self._running:
            self._arm()
        return fired

    async def _fire(self, job: Job, now: datetime) -> None:
        handler = self.handlers.get(job.kind)
        messages: Sequence[Message] = ()
        status = "done"
        if handler is None:
            logger.error("no handler for job kind %s (job %d); marked skipped", job.kind, job.id)
            status = "skipped"
        else:
            try:
                messages = await handler(job, now)
            except Exception:
                logger.exception("job %d (%s) failed; it stays pending", job.id, job.kind)
                return
        async with self.store.transaction():
            for i, (room_id, content) in enumerate(messages):
                await self.store.queue(room_id, content, job_txn(job.key, i))
            await self.jobs.finish(job.id, status, now)

    async def _fold(self, target: str, jobs: Sequence[Job], now: datetime) -> None:
        assert self.summarize is not None
        try:
            messages = await self.summarize(target, jobs, now)
        except Exception:
            logger.exception("summary of %d late job(s) failed; they stay pending", len(jobs))
            return
        key = f"summary:{jobs[0].key}"
        async with self.store.transaction():
            for i, (room_id, content) in enumerate(messages):
                await self.store.queue(room_id, content, job_txn(key, i))
            for job in jobs:
                await self.jobs.finish(job.id, "folded", now)

    # ------------------------------------------------------------------ the alarm

    async def start(self) -> int:
        """Fire what is due (misfires included), then arm the alarm from the rows."""
        if self._timer is None:
            self._timer = AsyncIOScheduler(timezone=UTC)
        if not self._timer.running:
            self._timer.start()
        self._running = True
        return await self.run_due()

    async def stop(self) -> None:
        """Stop the alarm; a firing in progress finishes first (its transaction is whole)."""
        self._running = False
        if self._arm_task is not None and not self._arm_task.done():
            self._arm_task.cancel()
        async with self._lock:
            if self._timer is not None and self._timer.running:
                self._timer.shutdown(wait=False)

    def _arm(self) -> None:
        """(Re)arm the one alarm for the earliest pending job."""
        if self._timer is None:
            return
        if self._arm_task is not None and not self._arm_task.done():
            self._arm_task.cancel()
        self._arm_task = asyncio.get_running_loop().create_task(self._arm_async())

    async def _arm_async(self) -> None:
        try:
            due = await self.next_due()
        except asyncio.CancelledError:
            return
        if self._timer is None or not self._running:
            return
        if due is None:
            if self._timer.get_job(_ALARM_ID) is not None:
                self._timer.remove_job(_ALARM_ID)
            return
        # The alarm runs on the real clock; with an injected clock the tests
        # call run_due() themselves.
        when = max(due, datetime.now(UTC) + timedelta(milliseconds=10))
        self._timer.add_job(
            self.run_due,
            DateTrigger(run_date=when, timezone=UTC),
            id=_ALARM_ID,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )
