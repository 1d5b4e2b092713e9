"""The unit of work: what one step decided, committed at once, and what it leaves to do.

A step (handling one event, one follow-up) reads what it needs and collects its
decisions: state writes, messages for the outbox, and follow-ups — side
effects that cannot live inside a database transaction (creating a room,
redacting, kicking, leaving) or that need locks the step does not hold
(placing a client). :meth:`Work.commit` writes all three in ONE transaction,
with the event marked handled, then sends the messages and runs the
follow-ups.

A follow-up is a row (``followups``) with a key derived from its cause, so a
replayed step adds nothing twice. It runs right after the commit and, until
it is done, again at every tick and after a restart, with back-off between
failed attempts. After :data:`MAX_ATTEMPTS` refused attempts (say a kick
that always gets 403, or a bug) it is marked ``failed`` (a warning and an
audit line, ids only; see :meth:`bridge.persistence.store.BridgeStore.failed_followups`)
and left to an operator instead of being retried forever. Attempts that could
not reach the homeserver (no connection, a timeout, 5xx, 429) and follow-ups
that wait (:class:`Retry`) do not count: an outage, however long, gives up on
nothing. Handlers are therefore idempotent: each checks the state it
would change and does nothing twice (rooms are created with a marker in their
creation content and found again after a crash; messages use deterministic
transaction ids). A follow-up that cannot finish yet raises :class:`Retry`.

``crash_point(name)`` is called between side effects. In production it does
nothing; fault tests make it kill the process, to prove that a crash at any
such point loses and repeats nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import aiohttp

from bridge.persistence.store import BridgeStore, OutboxItem, OutboxMark, PendingFollowUp
from e2ecounsel.errors import MatrixError

logger = logging.getLogger(__name__)

FollowUpHandler = Callable[[dict[str, Any]], Awaitable[None]]
CrashPoint = Callable[[str], None]
#: Back-off of a failed follow-up: 5 s, 10 s, 20 s ... at most 10 minutes.
_FIRST_DELAY = 5.0
_MAX_DELAY = 600.0
#: Refused attempts (including the first) before a follow-up is given up:
#: with the back-off above, about three hours of trying.
MAX_ATTEMPTS = 25
#: The room whose event the running task handles (set by that room's worker). The
#: step of that event sends its messages to this room before :meth:`Work.commit`
#: returns; its messages to any other room (a page in a counselor's case channel, the
#: supervisors' room) are handed to ``Work.flush_later`` and go out in the background,
#: so the sender's next message is never held up by them. Follow-ups (no event of
#: their own; some act on a room right after writing to it, like a goodbye before a
#: kick), the tick and the scheduler send everything they queued before returning.
handling_room: ContextVar[str | None] = ContextVar("handling_room", default=None)


def no_crash(_point: str) -> None:
    """The production crash point: nothing happens."""


class Retry(Exception):
    """A follow-up cannot finish yet (a message it must wait for is still queued)."""


@dataclass(frozen=True)
class FollowUp:
    """One side effect a step decided on: handler ``kind`` with a JSON ``payload``."""

    kind: str
    payload: dict[str, Any]
    key: str


@dataclass(frozen=True)
class Queued:
    """The rows one step queued in a room, as written, and the room's outbox mark right
    after them (inside the step's transaction): the sender sends these without
    reading them back when the mark shows nothing else is unsent there."""

    rows: tuple[OutboxItem, ...]
    mark: OutboxMark


#: Sends the rooms' queues, given what the step just queued in each (see :class:`Queued`).
SendQueued = Callable[[set[str], dict[str, Queued]], Awaitable[None]]


class Step(Protocol):
    """What :meth:`Work.commit` needs of a step's effects (see :class:`bridge.effects.Effects`)."""

    cause: str

    @property
    def messages(self) -> Sequence[tuple[str, dict[str, Any]]]: ...

    @property
    def writes(self) -> Sequence[Callable[[], Awaitable[Any]]]: ...

    @property
    def follow_ups(self) -> Sequence[FollowUp]: ...


def unreachable(exc: BaseException) -> bool:
    """True if ``exc`` means the homeserver could not be reached or asked us to wait."""
    if isinstance(exc, MatrixError):
        return exc.status is not None and (exc.status >= 500 or exc.status == 429)
    return isinstance(exc, (OSError, TimeoutError, aiohttp.ClientError))


def delay_after(attempts: int) -> timedelta:
    return timedelta(seconds=min(_FIRST_DELAY * 2**attempts, _MAX_DELAY))


class Work:
    """Commits steps and runs their follow-ups; handlers are registered by kind."""

    def __init__(
        self,
        store: BridgeStore,
        *,
        txn_id: Callable[[str, int], str],
        mark_done: Callable[[str], Awaitable[None]] | None = None,
        flush: Callable[[set[str] | None], Awaitable[None]] | None = None,
        flush_later: Callable[[set[str]], None] | None = None,
        send_queued: SendQueued | None = None,
        crash_point: CrashPoint = no_crash,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self._txn_id = txn_id
        self._mark_done = mark_done
        self._flush = flush
        #: Sends the given rooms' queue in the background (see :data:`handling_room`);
        #: None: every room is flushed before the commit returns.
        self.flush_later = flush_later
        #: Sends a step's rooms with the rows it queued in hand; None: ``flush`` reads them.
        self._send_queued = send_queued
        self.crash_point = crash_point
        self.handlers: dict[str, FollowUpHandler] = {}
        self._running: set[int] = set()

    def handle(self, kind: str, fn: FollowUpHandler) -> None:
        """Register the handler of one follow-up kind."""
        self.handlers[kind] = fn

    async def commit(self, fx: Step, event_id: str | None, *, follow: bool = True) -> None:
        """Write, queue and record follow-ups atomically; then send and follow up.

        With ``follow`` False the follow-ups are left to the caller (who holds
        a lock they need) or to the next round.
        """
        async with self.store.transaction():
            for write in fx.writes:
                await write()
            rows: dict[str, list[OutboxItem]] = {}
            for i, (room_id, content) in enumerate(fx.messages):
                row = await self.store.queue_item(room_id, content, self._txn_id(fx.cause, i))
                rows.setdefault(room_id, [])
                if row is not None:
                    rows[room_id].append(row)
            queued = {
                room: Queued(tuple(mine), self.store.outbox_mark(room))
                for room, mine in rows.items()
            }
            for follow_up in fx.follow_ups:
                await self.store.add_followup(follow_up.key, follow_up.kind, follow_up.payload)
            if event_id is not None:
                if self._mark_done is not None:
                    await self._mark_done(event_id)
                await self.store.mark_handled(event_id)
        self.crash_point(f"committed:{fx.follow_ups[0].kind}" if fx.follow_ups else "committed")
        # Send first: a crisis reply must not wait for follow-ups such as
        # opening a room. Only the rooms this step wrote to are flushed here, and
        # on an event's handling path only its own room is waited for. The rows are
        # in the outbox already: whatever a crash interrupts, the next start sends.
        if self._flush is not None and fx.messages:
            rooms = {room for room, _ in fx.messages}
            here = handling_room.get()
            if here is not None and event_id is not None and self.flush_later is not None:
                if rooms - {here}:
                    self.flush_later(rooms - {here})
                rooms &= {here}
            if rooms and self._send_queued is not None:
                await self._send_queued(rooms, queued)
            elif rooms:
                await self._flush(rooms)
        if follow and fx.follow_ups:
            await self.run([f.key for f in fx.follow_ups])

    async def run(self, keys: Collection[str] | None = None) -> int:
        """Run pending follow-ups (those due, or the ones named); return how many finished.

        One runs at a time per row: a row another task is running is skipped
        (its runner finishes it or leaves it for the next round).
        """
        done = 0
        for follow_up in await self.store.due_followups(None if keys is None else list(keys)):
            if follow_up.id in self._running:
                continue
            self._running.add(follow_up.id)
            try:
                done += await self._run_one(follow_up)
            finally:
                self._running.discard(follow_up.id)
        return done

    async def _run_one(self, follow_up: PendingFollowUp) -> int:
        handler = self.handlers.get(follow_up.kind)
        if handler is None:
            logger.error("no handler for follow-up kind %s (%d)", follow_up.kind, follow_up.id)
            await self.store.followup_later(follow_up.id, delay_after(follow_up.attempts))
            return 0
        refused = False
        try:
            await handler(follow_up.payload)
        except Retry:
            logger.info("follow-up %d (%s) waits; retried later", follow_up.id, follow_up.kind)
        except Exception as exc:
            refused = not unreachable(exc)
            logger.exception(
                "follow-up %d (%s) failed (attempt %d)",
                follow_up.id,
                follow_up.kind,
                follow_up.attempts + 1,
            )
        else:
            await self.store.followup_done(follow_up.id)
            return 1
        if refused and follow_up.failures + 1 >= self.max_attempts:
            await self._give_up(follow_up)
        else:
            delay = delay_after(follow_up.attempts)
            await self.store.followup_later(follow_up.id, delay, failed=refused)
        return 0

    async def _give_up(self, follow_up: PendingFollowUp) -> None:
        """Refused too often: stop retrying; an operator sees it in ``failed_followups``."""
        logger.warning(
            "follow-up %d (%s) given up after %d attempts (%d refused)",
            follow_up.id,
            follow_up.kind,
            follow_up.attempts + 1,
            follow_up.failures + 1,
        )
        async with self.store.transaction():
            await self.store.followup_failed(follow_up.id)
            await self.store.audit(
                "bridge", "followup.failed", detail=f"{follow_up.kind}:{follow_up.id}"
            )
