"""The one context every feature is handed: built once when the bridge starts.

:class:`Context` is frozen: the store, the policy and its renderer, the clock,
the unit of work, the scheduler, the Matrix port, the command registry and the
other features' ports are fixed for the life of the process. What does change
while the bridge runs (the supervisors' room once it is made, per-room caches,
locks) lives in :class:`Live`, one plain object the context holds.

Besides the parts, the context carries the few helpers every feature needs:
the language of a person, committing a step, the counselor's case channel and
rooms made once even across a crash (:meth:`Context.ensure_room`), whether a
client's DM is private, and the caseloads matching works on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bridge.kernel import rooms
from bridge.kernel.effects import Effects
from bridge.kernel.matrix import Matrix
from bridge.kernel.render import Renderer
from bridge.kernel.work import CrashPoint, Work
from bridge.persistence.inbox import InboxItem
from bridge.persistence.pages import Pages
from bridge.persistence.store import BridgeStore, ClientRecord, Counselor
from e2ecounsel.domain import matching
from e2ecounsel.domain.crisis import CrisisDetector
from e2ecounsel.domain.text import fold_answer
from e2ecounsel.policy import Policy

if TYPE_CHECKING:
    from bridge.kernel.commands import Registry
    from bridge.kernel.ports import Features
    from bridge.persistence.bookings import Bookings
    from bridge.scheduler import DurableScheduler

logger = logging.getLogger(__name__)

#: How often one device is told that it is not trusted.
UNTRUSTED_NOTE_EVERY_S = 3600


@dataclass
class Live:
    """What changes while the bridge runs; owned by the context."""

    supervisors_room: str | None = None
    #: The supervisors last invited to each supervisors' room (skip re-reading members).
    synced_supervisors: dict[str, frozenset[str]] = field(default_factory=dict)
    #: DM room -> is it private (see :meth:`Context.is_private_dm`).
    private: dict[str, bool] = field(default_factory=dict)
    #: (sender, device key) -> when they were last told their device is not trusted.
    told_untrusted: dict[tuple[str, str], datetime] = field(default_factory=dict)
    #: Held while a client is matched, so two steps never place one client twice.
    match_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    case_locks: dict[str, asyncio.Lock] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """Everything a feature may use. Built once by the router; never changed."""

    matrix: Matrix
    store: BridgeStore
    policy: Policy
    render: Renderer
    clock: Callable[[], datetime]
    work: Work
    pages: Pages
    bookings: Bookings
    scheduler: DurableScheduler
    detector: CrisisDetector
    commands: Registry
    features: Features
    crash_point: CrashPoint
    live: Live
    #: Sends what is queued for these rooms now (all rooms with None).
    flush: Callable[[set[str] | None], Awaitable[None]] | None = None

    @property
    def bot(self) -> str:
        return self.matrix.user_id

    @property
    def max_chars(self) -> int:
        return self.policy.service.max_message_chars

    # ------------------------------------------------------------------ steps

    async def commit(self, fx: Effects, event_id: str | None) -> None:
        """One step's writes, messages and follow-ups in one transaction; then send them."""
        await self.work.commit(fx, event_id)

    async def audit(
        self, actor: str, action: str, engagement_id: int | None = None, detail: str = ""
    ) -> None:
        await self.store.audit(actor, action, engagement_id=engagement_id, detail=detail)

    def audit_fn(
        self, actor: str, action: str, engagement_id: int | None = None, detail: str = ""
    ) -> Callable[[], Awaitable[Any]]:
        """The audit line as a write of a step (see :meth:`Effects.write`)."""
        return lambda: self.audit(actor, action, engagement_id, detail)

    # ------------------------------------------------------------------ people

    def lang_of(self, client: ClientRecord | None) -> str:
        return self.policy.language(client.language if client else None)

    def counselor_lang(self, counselor: Counselor) -> str:
        return self.policy.language(counselor.languages[0] if counselor.languages else None)

    def means(self, answer: str, name: str) -> bool:
        """Whether ``answer`` (folded) is one of the words for ``name`` ("yes", "no", "skip",
        "auto"), in any language of the service (a client may answer in either)."""
        return fold_answer(answer) in self.policy.answer_words()[name]

    def refuse_untrusted(self, fx: Effects, item: InboxItem, lang: str) -> None:
        """The "your device is not verified" answer, at most once an hour per device."""
        key = (item.sender, item.sender_key or "plaintext")
        now = self.clock()
        last = self.live.told_untrusted.get(key)
        if last is not None and (now - last).total_seconds() < UNTRUSTED_NOTE_EVERY_S:
            return
        self.live.told_untrusted[key] = now
        logger.info("an event from an untrusted device in %s was not acted on", item.room_id)
        fx.say(item.room_id, self.render.text(lang, "trust.untrusted_sender"))

    # ------------------------------------------------------------------ rooms

    async def case_room(self, counselor: Counselor) -> str:
        """The bot's encrypted DM with a counselor (briefs, pages, digests).

        Created once: a burst of pages for a counselor without one waits on
        the counselor's lock and then finds the room the first one made.
        """
        if counselor.case_room_id:
            return counselor.case_room_id
        lock = self.live.case_locks.setdefault(counselor.user_id, asyncio.Lock())
        async with lock:
            fresh = await self.store.get_counselor(counselor.user_id)
            if fresh is not None and fresh.case_room_id:
                return fresh.case_room_id
            return await self._create_case_room(counselor)

    async def _create_case_room(self, counselor: Counselor) -> str:
        lang = self.counselor_lang(counselor)
        purpose = f"case:{counselor.user_id}"
        room_id = await self.ensure_room(
            purpose,
            counselor.user_id,
            rooms.private_room_body(
                name=self.render.text(lang, "case.room_name"), invite=[counselor.user_id]
            ),
        )
        fx = Effects(f"case-welcome:{room_id}")
        fx.write(lambda: self.store.set_case_room(counselor.user_id, room_id))
        fx.write(lambda: self.store.set_room(room_id, "case", counselor.user_id))
        fx.write(lambda: self.store.drop_room_request(purpose))
        fx.say(room_id, self.render.text(lang, "case.welcome"), reader=counselor.user_id)
        await self.commit(fx, None)
        self.crash_point("case_room.recorded")
        return room_id

    async def ensure_room(self, purpose: str, counselor_id: str, body: dict[str, Any]) -> str:
        """The room for ``purpose``: found again after a crash, else created (once).

        The request is committed before the homeserver is asked; a request
        that was tried before may have created a room whose answer was lost,
        so the bot's rooms are searched for the purpose marker first.
        """
        async with self.store.transaction():
            request = await self.store.request_room(purpose, counselor_id)
            if request.room_id is None:
                await self.store.room_attempted(purpose)
        if request.room_id is not None:
            return request.room_id
        if request.attempted_at is not None:
            found = await rooms.find_room(self.matrix, purpose, await self.store.known_rooms())
            if found is not None:
                logger.info("found the room of an interrupted creation again")
                await self.store.room_created(purpose, found)
                return found
        self.crash_point("room.requested")
        room_id = await rooms.create_room(self.matrix, body, purpose)
        self.crash_point("room.created")
        await self.store.room_created(purpose, room_id)
        return room_id

    async def is_private_dm(self, room_id: str) -> bool:
        """The client's DM holds exactly the two of us, encrypted, invite-only, not world-readable.

        Personal answers (intake, status, bookings) go nowhere else: a DM that
        someone made public, opened to a third person or world-readable is
        not private any more. The room's state is read from the homeserver
        once per room (the sync after a restart carries too little of it) and
        read again after the bridge saw the membership or those rules change
        (:meth:`room_changed`).
        """
        known = self.live.private.get(room_id)
        if known is not None:
            return known
        status, state = await self.matrix.raw(
            "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state"
        )
        if status != 200 or not isinstance(state, list):
            logger.warning("reading the state of %s failed: %s", room_id, status)
            return False
        members = 0
        encrypted = False
        join_rule = history = ""
        for event in state:
            if not isinstance(event, dict):
                continue
            content = event.get("content") or {}
            kind = event.get("type")
            if kind == "m.room.member" and content.get("membership") in ("join", "invite"):
                members += 1
            elif kind == "m.room.encryption":
                encrypted = True
            elif kind == "m.room.join_rules":
                join_rule = str(content.get("join_rule"))
            elif kind == "m.room.history_visibility":
                history = str(content.get("history_visibility"))
        private = encrypted and members == 2 and join_rule == "invite"
        private = private and history != "world_readable"
        self.live.private[room_id] = private
        return private

    def room_changed(self, room_id: str) -> None:
        """Membership or room rules changed: look at the room's privacy again."""
        self.live.private.pop(room_id, None)

    # ------------------------------------------------------------------ caseloads

    def match_request(self, client: ClientRecord, crisis: bool = False) -> matching.MatchRequest:
        """What matching needs; a crisis (now or during the intake) prefers on-call counselors."""
        profile = client.profile
        preferred = profile.get("preferred")
        return matching.MatchRequest(
            language=self.lang_of(client),
            topics=frozenset([profile["topic"]]) if profile.get("topic") else frozenset(),
            preferred=None if preferred in (None, "auto") else str(preferred),
            crisis=crisis or bool(profile.get("crisis")),
            prefer_on_call=self.policy.service.on_call.prefer_in_crisis,
        )

    def match_weights(self) -> matching.MatchWeights:
        w = self.policy.service.matching
        return matching.MatchWeights(specialty=w.specialty, load=w.load)

    async def counselor_loads(self, exclude: Collection[str] = ()) -> list[matching.CounselorLoad]:
        counselors = await self.store.list_counselors(active_only=True)
        loads = await self.store.caseloads(
            dormant_after_days=self.policy.service.dormant_after_days
        )
        return [
            matching.CounselorLoad(
                id=c.user_id,
                languages=frozenset(c.languages),
                specialties=frozenset(c.specialties),
                capacity=c.capacity,
                caseload=loads.get(c.user_id, 0),
                on_call=c.on_call,
                available=c.user_id not in exclude,
            )
            for c in counselors
        ]

    async def has_room(self, counselor_id: str) -> bool:
        """Whether a counselor is active and below their capacity."""
        return any(c.id == counselor_id and c.has_room for c in await self.counselor_loads())
