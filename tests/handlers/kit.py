"""The handler tier: the bridge's features over a real SQLite file and a recording Matrix.

No homeserver: :class:`RecordingMatrix` answers every request the features
make (rooms are created, members read, messages redacted) and keeps them, and
:class:`Hub` runs the real router, unit of work, outbox and follow-ups, and
"sends" what the outbox holds into the recording. A test then asserts on what
each person would have been sent, in which room, with which case fact. The
flows that need real E2EE, real timing and a real homeserver are tested in the
Synapse tiers.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.kernel.effects import AWAIT_JOIN, PLAINTEXT_OK
from bridge.persistence.inbox import InboxItem
from bridge.persistence.store import BridgeStore, Counselor
from bridge.router import Router
from bridge.scheduler import DurableScheduler
from e2ecounsel import casechannel
from e2ecounsel.casechannel import CaseEvent
from e2ecounsel.policy import Policy
from e2ecounsel.sealing import Sealer
from tests.clock import Clock
from tests.integration.bridgekit import counselor_record

BOT = "@e2ecounsel:test"


@dataclass
class Sent:
    room_id: str
    content: dict[str, Any]

    @property
    def body(self) -> str:
        return str(self.content.get("body", ""))

    @property
    def case(self) -> CaseEvent | None:
        return casechannel.parse(self.content)


@dataclass
class RecordingMatrix:
    """The homeserver as the features see it, answering every request and keeping it."""

    user_id: str = BOT
    requests: list[tuple[str, str, Mapping[str, Any] | None]] = field(default_factory=list)
    #: room -> user -> membership, as the homeserver would answer.
    members: dict[str, dict[str, str]] = field(default_factory=dict)
    #: rooms whose state is a private, encrypted DM of two.
    dms: set[str] = field(default_factory=set)
    _rooms: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def raw(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if path.endswith("/createRoom"):
            room_id = f"!room{next(self._rooms)}:test"
            invited = list((body or {}).get("invite", []))
            self.members[room_id] = {self.user_id: "join", **dict.fromkeys(invited, "invite")}
            return 200, {"room_id": room_id}
        room_id = _room_of(path)
        if path.endswith("/members"):
            chunk = [
                {"state_key": u, "content": {"membership": m}}
                for u, m in self.members.get(room_id, {}).items()
            ]
            return 200, {"chunk": chunk}
        if path.endswith("/state") and method == "GET":
            return 200, self._dm_state(room_id)
        if path.endswith("/kick"):
            self.members.setdefault(room_id, {})[str((body or {})["user_id"])] = "leave"
        if path.endswith("/invite"):
            self.members.setdefault(room_id, {})[str((body or {})["user_id"])] = "invite"
        if path.endswith("/joined_rooms"):
            return 200, {"joined_rooms": list(self.members)}
        return 200, {}

    def synced_members(self, room_id: str) -> frozenset[str] | None:
        known = self.members.get(room_id)
        if known is None:
            return None
        return frozenset(u for u, m in known.items() if m in ("join", "invite"))

    def _dm_state(self, room_id: str) -> list[dict[str, Any]]:
        if room_id not in self.dms:
            return []
        people = self.members.get(room_id, {})
        return [
            {"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.join_rules", "content": {"join_rule": "invite"}},
            {"type": "m.room.history_visibility", "content": {"history_visibility": "invited"}},
            *(
                {"type": "m.room.member", "state_key": u, "content": {"membership": m}}
                for u, m in people.items()
            ),
        ]

    def calls(self, ending: str) -> list[tuple[str, str, Mapping[str, Any] | None]]:
        return [r for r in self.requests if r[1].endswith(ending) or ending in r[1]]


def _room_of(path: str) -> str:
    from urllib.parse import unquote

    parts = path.split("/rooms/", 1)
    return unquote(parts[1].split("/", 1)[0]) if len(parts) == 2 else ""


class Hub:
    """The real router over a real store, a recording Matrix and a settable clock."""

    def __init__(self, store: BridgeStore, policy: Policy, clock: Clock) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.matrix = RecordingMatrix()
        self.sent: list[Sent] = []
        self._events = itertools.count(1)
        scheduler = DurableScheduler(
            store, misfire=policy.service.misfire, clock=clock, flush=self.flush
        )
        self.router = Router(
            self.matrix,
            store,
            policy,
            scheduler,
            supervisors_room=None,
            clock=clock,
            flush=self.flush,
        )
        self.ctx = self.router.ctx

    async def flush(self, only: set[str] | None = None) -> None:
        """Send what the outbox holds (a message held for a reader goes once they joined)."""
        rooms = await self.store.unsent_rooms()
        for room_id in sorted(rooms if only is None else rooms & only):
            for item in await self.store.unsent(room_id):
                content = dict(item.content)
                reader = content.pop(AWAIT_JOIN, None)
                if (
                    reader is not None
                    and self.matrix.members.get(room_id, {}).get(reader) != "join"
                ):
                    break
                content.pop(PLAINTEXT_OK, None)
                self.sent.append(Sent(room_id, content))
                await self.store.mark_sent(item.txn_id, f"$sent{len(self.sent)}")

    # ------------------------------------------------------------------ people

    async def counselor(self, user_id: str, name: str, **over: object) -> Counselor:
        record = counselor_record(user_id, name, **over)
        await self.store.add_counselor(record)
        return record

    def join(self, room_id: str, user_id: str) -> None:
        self.matrix.members.setdefault(room_id, {})[user_id] = "join"

    async def event(self, room_id: str, sender: str, body: str, kind: str = "text") -> str:
        """``sender`` writes ``body`` in ``room_id`` from a verified device; the bot handles it."""
        event_id = f"$e{next(self._events)}"
        await self.router.handle(
            InboxItem(
                event_id=event_id,
                room_id=room_id,
                sender=sender,
                ts=int(self.clock().timestamp() * 1000),
                kind=kind,
                body=body,
                encrypted=True,
                decrypted=True,
                sender_key=f"curve:{sender}",
            )
        )
        await self.flush()
        return event_id

    async def open_dm(self, client: str) -> str:
        """A client starts an encrypted DM with the bot, which joins and greets."""
        room_id = f"!dm-{client.strip('@').split(':')[0]}:test"
        self.matrix.members[room_id] = {client: "join", BOT: "join"}
        self.matrix.dms.add(room_id)
        await self.event(room_id, client, "", kind="joined")
        return room_id

    def said(self, room_id: str) -> list[str]:
        return [s.body for s in self.sent if s.room_id == room_id]

    def facts(self, room_id: str) -> list[CaseEvent]:
        return [c for s in self.sent if s.room_id == room_id and (c := s.case) is not None]

    def last(self, room_id: str) -> str:
        said = self.said(room_id)
        assert said, f"nothing was sent to {room_id}"
        return said[-1]


T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # a Monday, 09:00 in Jakarta


async def open_hub(path: Path, policy: Policy) -> Hub:
    clock = Clock(T0)
    store = await BridgeStore.open(path, Sealer(secrets.token_bytes(32)), clock=clock)
    return Hub(store, policy, clock)


async def seat(hub: Hub, client: str, *, lang: str = "en", pseudonym: str = "Rain") -> str:
    """``client`` goes through the whole intake (screening skipped, first topic, any
    counselor); returns their DM. Each answer must move the intake on."""
    dm = await hub.open_dm(client)
    answers = ["1" if lang == "en" else "2", "agree" if lang == "en" else "setuju"]
    answers.append("yes" if lang == "en" else "ya")
    if len(hub.policy.crisis.countries[0].zones) > 1:
        answers.append("1")
    answers += ["1", pseudonym, "skip", "skip", "1", "auto"]
    for answer in answers:
        before = len(hub.said(dm))
        await hub.event(dm, client, answer)
        assert len(hub.said(dm)) > before, f"no answer to {answer!r}: {hub.said(dm)[-1:]}"
    return dm


async def session_of(hub: Hub, client: str) -> tuple[int, str]:
    """The client's open engagement and its session room (both people joined)."""
    eng = await hub.store.current_engagement(client)
    assert eng is not None and eng.room_id is not None, "the client was not placed"
    for user_id in hub.matrix.members[eng.room_id]:
        hub.join(eng.room_id, user_id)
    await hub.flush()
    return eng.id, eng.room_id
