"""The bridge process: one bot account, one E2EE device, one database.

Wiring only. nio callbacks write each event into the durable inbox and
return at once; one worker per room hands the room's events to the
:class:`~bridge.router.Router` in order; the outbox flusher sends what the
router queued. A periodic tick retries the outbox and assigns waiting clients
when capacity frees up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nio import (
    ErrorResponse,
    InviteMemberEvent,
    MatrixRoom,
    MegolmEvent,
    RoomHistoryVisibilityEvent,
    RoomJoinRulesEvent,
    RoomMemberEvent,
    RoomMessageText,
)

from bridge.features import placement, supervision
from bridge.features.cadence import Cadence
from bridge.kernel.context import Context
from bridge.kernel.effects import AWAIT_JOIN, PLAINTEXT_OK, message_content, txn_id
from bridge.kernel.work import CrashPoint, Queued, handling_room, no_crash
from bridge.persistence.inbox import Inbox, InboxItem
from bridge.persistence.store import BridgeStore, OutboxItem, OutboxMark
from bridge.router import Router
from bridge.scheduler import DurableScheduler
from e2ecounsel.config import BridgeConfig
from e2ecounsel.errors import MatrixError
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.matrix.trust import IdentityChange, TrustPolicy
from e2ecounsel.policy import Policy, load_policy
from e2ecounsel.sealing import Sealer, load_or_create_key

logger = logging.getLogger(__name__)

# Lazy-loaded members keep syncs small with thousands of rooms; the session
# fetches a room's full member list once before it first encrypts there.
SYNC_FILTER = {
    "room": {
        "state": {"lazy_load_members": True},
        "timeline": {"limit": 50},
    },
    "presence": {"types": []},
}
# Incremental syncs carry state deltas only, so they need no lazy-loading. With it,
# Synapse sends again, in most batches, the bot's own membership of each room it
# spoke in (its cache of members sent keeps one event per user, and the bot has one
# per room): an event to parse and check each time, and, counted as a join, our own
# account named in device_lists.changed.
DELTA_FILTER = {"room": {"timeline": {"limit": 50}}, "presence": {"types": []}}
TICK_SECONDS = 5.0


@dataclass
class BridgeStatus:
    user_id: str
    device_id: str
    cross_signed: bool
    recovery_key: str | None = None  # only on the start that created the identity


class Bridge:
    """The bot. Built from a validated config; owns its session, store and tasks."""

    def __init__(
        self,
        config: BridgeConfig,
        sealer: Sealer,
        *,
        policy: Policy | None = None,
        tick_seconds: float = TICK_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        crash_point: CrashPoint = no_crash,
    ) -> None:
        self.config = config
        self.crash_point = crash_point
        self.clock = clock
        self.sealer = sealer
        self.policy = policy or load_policy(config.policies_dir)
        self.tick_seconds = tick_seconds
        self.session = MatrixSession(
            config.homeserver_url,
            config.bot_user_id,
            config.data_dir / "bot",
            sealer,
            device_name=config.device_name,
            sync_filter=SYNC_FILTER,
            delta_filter=DELTA_FILTER,
            resume_lazily=True,
        )
        self.supervisors_room = (
            config.supervisors_room or self.policy.service.supervisors_room or None
        )
        self.store: BridgeStore | None = None
        self.inbox: Inbox | None = None
        self.router: Router | None = None
        self.scheduler: DurableScheduler | None = None
        self.cadence: Cadence | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._rekicked: set[str] = set()  # rooms kicked while their worker ran
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}  # room -> its background flusher
        self._dirty: set[str] = set()  # rooms queued to since their flusher's last pass
        #: room -> its outbox mark when a pass last left nothing unsent there (see send_queued)
        self._drained: dict[str, OutboxMark] = {}
        self._told_unsigned: set[tuple[str, str]] = set()
        self._configured_supervisors = False
        self._ticker: asyncio.Task[None] | None = None
        self.session.add_event_callback(self._on_invite, InviteMemberEvent)
        self.session.add_event_callback(self._on_text, RoomMessageText)
        self.session.add_event_callback(self._on_undecryptable, MegolmEvent)
        self.session.add_event_callback(self._on_member, RoomMemberEvent)
        self.session.add_event_callback(
            self._on_room_rules, (RoomJoinRulesEvent, RoomHistoryVisibilityEvent)
        )

    @classmethod
    def from_config(cls, config: BridgeConfig) -> Bridge:
        key = load_or_create_key(config.data_dir / "sealing.key")
        return cls(config, Sealer(key))

    @property
    def ctx(self) -> Context:
        """The features' context (once :meth:`start` has built it)."""
        if self.router is None:
            raise RuntimeError("the bridge has not started")
        return self.router.ctx

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> BridgeStatus:
        """Open the store, sign in (or restore), finish what a crash left, start syncing."""
        self.store = await BridgeStore.open(self.config.database_target, self.sealer)
        self.inbox = Inbox(self.store.db)
        self.trust = TrustPolicy(
            self.policy.service.trust_mode,
            known_identities=self.data_dir / "bot" / "identities.json",
            on_identity_change=self._on_identity_change,
        )
        self.scheduler = DurableScheduler(
            self.store, misfire=self.policy.service.misfire, clock=self.clock, flush=self.flush
        )
        self.router = Router(
            self.session,
            self.store,
            self.policy,
            self.scheduler,
            supervisors_room=self.supervisors_room,
            mark_done=self.inbox.done,
            flush=self.flush,
            flush_later=self.flush_soon,
            send_queued=self.send_queued,
            clock=self.clock,
            trust=self.trust,
            look_up=self._look_up,
            crash_point=self.crash_point,
        )
        self.cadence = self.router.cadence
        await self.session.login(self.config.bot_password)
        signing = await self.session.ensure_cross_signing(self.config.bot_password)
        self.session.use_trust(self.trust)
        self.session.before_encrypt.append(self._apply_trust)
        await self.session.sync_once(0)
        await self._find_supervisors_room()
        # Whatever a crash left: events received but not handled, messages queued but not sent.
        for room_id in {item.room_id for item in await self.inbox.pending()}:
            self._kick(room_id)
        await self.flush()
        self.session.start()
        # Reminders: what fell due while we were down follows the misfire
        # policy; then the alarm is armed from the database.
        await self.cadence.plan_all(self.clock())
        await self.scheduler.start()
        # Follow-ups a crash interrupted (placements, rooms, erasures) resume now.
        self.background(self.ctx.work.run(), name="followups:start")
        self._ticker = asyncio.create_task(self._tick(), name="bridge-tick")
        return BridgeStatus(
            self.session.user_id,
            self.session.device_id,
            cross_signed=signing.device_cross_signed,
            recovery_key=signing.recovery_key,
        )

    async def _look_up(self, users: list[str]) -> None:
        assert self.trust is not None
        await self.trust.apply_users(self.session.client, users)

    async def _apply_trust(self, room_id: str) -> None:
        """Share room keys only with devices their owners cross-signed (MSC4153)."""
        report = await self.trust.apply(self.session.client, room_id)
        excluded = report.excluded_users() - {self.session.user_id}
        if excluded:
            logger.info(
                "%d member(s) of %s have devices left out: not cross-signed", len(excluded), room_id
            )
            devices = {d for d in report.excluded if d[0] in excluded} - self._told_unsigned
            if devices:
                self._told_unsigned |= devices
                self.background(
                    self._tell_unsigned({user for user, _ in devices}), name="trust:tell"
                )

    async def _tell_unsigned(self, users: set[str]) -> None:
        """Tell clients in plain words that a device of theirs gets no keys, and why.

        Their signed devices (if any) read it; the unsigned one shows an
        undecryptable message, which is the hint Element users know.
        """
        assert self.store is not None
        for user_id in users:
            client = await self.store.get_client(user_id)
            if client is None or client.dm_room_id is None:
                continue
            lang = self.ctx.lang_of(client)
            content = message_content(self.ctx.render.text(lang, "trust.unsigned_device"))
            cause = f"trust:{user_id}:{len(self._told_unsigned)}"
            await self.store.queue(client.dm_room_id, content, txn_id(cause, 0))
            await self.store.audit(user_id, "trust.device_excluded")
            await self.flush({client.dm_room_id})

    def _on_identity_change(self, change: IdentityChange) -> None:
        # Content-free: who changed identity, never anything they said.
        if self.store is not None:
            self.background(
                self.store.audit(change.user_id, "identity.changed"),
                name="audit:identity",
            )

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.session.stop()
        for task in [*self._workers.values(), *self._tasks]:
            task.cancel()
        for task in [*self._workers.values(), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.session.close()
        if self.store is not None:
            await self.store.close()

    def background(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task whose failure is logged, not lost."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("background task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.flush()
                await self.ctx.work.run()
                await placement.rematch_orphans(self.ctx)
                await supervision.keep_supervisors_room(
                    self.ctx, manage=not self._configured_supervisors
                )
                await placement.drain_waitlist(self.ctx, f"tick:{datetime.now(UTC):%Y%m%d%H%M%S}")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("periodic upkeep failed")

    # ------------------------------------------------------------------ callbacks

    def _allowed(self, user_id: str) -> bool:
        """The bot's own server, and servers the config or the policy allow."""
        if self.config.may_start_intake(user_id):
            return True
        server = user_id.partition(":")[2]
        allowed = self.policy.service.allowed_servers
        return bool(server) and ("*" in allowed or server in allowed)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key != self.session.user_id or event.membership != "invite":
            return
        if not self._allowed(event.sender) and room.room_id != self._supervisors():
            logger.info("ignoring an invite from a server that is not allowed")
            return
        self.background(self._join(room.room_id, event.sender), name=f"join:{room.room_id}")

    def _supervisors(self) -> str | None:
        """The supervisors' room now (the bridge may create it while running)."""
        return self.ctx.live.supervisors_room if self.router is not None else self.supervisors_room

    async def _find_supervisors_room(self) -> None:
        """The supervisors' room: a configured room id, else the one the bridge made.

        A configured alias is not used: whoever controls an alias can point it
        at a room of their own, and pages would follow. The room is kept by id.
        """
        assert self.store is not None
        configured = self.supervisors_room
        if configured and not configured.startswith("!"):
            logger.warning("supervisors_room must be a room id (!…), not an alias; ignored")
            configured = None
        self._configured_supervisors = configured is not None
        room_id = configured or await self.ctx.pages.supervisors_room()
        self.supervisors_room = self.ctx.live.supervisors_room = room_id
        if room_id:
            await self.store.set_room(room_id, "supervisors", None)
            if room_id not in self.session.client.rooms:
                resp = await self.session.client.join(room_id)
                if isinstance(resp, ErrorResponse):
                    logger.warning("joining the supervisors' room failed: %s", resp.status_code)

    async def _join(self, room_id: str, inviter: str) -> None:
        """Join a room someone invited the bot to; leave it if it is no room of ours.

        The bot talks in one-to-one DMs and in rooms it made itself (session
        rooms, case channels, the supervisors' room). A group room someone
        invites it to is none of those: it leaves at once, so nothing personal
        is ever said where a third person reads.
        """
        resp = await self.session.client.join(room_id)
        if isinstance(resp, ErrorResponse):
            logger.warning("joining %s failed: %s", room_id, resp.status_code)
            return
        room = await self.session.wait_for_room(room_id)
        if room_id == self._supervisors():
            return
        assert self.inbox is not None and self.store is not None
        if room.member_count > 2:
            if await self.store.room_kind(room_id) is None:
                logger.info("leaving %s: not a direct chat nor a room of ours", room_id)
                left = await self.session.client.room_leave(room_id)
                if isinstance(left, ErrorResponse):
                    logger.warning("leaving %s failed: %s", room_id, left.status_code)
            return
        item = InboxItem(f"joined:{room_id}", room_id, inviter, 0, "joined", "", room.encrypted)
        if await self.inbox.put(item):
            self._kick(room_id)

    async def _on_text(self, room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender == self.session.user_id:
            return
        await self._receive(room, event, "text", event.body)

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        if event.sender == self.session.user_id:
            return
        logger.warning("undecryptable event %s in %s", event.event_id, room.room_id)
        await self._receive(room, event, "undecryptable", "")

    async def _on_room_rules(self, room: MatrixRoom, event: Any) -> None:
        if self.router is not None:
            self.router.ctx.room_changed(room.room_id)

    async def _on_member(self, room: MatrixRoom, event: RoomMemberEvent) -> None:
        if self.router is not None:
            self.router.ctx.room_changed(room.room_id)
        # Someone joined: messages held for them (see AWAIT_JOIN) can go out now.
        if event.membership == "join" and event.state_key != self.session.user_id:
            self.background(self.flush({room.room_id}), name=f"flush:join:{room.room_id}")

    async def _receive(self, room: MatrixRoom, event: Any, kind: str, body: str) -> None:
        """Put the event in the inbox with what trust needs: decrypted? from which device key?

        An edit (``m.replace``) arrives as a new message whose body starts with
        ``* ``; it is recorded as an edit so it is never taken as a new answer.
        """
        assert self.inbox is not None
        source = getattr(event, "source", None) or {}
        content = source.get("content") if isinstance(source, dict) else None
        relates = content.get("m.relates_to") if isinstance(content, dict) else None
        if kind == "text" and isinstance(relates, dict) and relates.get("rel_type") == "m.replace":
            kind = "edit"
        item = InboxItem(
            event.event_id,
            room.room_id,
            event.sender,
            int(event.server_timestamp),
            kind,
            body,
            room.encrypted,
            decrypted=bool(getattr(event, "decrypted", False)),
            sender_key=str(getattr(event, "sender_key", None) or ""),
        )
        if await self.inbox.put(item):
            self._kick(room.room_id)

    # ------------------------------------------------------------------ workers

    def _kick(self, room_id: str) -> None:
        worker = self._workers.get(room_id)
        if worker is not None and not worker.done():
            self._rekicked.add(room_id)  # it reads the inbox again before it ends
            return
        self._workers[room_id] = asyncio.create_task(self._drain(room_id), name=f"room:{room_id}")

    async def _drain(self, room_id: str) -> None:
        assert self.inbox is not None and self.router is not None
        # This task's steps wait only for their sends to this room (see handling_room).
        handling_room.set(room_id)
        while True:
            self._rekicked.discard(room_id)
            items = await self.inbox.pending(room_id)
            if not items:
                return
            for item in items:
                try:
                    await self.router.handle(item, unhandled=True)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("handling event %s in %s failed", item.event_id, room_id)
                    # Leave it pending only once: a handler bug must not jam the room.
                    await self.inbox.done(item.event_id)
            if room_id not in self._rekicked:
                return  # nothing was put in the inbox for this room meanwhile

    async def _reader_joined(self, room_id: str, user_id: str) -> bool | None:
        """True once ``user_id`` joined ``room_id``; None while invited (or unsure); False if gone.

        The bot's rooms keep history from the invitation on, but room keys go
        only to the devices a reader has when the message is sent (see
        ``AWAIT_JOIN``); the message waits instead, and their join triggers a
        flush. With
        lazy-loaded members the sync may not name the reader at all; then the
        member state is asked for once.
        """
        room = self.session.client.rooms.get(room_id)
        if room is not None and user_id in room.users:
            return None if user_id in room.invited_users else True
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}"
        try:
            status, body = await self.session.raw("GET", path)
        except Exception:
            logger.warning("membership look-up in %s failed; will retry", room_id)
            return None
        if status == 404:
            return False
        if status != 200 or not isinstance(body, dict):
            return None
        membership = body.get("membership")
        if membership == "join":
            return True
        return None if membership == "invite" else False

    async def flush(self, only: set[str] | None = None) -> None:
        """Send what is queued: each room in order, rooms in parallel.

        ``only`` limits it to some rooms (a handler flushes the rooms it wrote
        to and does not wait for anyone else's). One lock per room keeps the
        order; the queue is read again under the lock, so two flushes never
        send the same item twice.
        """
        assert self.store is not None
        rooms = await self.store.unsent_rooms() if only is None else only
        await asyncio.gather(*(self._flush_room(room_id) for room_id in rooms))

    def flush_soon(self, rooms: set[str]) -> None:
        """Send what is queued for ``rooms`` in the background, coalesced.

        One flusher per room: while it sends, further rows queued there only
        mark the room, and its next pass takes all of them at once (fifty pages
        in a counselor's case channel are one read and fifty sends, not fifty
        flushes waiting on each other). Order is kept by the room's send lock.
        """
        for room_id in rooms:
            self._dirty.add(room_id)
            if room_id not in self._flushers:
                self._flushers[room_id] = self.background(
                    self._flush_behind(room_id), name=f"flush:{room_id}"
                )

    async def _flush_behind(self, room_id: str) -> None:
        try:
            while room_id in self._dirty:
                self._dirty.discard(room_id)
                await self._flush_room(room_id)
        finally:
            self._flushers.pop(room_id, None)

    async def send_queued(self, rooms: set[str], queued: dict[str, Queued]) -> None:
        """Send what is queued in ``rooms``, given the rows a step just queued there.

        The rows are in the outbox already (the step's transaction wrote them); when
        the room's outbox mark shows that they are all that is unsent there (the last
        pass left nothing, and no other row was queued or deleted since), they are
        sent as they are, without reading them back. Otherwise the room's queue is
        read, as :meth:`flush` does.
        """
        await asyncio.gather(*(self._flush_room(room, queued.get(room)) for room in rooms))

    async def _flush_room(self, room_id: str, queued: Queued | None = None) -> None:
        assert self.store is not None
        lock = self._send_locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            mark: OutboxMark | None = self.store.outbox_mark(room_id)
            drained = self._drained.pop(room_id, None)
            items: list[OutboxItem]
            if (
                queued is not None
                and drained is not None
                and drained.after(len(queued.rows)) == queued.mark == mark
            ):
                items = list(queued.rows)
            else:
                items = await self.store.unsent(room_id)
                if mark != self.store.outbox_mark(room_id) or mark.begun != mark.ended:
                    mark = None  # a row was queued meanwhile: this read may not hold it
            if await self._send_room(items) and mark is not None:
                self._drained[room_id] = mark

    async def _send_room(self, items: list[OutboxItem]) -> bool:
        """Send ``items`` in order; False if one must wait (the rest wait behind it)."""
        assert self.store is not None
        for item in items:
            content = dict(item.content)
            reader = content.pop(AWAIT_JOIN, None)
            if reader is not None:
                joined = await self._reader_joined(item.room_id, str(reader))
                if joined is None:
                    return False  # still invited: this room waits (in order) for its reader
                if not joined:
                    logger.info("dropping a message to %s: its reader left", item.room_id)
                    await self.store.mark_sent(item.txn_id, "")
                    continue
            try:
                plain = bool(content.pop(PLAINTEXT_OK, False))
                event_id = await self.session.send(
                    item.room_id, content, txn_id=item.txn_id, allow_plaintext=plain
                )
            except MatrixError as exc:
                if exc.errcode in ("M_FORBIDDEN", "M_NOT_FOUND", "M_UNKNOWN"):
                    logger.warning("dropping a message to %s: %s", item.room_id, exc.errcode)
                    await self.store.mark_sent(item.txn_id, "")
                    continue
                logger.warning("sending to %s failed (%s); will retry", item.room_id, exc.errcode)
                return False
            except Exception:
                logger.exception("sending to %s failed; will retry", item.room_id)
                return False
            self.crash_point("sent")
            await self.store.mark_sent(item.txn_id, event_id)
        return True
