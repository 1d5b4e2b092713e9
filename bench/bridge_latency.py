"""Bridge latency under load, next to a bare end-to-end encrypted echo bot.

Run from the repository root::

    python -m bench.bridge_latency            # 50 clients
    python -m bench.bridge_latency --clients 10

Everything is real: an embedded Synapse in a temporary directory, the bridge as it
runs in production (its own cross-signed device, its SQLite store, the packaged
policies, a few counselors, one of them on call), and N clients that are full E2EE
:class:`MatrixSession` accounts with cross-signed devices. The same clients, in the
same run, also talk to a minimal matrix-nio echo bot on the same Synapse.

Absolute milliseconds depend on the machine (and every account here shares one
Python process and the CPU with Synapse). The figure that matters is the ratio
bridge / echo bot: it is what the bridge's own work (inbox, store, policy, trust
checks, paging) adds on top of the unavoidable Matrix + Olm/Megolm round trip.

Latency of one reply = from the moment a client starts sending its message until
that client has the bot's answer decrypted (the sync callback fired).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import math
import os
import pstats
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nio import (
    InviteMemberEvent,
    MatrixRoom,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageNotice,
    RoomMessageText,
)

from bridge.app import Bridge
from bridge.kernel import markup
from bridge.kernel.render import Renderer
from bridge.persistence.store import Counselor
from e2ecounsel.config import BridgeConfig
from e2ecounsel.domain.replies import Reply
from e2ecounsel.homeserver import EmbeddedHomeserver, free_port
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.policy import Policy, load_policy
from e2ecounsel.sealing import Sealer

logger = logging.getLogger("bench.bridge_latency")

REPO_ROOT = Path(__file__).resolve().parent.parent

LANG = "en"
CRISIS_PHRASE = "I want to kill myself"
NEXT_MESSAGE = "help"  # the client's next message right after the crisis reply
ECHO_GREETING = "echo bot ready"
WARM_UP = "hello"  # every client's first message of the run (see warm_up)
COUNSELORS = 3
SCREENING_ITEMS = 3  # PHQ-9 answers sent after the pseudonym
ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}
_MARK = "\x00"

Check = Callable[[str], bool]


# ---------------------------------------------------------------------------- accounts


@dataclass
class Seen:
    room_id: str
    sender: str
    body: str
    at: float  # perf_counter() when the decrypted event reached the client
    event_id: str
    server_ts: int  # origin_server_ts, milliseconds on the homeserver's clock
    html_len: int = 0  # length of the formatted (HTML) body, 0 without one


class Peer:
    """A real E2EE account that timestamps every message it could decrypt."""

    def __init__(self, session: MatrixSession, *, auto_join: bool) -> None:
        self.session = session
        self.auto_join = auto_join
        self.seen: list[Seen] = []
        self.undecryptable: list[str] = []
        self._changed = asyncio.Condition()
        session.add_event_callback(self._on_text, (RoomMessageText, RoomMessageNotice))
        session.add_event_callback(self._on_undecryptable, MegolmEvent)
        session.add_event_callback(self._on_invite, InviteMemberEvent)

    @property
    def user_id(self) -> str:
        return self.session.user_id

    @classmethod
    async def connect(
        cls, base_url: str, user_id: str, password: str, store: Path, *, auto_join: bool = False
    ) -> Peer:
        """Sign in like a current client: a new device, cross-signed by its owner."""
        session = MatrixSession(
            base_url, user_id, store, Sealer(secrets.token_bytes(32)), device_name="bench"
        )
        peer = cls(session, auto_join=auto_join)
        try:
            await session.login(password)
            await session.ensure_cross_signing(password)
            await session.sync_once(0)
        except BaseException:
            await session.close()
            raise
        session.start()
        return peer

    async def _on_text(self, room: MatrixRoom, event: Any) -> None:
        self.seen.append(
            Seen(
                room.room_id,
                event.sender,
                event.body,
                time.perf_counter(),
                event.event_id,
                int(event.server_timestamp),
                len(getattr(event, "formatted_body", None) or ""),
            )
        )
        async with self._changed:
            self._changed.notify_all()

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        self.undecryptable.append(room.room_id)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if self.auto_join and event.state_key == self.user_id and event.membership == "invite":
            await self.session.client.join(room.room_id)

    def find(self, room_id: str, sender: str, check: Check, cursor: int) -> Seen | None:
        for seen in self.seen[cursor:]:
            if seen.room_id == room_id and seen.sender == sender and check(seen.body):
                return seen
        return None

    async def expect(
        self, room_id: str, sender: str, check: Check, cursor: int, timeout: float
    ) -> Seen | None:
        """The first message from ``sender`` in ``room_id`` since ``cursor`` passing
        ``check``; None when none came within ``timeout`` seconds."""
        hit: list[Seen] = []

        def ready() -> bool:
            found = self.find(room_id, sender, check, cursor)
            if found is not None:
                hit.append(found)
            return found is not None

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        return hit[0] if hit else None

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition`` holds after a message arrives; False on timeout."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(condition), timeout)
            except TimeoutError:
                return False
        return True

    def event(self, event_id: str) -> Seen | None:
        return next((s for s in self.seen if s.event_id == event_id), None)

    def bodies(self, room_id: str, sender: str) -> list[str]:
        return [s.body for s in self.seen if s.room_id == room_id and s.sender == sender]

    async def open_dm(self, bot_id: str) -> str:
        resp = await self.session.client.room_create(
            invite=[bot_id], is_direct=True, initial_state=[ENCRYPTION_STATE]
        )
        if not isinstance(resp, RoomCreateResponse):
            raise RuntimeError(f"creating a DM failed: {getattr(resp, 'status_code', resp)}")
        await self.session.wait_for_room(resp.room_id)
        return str(resp.room_id)

    async def close(self) -> None:
        await self.session.close()


# One part of a planned reply: (plain body length, formatted body length, 0 for none).
PartSize = tuple[int, int]
_PLAN = re.compile(
    r"^turn \d+ (?P<tag>[0-9a-f]+) reply (?P<plan>\d+/\d+(?:;\d+/\d+)*)"
    r"(?: page (?P<room>\S+) (?P<page>\d+/\d+))?$"
)


def plan_text(
    turn: int, tag: str, plan: Sequence[PartSize], page: tuple[str, PartSize] | None = None
) -> str:
    """A client's turn that asks the echo bot for ``plan``: one message per part, each
    of the given sizes (what the bridge sent for the intake step of the same rank);
    with ``page``, one more message of that size in that room once they are sent (the
    bridge's page to the on-call counselor, sent off the client's path)."""
    text = f"turn {turn} {tag} reply " + ";".join(f"{b}/{h}" for b, h in plan)
    if page is not None:
        room, (b, h) = page
        text += f" page {room} {b}/{h}"
    return text


def _sized(head: str, plain: int, html: int) -> dict[str, Any]:
    """A message shaped like the bridge's: ``m.text``, a plain body, an HTML body when
    the bridge's had one, and empty ``m.mentions``, each of exactly the given length."""
    content: dict[str, Any] = {"msgtype": "m.text", "body": head.ljust(plain, "x")}
    if html:
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = head.ljust(html, "x")
    content["m.mentions"] = {}
    return content


def planned_page(body: str) -> tuple[str, dict[str, Any]] | None:
    """The page a planned turn asks for (see :func:`plan_text`): its room and message."""
    found = _PLAN.match(body)
    if found is None or found["room"] is None:
        return None
    plain, html = (int(n) for n in found["page"].split("/"))
    return found["room"], _sized(f"{found['tag']} page ", plain, html)


def planned_parts(body: str) -> list[dict[str, Any]] | None:
    """The messages a planned turn asks for (see :func:`plan_text`); None for any other
    text. Each is shaped like the bridge's: a plain body, an HTML body when the
    bridge's had one, and empty ``m.mentions``; the first starts with the turn's tag."""
    found = _PLAN.match(body)
    if found is None:
        return None
    sizes = [tuple(int(n) for n in part.split("/")) for part in found["plan"].split(";")]
    return [
        _sized(f"{found['tag']} {i}/{len(sizes)} ", plain, html)
        for i, (plain, html) in enumerate(sizes, start=1)
    ]


def first_part(tag: str) -> Check:
    return lambda body: body.startswith(f"{tag} 1/")


def nth_part(tag: str, n: int) -> Check:
    return lambda body: body.startswith(f"{tag} {n}/")


def equal_to(text: str) -> Check:
    return lambda body: body == text


class EchoBot:
    """The baseline: joins every invite, greets, and answers each text with a notice.

    As bare as an E2EE bot gets with matrix-nio: no store, no policy, no trust rules.
    A planned turn (:func:`plan_text`) is answered with the messages it asks for, in
    order, as ``m.text`` like the bridge's (nio validates a text it syncs back against a
    larger schema than a notice); any other text with itself. Each turn is answered
    from its own task so one slow send does not hold other rooms back (the bridge also
    works rooms in parallel); within a room the turns are answered in order, as the
    bridge does."""

    def __init__(self, session: MatrixSession) -> None:
        self.session = session
        self.failures = 0
        self.replies = 0  # turns answered
        self.sent = 0  # messages sent for them
        self._tasks: set[asyncio.Task[None]] = set()
        self._room_locks: dict[str, asyncio.Lock] = {}
        session.add_event_callback(self._on_invite, InviteMemberEvent)
        session.add_event_callback(self._on_text, RoomMessageText)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.failures += 1
                logger.error("echo bot task failed", exc_info=t.exception())

        task.add_done_callback(done)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == self.session.user_id and event.membership == "invite":
            self._spawn(self._join(room.room_id))

    async def _join(self, room_id: str) -> None:
        await self.session.client.join(room_id)
        await self.session.wait_for_room(room_id)
        await self.session.send_text(room_id, ECHO_GREETING, notice=True)

    async def _on_text(self, room: MatrixRoom, event: RoomMessageText) -> None:
        if event.sender != self.session.user_id:
            # A task per turn, made here so that the room lock is asked for in arrival order.
            self._spawn(self._echo(room.room_id, event.body))

    async def _echo(self, room_id: str, body: str) -> None:
        parts = planned_parts(body) or [{"msgtype": "m.notice", "body": body}]
        page = planned_page(body)
        async with self._room_locks.setdefault(room_id, asyncio.Lock()):
            for content in parts:
                await self.session.send(room_id, content)
                self.sent += 1
        self.replies += 1
        if page is not None:  # as the bridge's pages: after the reply, off its path
            self._spawn(self._page(*page))

    async def _page(self, room_id: str, content: dict[str, Any]) -> None:
        async with self._room_locks.setdefault(room_id, asyncio.Lock()):
            await self.session.send(room_id, content)
            self.sent += 1

    async def close(self) -> None:
        await self.session.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.session.close()


# ---------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    seconds: float | None  # None: no reply within the timeout
    send_seconds: float  # the client's own part: encrypt + POST
    # Reply's server timestamp minus the message's: what the bot (and the homeserver
    # delivering to it) took, free of the load on the clients' process.
    turnaround: float | None = None


@dataclass
class Series:
    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> list[float]:
        return sorted(s.seconds for s in self.samples if s.seconds is not None)

    @property
    def lost(self) -> int:
        return sum(1 for s in self.samples if s.seconds is None)

    def pct(self, p: float) -> float | None:
        return percentile(self.ok, p)

    def send_p50(self) -> float | None:
        return percentile(sorted(s.send_seconds for s in self.samples), 50)

    def turnaround(self, p: float) -> float | None:
        return percentile(sorted(s.turnaround for s in self.samples if s.turnaround is not None), p)


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


async def round_trip(
    peer: Peer, room_id: str, bot_id: str, body: str, check: Check, timeout: float
) -> Sample:
    """Send ``body`` and time it until the bot's reply passing ``check`` is decrypted."""
    cursor = len(peer.seen)
    start = time.perf_counter()
    try:
        event_id = await asyncio.wait_for(peer.session.send_text(room_id, body), timeout)
    except Exception as exc:
        logger.error("a client could not send: %s", type(exc).__name__)
        return Sample(None, time.perf_counter() - start)
    sent = time.perf_counter() - start
    hit = await peer.expect(room_id, bot_id, check, cursor, timeout)
    if hit is None:
        return Sample(None, sent)
    # Our own event comes back through sync too, normally before the reply.
    own = await peer.wait_for(lambda: peer.event(event_id) is not None, 5.0)
    mine = peer.event(event_id) if own else None
    turnaround = (hit.server_ts - mine.server_ts) / 1000 if mine is not None else None
    return Sample(hit.at - start, sent, turnaround)


# ---------------------------------------------------------------------------- the bench


@dataclass
class Expect:
    """What the bot says, taken from the packaged policy (never hard-coded here)."""

    policy: Policy

    def lead(self, key: str, *params: str, lang: str = LANG) -> str:
        """The text of ``key`` up to its first caller-supplied placeholder."""
        rendered = self.policy.text(lang, key, **dict.fromkeys(params, _MARK))
        return rendered.split(_MARK)[0].strip()

    def contains(self, needle: str) -> Check:
        return lambda body: needle in body

    def greeting(self) -> Check:
        return self.contains(self.lead("intake.welcome", "languages")[:40])

    def crisis(self) -> Check:
        lang = self.policy.service.default_language
        return self.contains(self.policy.crisis_reply(lang, None)[:80])

    def after_crisis(self) -> Check:
        """The bot's other answer to the crisis message, which is also an (invalid)
        answer to the language question: a hint or a nudge back to the intake."""
        crisis = self.crisis()
        return lambda body: not crisis(body)

    def intake_steps(self, pseudonym: str) -> list[tuple[str, str, Check]]:
        """(step name, client answer, check for the next question).

        Each step draws one bot message, except the consent, sent in parts (see
        :meth:`intake_replies`)."""
        phq = self.policy.instruments["phq9"]
        steps: list[tuple[str, str, Check]] = [
            (
                "language -> consent",
                "1",
                self.contains(markup.to_plain(self.policy.consent[LANG].text)[:60]),
            ),
            ("consent -> age", "agree", self.contains(self.policy.text(LANG, "intake.age"))),
            (
                "age -> country",
                "yes",
                self.contains(self.policy.crisis.countries[0].label[LANG]),
            ),
        ]
        zones = self.policy.crisis.countries[0].zones
        if len(zones) > 1:  # the first country spans several time zones: which one
            steps.append(("country -> zone", "1", self.contains(zones[0].label[LANG])))
        steps += [
            (
                "country -> pseudonym" if len(zones) < 2 else "zone -> pseudonym",
                "1",
                self.contains(self.lead("intake.pseudonym", "max_len")[:40]),
            ),
            ("pseudonym -> PHQ-9 #1", pseudonym, self.contains(phq.items[0].text[LANG])),
        ]
        for i in range(SCREENING_ITEMS):
            steps.append(
                (f"PHQ-9 #{i + 1} -> #{i + 2}", "0", self.contains(phq.items[i + 1].text[LANG]))
            )
        return steps

    def intake_replies(self) -> int:
        """Bot messages the intake walk draws, all steps together: one per step, the
        consent text in as many parts as a phone screen holds."""
        consent = Renderer(self.policy).reply(
            LANG, Reply("intake.consent", {"version": self.policy.consent[LANG].version})
        )
        return len(self.intake_steps("x")) + len(markup.split_parts(consent)) - 1

    def page(self) -> Check:
        return self.contains(self.policy.text(LANG, "page.crisis", page=_MARK).split(_MARK)[1][:30])


@dataclass
class BotSpec:
    """Everything the bots need, as JSON-friendly values (handed to a child process)."""

    base_url: str
    root: str
    bot_id: str
    bot_password: str
    echo_id: str
    echo_password: str
    counselor_ids: list[str]
    capacity: int
    cold_case_rooms: bool
    profile: str | None = None  # cProfile output of the intake walk, if asked for


def bridge_config(base_url: str, bot_id: str, password: str, data_dir: Path) -> BridgeConfig:
    """The bridge's settings for a bench: packaged policies, no supervisors' room."""
    return BridgeConfig(
        homeserver_url=base_url,
        bot_user_id=bot_id,
        bot_password=password,
        data_dir=data_dir,
        policies_dir=None,
        supervisors_room=None,
        allowed_servers=(),
    )


class LocalBots:
    """The bridge and the echo bot, running in this process."""

    def __init__(self, spec: BotSpec) -> None:
        self.spec = spec
        self.bridge: Bridge | None = None
        self.echo: EchoBot | None = None
        self.handled = 0  # inbox items the bridge's router handled
        self.sent = 0  # messages the bridge sent
        self._handle_seconds: list[tuple[str, float]] = []  # (room, seconds) since the last mark
        self._profile: cProfile.Profile | None = None

    @property
    def bot_id(self) -> str:
        return self.spec.bot_id

    def _time_handling(self, bridge: Bridge) -> None:
        """Count and time every event the router handles (inbox item in, step committed
        and flushed as far as the handler waits for it: what holds the room's next event)."""
        assert bridge.router is not None
        handle = bridge.router.handle

        async def timed(item: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            try:
                await handle(item, **kwargs)
            finally:
                self._handle_seconds.append((item.room_id, time.perf_counter() - start))
                self.handled += 1

        bridge.router.handle = timed  # type: ignore[method-assign]
        send = bridge.session.send

        async def counted(*args: Any, **kwargs: Any) -> str:
            event_id = await send(*args, **kwargs)
            self.sent += 1
            return event_id

        bridge.session.send = counted  # type: ignore[method-assign]

    async def mark(
        self, profile: bool | None = None, suffix: str = "", again: bool = False
    ) -> dict[str, Any]:
        return self.snapshot(profile, suffix, again)

    def snapshot(
        self, profile: bool | None = None, suffix: str = "", again: bool = False
    ) -> dict[str, Any]:
        """This process's CPU seconds so far, the messages each bot handled so far, and
        the router's handling times since the previous mark. ``profile`` True starts a
        CPU profile (cProfile on the process clock), False stops it and writes it (to the
        profile's file name followed by ``suffix``), and with ``again`` starts the next."""
        snapshot: dict[str, Any] = {
            "cpu": time.process_time(),
            "bridge_handled": self.handled,
            "bridge_sent": self.sent,
            "echo_replies": self.echo.replies if self.echo is not None else 0,
            "echo_sent": self.echo.sent if self.echo is not None else 0,
            "handle_seconds": self._handle_seconds,
        }
        self._handle_seconds = []
        if profile is False and self._profile is not None and self.spec.profile:
            self._profile.disable()
            self._profile.dump_stats(self.spec.profile + suffix)
            self._profile = None
        if (profile or again) and self._profile is None and self.spec.profile:
            self._profile = cProfile.Profile(time.process_time)
            self._profile.enable()
        return snapshot

    @property
    def echo_id(self) -> str:
        return self.spec.echo_id

    async def start(self) -> None:
        spec, root = self.spec, Path(self.spec.root)
        config = bridge_config(spec.base_url, spec.bot_id, spec.bot_password, root / "bridge")
        self.bridge = bridge = Bridge(config, Sealer(secrets.token_bytes(32)))
        await bridge.start()
        assert bridge.store is not None and bridge.router is not None
        self._time_handling(bridge)
        for i, user_id in enumerate(spec.counselor_ids):
            await bridge.store.add_counselor(
                Counselor(
                    user_id=user_id,
                    name=f"Counselor {i + 1}",
                    credentials="M.Psi., Psikolog",
                    languages=("en", "id"),
                    specialties=("anxiety", "stress"),
                    capacity=spec.capacity,
                    timezone="Asia/Jakarta",
                    reply_windows=("09:00", "13:00", "19:00"),
                    on_call=i == 0,
                )
            )
        if not spec.cold_case_rooms:
            # Steady state: counselors already have their case channel with the bot.
            for c in await bridge.store.list_counselors():
                await bridge.ctx.case_room(c)

        session = MatrixSession(
            spec.base_url,
            spec.echo_id,
            root / "echo",
            Sealer(secrets.token_bytes(32)),
            device_name="echo",
        )
        self.echo = EchoBot(session)
        await session.login(spec.echo_password)
        await session.ensure_cross_signing(spec.echo_password)
        await session.sync_once(0)
        session.start()

    async def final_stats(self) -> dict[str, int]:
        """Case channels the bridge has on record (one per counselor is right), and its
        ``/keys/query`` requests: in all, and how many times a send had to wait for one."""
        assert self.bridge is not None and self.bridge.store is not None
        rows = await self.bridge.store.db.fetchall("SELECT room_id FROM rooms WHERE kind = 'case'")
        trust = getattr(self.bridge, "trust", None)
        return {
            "case_rooms": len(rows),
            "keys_queries": trust.queries if trust is not None else -1,
            "send_waits": trust.waits if trust is not None else -1,
        }

    async def stop(self) -> None:
        if self.echo is not None:
            with contextlib.suppress(Exception):
                await self.echo.close()
        if self.bridge is not None:
            await self.bridge.stop()


class BotProcess:
    """The same bots in a child process, as in production: their CPU is their own,
    not shared with the fifty clients' decryption in this process.

    Protocol over the child's stdin/stdout, one JSON object a line: the spec in,
    ``{"ready": ...}`` out; ``stop`` in, the final stats out. The child also
    stops when its stdin closes, so it never outlives this process."""

    def __init__(self, spec: BotSpec, log_level: str) -> None:
        self.spec = spec
        self.log_level = log_level
        self.proc: asyncio.subprocess.Process | None = None
        self._stats: dict[str, int] | None = None

    @property
    def bot_id(self) -> str:
        return self.spec.bot_id

    @property
    def echo_id(self) -> str:
        return self.spec.echo_id

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError("the bot process exited early (its log is above)")
        value: dict[str, Any] = json.loads(raw)
        return value

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bridge_latency",
            "--serve-bots",
            "--log-level",
            self.log_level,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(REPO_ROOT),
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(asdict(self.spec)).encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await self._line(120)
        if not reply.get("ready"):
            raise RuntimeError(f"the bot process failed to start: {reply.get('error')}")

    async def mark(
        self, profile: bool | None = None, suffix: str = "", again: bool = False
    ) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        command = {"mark": True, "profile": profile, "suffix": suffix, "again": again}
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(60)

    async def final_stats(self) -> dict[str, int]:
        await self._stop_child()
        return self._stats or {}

    async def _stop_child(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
            self._stats = {k: int(v) for k, v in (await self._line(60)).items()}
            await asyncio.wait_for(proc.wait(), 30)
        except Exception:
            logger.error("the bot process did not stop cleanly; killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        await self._stop_child()


async def serve_bots() -> int:
    """Child side of :class:`BotProcess`: whatever happens, the bots are stopped."""
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        return 1
    bots = LocalBots(BotSpec(**json.loads(line)))
    try:
        try:
            await bots.start()
        except Exception as exc:
            logger.exception("bots failed to start")
            print(json.dumps({"ready": False, "error": type(exc).__name__}), flush=True)
            return 1
        print(json.dumps({"ready": True}), flush=True)
        while True:  # marks, until "stop" (or EOF if the parent is gone)
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() == "stop":
                break
            command = json.loads(line)
            snapshot = bots.snapshot(
                command.get("profile"), command.get("suffix", ""), command.get("again", False)
            )
            print(json.dumps(snapshot), flush=True)
        stats = await bots.final_stats()
    finally:
        await bots.stop()
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(stats), flush=True)
    return 0


Bots = LocalBots | BotProcess


@dataclass
class World:
    hs: EmbeddedHomeserver
    bots: Bots
    counselors: list[Peer]
    clients: list[Peer]
    bridge_dm: dict[str, str] = field(default_factory=dict)  # client id -> room
    echo_dm: dict[str, str] = field(default_factory=dict)
    #: A second DM with the echo bot, for the like-for-like crisis burst: the client's
    #: first message there, as the bridge's burst is in its DM (a room's first message
    #: from a client also shares a new room key with the bot).
    echo_burst_dm: dict[str, str] = field(default_factory=dict)
    #: A DM with the echo bot for the warm-up burst (see :func:`warm_up`), measured nowhere.
    warm_up_dm: dict[str, str] = field(default_factory=dict)
    #: The on-call counselor's encrypted DM with the echo bot: where its pages go in
    #: the like-for-like burst, as the bridge's go to that counselor's case channel.
    echo_page_room: str = ""

    @property
    def bot_id(self) -> str:
        return self.bots.bot_id

    @property
    def echo_id(self) -> str:
        return self.bots.echo_id


#: A phase starts once the machine (every process on it: the homeserver, the bots,
#: the clients) used less than this share of one core over QUIET_WINDOW_S;
#: QUIET_LONGEST_S at most. After a burst it works on for a while (key upkeep,
#: pushes, the clients' own syncs); a phase that started then would pay for the last.
QUIET_CPU = 0.10
QUIET_WINDOW_S = 1.0
QUIET_LONGEST_S = 60.0


def process_cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user and system) process ``pid`` spent so far (Linux ``/proc``)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (Linux ``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def quiet_machine() -> float:
    """Wait until the machine is quiet (see :data:`QUIET_CPU`); the seconds waited.

    Every phase starts so, the bridge's and the echo bot's alike."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < QUIET_LONGEST_S:
        before = busy_cpu_seconds()
        await asyncio.sleep(QUIET_WINDOW_S)
        if busy_cpu_seconds() - before < QUIET_CPU * QUIET_WINDOW_S:
            break
    waited = loop.time() - start
    logger.info("machine quiet after %.1fs", waited)
    return waited


async def bounded(limit: int, coros: Sequence[Awaitable[Any]]) -> list[Any]:
    """Run ``coros`` with at most ``limit`` at a time (set-up only, not measured)."""
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with gate:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def register(hs: EmbeddedHomeserver, prefix: str) -> tuple[str, str]:
    password = secrets.token_urlsafe(16)
    user_id = await hs.register_user(f"{prefix}-{uuid.uuid4().hex[:8]}", password)
    return user_id, password


async def build(args: argparse.Namespace, root: Path, stack: contextlib.AsyncExitStack) -> World:
    hs = EmbeddedHomeserver(root / "hs", port=free_port(), bcrypt_rounds=4)
    stack.push_async_callback(hs.stop)
    await hs.start()
    base = hs.info.base_url
    logger.info("synapse up in %.1fs at %s", hs.startup_seconds or 0.0, base)

    bot_id, bot_pw = await register(hs, "counsel")
    echo_id, echo_pw = await register(hs, "echo")
    staff = await bounded(8, [register(hs, f"counselor{i}") for i in range(COUNSELORS)])
    people = await bounded(8, [register(hs, f"client{i}") for i in range(args.clients)])

    async def connect(creds: tuple[str, str], name: str, auto_join: bool) -> Peer:
        peer = await Peer.connect(base, creds[0], creds[1], root / name, auto_join=auto_join)
        stack.push_async_callback(peer.close)
        return peer

    # Counselors first: they join their case channel as soon as the bot opens it.
    counselors = await bounded(4, [connect(c, f"counselor{i}", True) for i, c in enumerate(staff)])
    spec = BotSpec(
        base_url=base,
        root=str(root / "bots"),
        bot_id=bot_id,
        bot_password=bot_pw,
        echo_id=echo_id,
        echo_password=echo_pw,
        counselor_ids=[c.user_id for c in counselors],
        capacity=max(5, args.clients),
        cold_case_rooms=args.cold_case_rooms,
        profile=args.profile,
    )
    bots: Bots = LocalBots(spec) if args.in_process else BotProcess(spec, args.log_level)
    stack.push_async_callback(bots.stop)
    await bots.start()
    logger.info("bridge and echo bot up (%s)", "in process" if args.in_process else "own process")

    t = time.perf_counter()
    clients = await bounded(8, [connect(c, f"client{i}", False) for i, c in enumerate(people)])
    logger.info(
        "%d clients signed in and cross-signed in %.1fs", len(clients), time.perf_counter() - t
    )
    return World(hs, bots, counselors, clients)


async def open_dms(world: World, expect: Expect, timeout: float) -> None:
    """Every client opens an encrypted DM with each bot and waits for its greeting."""

    async def one(peer: Peer) -> None:
        dm = await peer.open_dm(world.bot_id)
        world.bridge_dm[peer.user_id] = dm
        edm = await peer.open_dm(world.echo_id)
        world.echo_dm[peer.user_id] = edm
        bdm = await peer.open_dm(world.echo_id)
        world.echo_burst_dm[peer.user_id] = bdm
        wdm = await peer.open_dm(world.echo_id)
        world.warm_up_dm[peer.user_id] = wdm
        if await peer.expect(dm, world.bot_id, expect.greeting(), 0, timeout) is None:
            raise RuntimeError("the bridge never greeted a client")
        for room in (edm, bdm, wdm):
            if await peer.expect(room, world.echo_id, equal_to(ECHO_GREETING), 0, timeout) is None:
                raise RuntimeError("the echo bot never greeted a client")

    oncall = world.counselors[0]
    world.echo_page_room = await oncall.open_dm(world.echo_id)
    if (
        await oncall.expect(
            world.echo_page_room, world.echo_id, equal_to(ECHO_GREETING), 0, timeout
        )
        is None
    ):
        raise RuntimeError("the echo bot never greeted the on-call counselor")
    t = time.perf_counter()
    await bounded(10, [one(p) for p in world.clients])
    logger.info("%d x 4 DMs open and greeted in %.1fs", len(world.clients), time.perf_counter() - t)


@dataclass
class Phase:
    """What the bots' process spent in one part of the run (between two marks)."""

    cpu: float  # CPU seconds of the bots' process
    bridge_handled: int  # events the bridge's router handled
    bridge_sent: int  # messages the bridge sent
    echo_replies: int  # turns the echo bot answered
    echo_sent: int  # messages the echo bot sent for them
    handled: list[tuple[str, float]]  # (room, seconds) per event the router handled, in order
    homeserver_cpu: float  # CPU seconds of the homeserver's process
    clients_cpu: float  # CPU seconds of this process (the clients and counselors)


async def read_whole_reply(
    peer: Peer, room_id: str, bot_id: str, cursor: int, parts: int, timeout: float
) -> None:
    """Wait until the bot's reply has all its ``parts`` (the consent goes out in parts a
    phone screen holds): a client answers once it has read the whole text, not while
    the rest of it is still on its way. The round trip's clock stopped at the first."""
    if parts > 1:
        await peer.wait_for(
            lambda: (
                sum(1 for m in peer.seen[cursor:] if m.room_id == room_id and m.sender == bot_id)
                >= parts
            ),
            timeout,
        )


async def burst_then_next(
    peer: Peer,
    room_id: str,
    bot_id: str,
    first: Check,
    then: Check | None,
    next_body: str,
    next_check: Check,
    timeout: float,
    body: str = CRISIS_PHRASE,
) -> tuple[Sample, Sample]:
    """The crisis phrase (or ``body``), then (once the bot answered it, and ``then`` too
    if given) the client's next message at once: is it answered as fast as any other,
    or held back by what the first message set off?"""
    cursor = len(peer.seen)
    crisis = await round_trip(peer, room_id, bot_id, body, first, timeout)
    if then is not None:
        await peer.expect(room_id, bot_id, then, cursor, min(timeout, 15.0))
    return crisis, await round_trip(peer, room_id, bot_id, next_body, next_check, timeout)


async def warm_up(world: World, timeout: float) -> None:
    """Every client's first message of the run, all at once, to the echo bot in a DM of
    its own; measured nowhere.

    A run with the bursts in another order hinted that a run's first burst is slower
    than the ones after it, whichever bot it goes to (``bench/README.md``). The bridge's
    crisis burst used to be that first burst; now no measured burst is.
    """
    got = await asyncio.gather(
        *(
            round_trip(
                p, world.warm_up_dm[p.user_id], world.echo_id, WARM_UP, equal_to(WARM_UP), timeout
            )
            for p in world.clients
        )
    )
    lost = sum(1 for s in got if s.seconds is None)
    logger.info("warm-up burst answered (%d lost)", lost)


async def measure(
    world: World, expect: Expect, timeout: float
) -> tuple[dict[str, Series], dict[str, Phase], Plans]:
    out: dict[str, Series] = {}
    phases: dict[str, Phase] = {}
    clients = world.clients

    async def marked(
        profile: bool | None = None, suffix: str = "", again: bool = False
    ) -> dict[str, Any]:
        """The bots' mark, with the homeserver's and this process's CPU so far."""
        now = await world.bots.mark(profile, suffix, again)
        now["homeserver_cpu"] = process_cpu_seconds(world.hs.pid)
        now["clients_cpu"] = time.process_time()
        return now

    await warm_up(world, timeout)
    # With --profile, the crisis bursts are profiled too, into FILE.crisis (the bridge)
    # and FILE.crisis-echo (the like-for-like echo burst).
    await quiet_machine()
    last = await marked(profile=True)
    burst_starts = {p.user_id: len(p.seen) for p in clients}

    async def phase(
        name: str, profile: bool | None = None, suffix: str = "", again: bool = False
    ) -> None:
        nonlocal last
        now = await marked(profile, suffix, again)
        phases[name] = Phase(
            now["cpu"] - last["cpu"],
            now["bridge_handled"] - last["bridge_handled"],
            now["bridge_sent"] - last["bridge_sent"],
            now["echo_replies"] - last["echo_replies"],
            now["echo_sent"] - last["echo_sent"],
            [(str(r), float(t)) for r, t in now["handle_seconds"]],
            now["homeserver_cpu"] - last["homeserver_cpu"],
            now["clients_cpu"] - last["clients_cpu"],
        )
        last = now

    async def settle() -> None:
        """Start the next phase on a quiet machine, as the first one did."""
        nonlocal last
        await quiet_machine()
        last = await marked()

    # 1. Crisis phrase right after the greeting, all clients at once; the message also
    # answers the language question (a hint or a nudge back to the intake comes with the
    # crisis reply). Then each client's next message, "help", at once.
    logger.info("crisis burst to the bridge")
    crisis = Series("crisis auto-reply (bridge)")
    after = Series("next message (bridge)")
    bursts = await asyncio.gather(
        *(
            burst_then_next(
                p,
                world.bridge_dm[p.user_id],
                world.bot_id,
                expect.crisis(),
                expect.after_crisis(),
                NEXT_MESSAGE,
                lambda _body: True,
                timeout,
            )
            for p in clients
        )
    )
    crisis.samples = [first for first, _ in bursts]
    after.samples = [then for _, then in bursts]
    out["crisis"] = crisis
    out["crisis_next"] = after
    # And the pages to the on-call counselor, so the echo burst starts on a quiet bridge.
    await world.counselors[0].wait_for(lambda: count_pages(world, expect) >= len(clients), timeout)
    await phase("crisis burst", profile=False, suffix=".crisis", again=True)
    crisis_plan, page_size = crisis_reply_plan(world, expect, burst_starts)

    # 2. The same burst against the bare echo bot, and the next message.
    await settle()
    logger.info("crisis burst to the echo bot")
    echo_first = Series("first reply (bare echo bot)")
    echo_next = Series("next message (bare echo bot)")
    echo_bursts = await asyncio.gather(
        *(
            burst_then_next(
                p,
                world.echo_dm[p.user_id],
                world.echo_id,
                lambda b: b == CRISIS_PHRASE,
                None,
                NEXT_MESSAGE,
                lambda b: b == NEXT_MESSAGE,
                timeout,
            )
            for p in clients
        )
    )
    echo_first.samples = [first for first, _ in echo_bursts]
    echo_next.samples = [then for _, then in echo_bursts]
    out["echo_first"] = echo_first
    out["echo_next"] = echo_next
    await phase("echo burst", profile=False, suffix=".crisis-echo-one", again=True)

    # 2b. Like for like: the echo bot answers the burst with the messages, of the same
    # sizes, the bridge sent for the crisis message (the crisis reply and what came
    # with it), then sends a page of the bridge's page's size to the on-call counselor.
    await settle()
    logger.info("crisis burst to the echo bot, like for like")
    tags = {p.user_id: uuid.uuid4().hex[:6] for p in clients}
    page = (world.echo_page_room, page_size)
    like_bursts = await asyncio.gather(
        *(
            burst_then_next(
                p,
                world.echo_burst_dm[p.user_id],
                world.echo_id,
                first_part(tags[p.user_id]),
                nth_part(tags[p.user_id], 2) if len(crisis_plan) > 1 else None,
                NEXT_MESSAGE,
                equal_to(NEXT_MESSAGE),
                timeout,
                body=plan_text(0, tags[p.user_id], crisis_plan, page),
            )
            for p in clients
        )
    )
    out["echo_first_like"] = Series("first reply (echo, like for like)")
    out["echo_first_like"].samples = [first for first, _ in like_bursts]
    out["echo_next_like"] = Series("next message (echo, like for like)")
    out["echo_next_like"].samples = [then for _, then in like_bursts]
    await world.counselors[0].wait_for(lambda: count_echo_pages(world) >= len(clients), timeout)
    await phase("echo burst, like for like", profile=False, suffix=".crisis-echo", again=True)

    # 3. Intake, each client at its own pace, all at the same time.
    await settle()
    logger.info("intake walk")
    by_step: dict[str, Series] = {}
    steps = expect.intake_steps("x")
    starts = {p.user_id: len(p.seen) for p in clients}

    consent_parts = expect.intake_replies() - len(steps) + 1

    async def walk(p: Peer, n: int) -> list[tuple[str, Sample]]:
        got: list[tuple[str, Sample]] = []
        room = world.bridge_dm[p.user_id]
        for name, answer, check in expect.intake_steps(f"Bench{n:03d}"):
            cursor = len(p.seen)
            s = await round_trip(p, room, world.bot_id, answer, check, timeout)
            got.append((name, s))
            if s.seconds is None:
                break  # out of step with the bot: the rest would measure nothing
            parts = consent_parts if name == "language -> consent" else 1
            await read_whole_reply(p, room, world.bot_id, cursor, parts, timeout)
        return got

    intake = Series("intake step (bridge)")
    for got in await asyncio.gather(*(walk(p, i) for i, p in enumerate(clients))):
        for name, s in got:
            by_step.setdefault(name, Series(name)).samples.append(s)
            intake.samples.append(s)
    out["intake"] = intake
    for name, series in by_step.items():
        out[f"step:{name}"] = series
    # The answer to the consent waits for the consent's last part (it goes out in
    # parts a phone screen holds): the other steps, without that one.
    rest = Series("  without consent -> age")
    for name, series in by_step.items():
        if name != "consent -> age":
            rest.samples += series.samples
    out["intake_rest"] = rest
    await phase("intake walk", profile=False)
    plan = reply_plan(world, expect, starts)

    # 4. The same number of back-and-forth turns with the echo bot: first one message
    # a turn (the old baseline), then each turn answered with the messages, of the same
    # sizes, the bridge sent for the intake step of the same rank (like for like).
    async def echo_walk(p: Peer, planned: bool) -> list[tuple[str, Sample]]:
        got: list[tuple[str, Sample]] = []
        for i, (name, _answer, _check) in enumerate(steps):
            tag = uuid.uuid4().hex[:6]
            if planned and plan[i]:
                body, check = plan_text(i, tag, plan[i]), first_part(tag)
            else:
                body = f"turn {i} {tag}"
                check = equal_to(body)
            cursor = len(p.seen)
            room = world.echo_dm[p.user_id]
            s = await round_trip(p, room, world.echo_id, body, check, timeout)
            got.append((name, s))
            if s.seconds is None:
                break
            parts = len(plan[i]) if planned and plan[i] else 1
            await read_whole_reply(p, room, world.echo_id, cursor, parts, timeout)
        return got

    for key, label, planned in (
        ("echo_turns", "turn reply (bare echo bot)", False),
        ("echo_like", "turn reply (echo, like for like)", True),
    ):
        await settle()
        logger.info("echo walk%s", ", like for like" if planned else "")
        series = Series(label)
        for got in await asyncio.gather(*(echo_walk(p, planned) for p in clients)):
            for name, s in got:
                series.samples.append(s)
                if planned:
                    out.setdefault(f"echo_step:{name}", Series(name)).samples.append(s)
        out[key] = series
        if planned:  # the like-for-like walk is profiled too, into FILE.echo
            await phase("echo walk, like for like", profile=False, suffix=".echo")
        else:
            await phase("echo walk", profile=True)
    like_rest = Series("  without consent -> age")
    for name in by_step:
        if name != "consent -> age" and f"echo_step:{name}" in out:
            like_rest.samples += out[f"echo_step:{name}"].samples
    out["echo_like_rest"] = like_rest
    return out, phases, Plans(plan, crisis_plan)


def reply_plan(world: World, expect: Expect, starts: dict[str, int]) -> list[list[PartSize]]:
    """What the bridge sent for each intake step: the sizes of its messages, in order.

    Taken from what the clients decrypted in the intake walk: a step's reply runs from
    the message its check picks (the next question) up to the next step's. Per step, the
    plan most clients saw (they differ only where a client's own text is quoted back)."""
    steps = expect.intake_steps("x")
    seen: list[Counter[tuple[PartSize, ...]]] = [Counter() for _ in steps]
    for n, p in enumerate(world.clients):
        room = world.bridge_dm[p.user_id]
        msgs = [
            m for m in p.seen[starts[p.user_id] :] if m.room_id == room and m.sender == world.bot_id
        ]
        checks = [check for _name, _answer, check in expect.intake_steps(f"Bench{n:03d}")]
        firsts: list[int] = []
        at = 0
        for check in checks:
            hit = next((i for i in range(at, len(msgs)) if check(msgs[i].body)), None)
            if hit is None:
                break
            firsts.append(hit)
            at = hit + 1
        if len(firsts) < len(checks):
            continue  # the walk stopped early for this client
        for k, first in enumerate(firsts):
            end = firsts[k + 1] if k + 1 < len(firsts) else len(msgs)
            seen[k][tuple((len(m.body), m.html_len) for m in msgs[first:end])] += 1
    # A step no client got through is echoed with one message (the walk reports it).
    return [list(counts.most_common(1)[0][0]) if counts else [] for counts in seen]


def crisis_reply_plan(
    world: World, expect: Expect, starts: dict[str, int]
) -> tuple[list[PartSize], PartSize]:
    """What the bridge sent for the crisis message: the sizes of the crisis reply and of
    the message that came with it (most clients' plan), and of the page (the most
    common size)."""
    crisis, after = expect.crisis(), expect.after_crisis()
    plans: Counter[tuple[PartSize, ...]] = Counter()
    for p in world.clients:
        room = world.bridge_dm[p.user_id]
        msgs = [
            m for m in p.seen[starts[p.user_id] :] if m.room_id == room and m.sender == world.bot_id
        ]
        first = next((i for i, m in enumerate(msgs) if crisis(m.body)), None)
        if first is None:
            continue
        plan = [msgs[first]]
        then = next((m for m in msgs[first + 1 :] if after(m.body)), None)
        if then is not None:
            plan.append(then)
        plans[tuple((len(m.body), m.html_len) for m in plan)] += 1
    pages: Counter[PartSize] = Counter(
        (len(s.body), s.html_len) for s in crisis_pages(world, expect)
    )
    reply = list(plans.most_common(1)[0][0]) if plans else [(len(CRISIS_PHRASE), 0)]
    return reply, pages.most_common(1)[0][0] if pages else (200, 0)


def count_echo_pages(world: World) -> int:
    """The like-for-like burst's pages the on-call counselor has decrypted."""
    return sum(
        1
        for s in world.counselors[0].seen
        if s.room_id == world.echo_page_room and s.sender == world.echo_id and " page " in s.body
    )


def crisis_pages(world: World, expect: Expect) -> list[Seen]:
    """Crisis pages the on-call counselor (the first one) has decrypted."""
    page = expect.page()
    return [s for s in world.counselors[0].seen if s.sender == world.bot_id and page(s.body)]


def count_pages(world: World, expect: Expect) -> int:
    return len(crisis_pages(world, expect))


@dataclass
class Checks:
    lines: list[str]
    problems: int


@dataclass
class Plans:
    """What the like-for-like echo bot was asked to send, taken from the bridge."""

    intake: list[list[PartSize]]  # per intake step
    crisis: list[PartSize]  # for the crisis message (its page comes on top)


async def integrity(world: World, expect: Expect, plans: Plans, settle: float) -> Checks:
    """Lost, duplicated or undecryptable messages, once nothing is in flight."""
    # A short quiet period so late duplicates have a chance to show up.
    await asyncio.sleep(settle)
    lines: list[str] = []
    problems = 0
    n = len(world.clients)

    counts: Counter[int] = Counter()
    dup_clients = 0
    crisis_counts: Counter[int] = Counter()
    for p in world.clients:
        msgs = p.bodies(world.bridge_dm[p.user_id], world.bot_id)
        counts[len(msgs)] += 1
        if len(msgs) != len(set(msgs)):
            dup_clients += 1
        crisis_counts[sum(1 for m in msgs if expect.crisis()(m))] += 1
    # greeting, crisis reply, its follow-up, the answer to the next message, the walk
    want = 4 + expect.intake_replies()
    lines.append(
        f"bot messages per client DM (want {want}): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    )
    problems += sum(v for k, v in counts.items() if k != want)
    lines.append(f"clients who got a bot message twice: {dup_clients}")
    problems += dup_clients
    lines.append(
        "crisis replies per client (want 1): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(crisis_counts.items()))
    )
    problems += sum(v for k, v in crisis_counts.items() if k != 1)

    pages = crisis_pages(world, expect)
    page_rooms = {s.room_id for s in pages}
    lines.append(
        f"crisis pages to the on-call counselor: {len(pages)}/{n} in {len(page_rooms)} case room(s)"
    )
    problems += int(len(pages) != n) + int(len(page_rooms) > 1)
    stats = await world.bots.final_stats()
    case_rooms = stats.get("case_rooms", -1)
    lines.append(f"case rooms in the bridge database: {case_rooms} for {COUNSELORS} counselors")
    lines.append(
        f"bridge /keys/query requests: {stats.get('keys_queries', -1)}, "
        f"sends that waited for one: {stats.get('send_waits', -1)}"
    )
    problems += int(case_rooms != COUNSELORS)

    echo_counts: Counter[int] = Counter(
        len(p.bodies(world.echo_dm[p.user_id], world.echo_id)) for p in world.clients
    )
    # greeting, the burst and the next message, the one-message walk, the like-for-like walk
    echo_want = 3 + len(plans.intake) + sum(len(ps) or 1 for ps in plans.intake)
    lines.append(
        f"echo bot messages per client DM (want {echo_want}): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(echo_counts.items()))
    )
    problems += sum(v for k, v in echo_counts.items() if k != echo_want)
    burst_counts: Counter[int] = Counter(
        len(p.bodies(world.echo_burst_dm[p.user_id], world.echo_id)) for p in world.clients
    )
    burst_want = 1 + len(plans.crisis) + 1  # greeting, the crisis reply's parts, the next
    lines.append(
        f"echo bot messages per like-for-like burst DM (want {burst_want}): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(burst_counts.items()))
    )
    problems += sum(v for k, v in burst_counts.items() if k != burst_want)
    echo_pages = count_echo_pages(world)
    lines.append(f"like-for-like echo pages to the on-call counselor: {echo_pages}/{n}")
    problems += int(echo_pages != n)
    lines.append(
        "like-for-like echo: crisis reply in "
        + f"{len(plans.crisis)} message(s) and a page; messages per turn "
        + ", ".join(str(len(ps)) for ps in plans.intake)
        + f" ({sum(len(ps) for ps in plans.intake)} a walk, as the bridge sent)"
    )
    undecryptable = sum(len(p.undecryptable) for p in [*world.clients, *world.counselors])
    lines.append(f"undecryptable events at clients and counselors: {undecryptable}")
    problems += undecryptable
    return Checks(lines, problems)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:9.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:9.2f}"


def handling(phase: Phase) -> tuple[list[float], list[float]]:
    """Engine handling times in a burst phase, sorted: each room's first event (the
    crisis message) and its second (the next message)."""
    first: dict[str, float] = {}
    second: dict[str, float] = {}
    for room, seconds in phase.handled:
        if room not in first:
            first[room] = seconds
        elif room not in second:
            second[room] = seconds
    return sorted(first.values()), sorted(second.values())


def cpu_lines(phases: dict[str, Phase]) -> list[str]:
    """CPU per handled message and per message sent: the bridge in the intake walk, the
    echo bot in each of its walks (one process holds both bots; in each walk the other
    is idle), and the ratios; then the bridge's handling time per crisis message and
    per the message right after it."""
    lines = ["CPU of the bots' process (time.process_time):"]
    rows: dict[str, tuple[float, int, int] | None] = {}
    for label, name in (
        ("bridge, intake walk", "intake walk"),
        ("echo, one message a turn", "echo walk"),
        ("echo, like for like", "echo walk, like for like"),
    ):
        ph = phases.get(name)
        if ph is None:
            rows[label] = None
            lines.append(f"  {label:<26} -")
            continue
        of_bridge = name == "intake walk"
        handled = ph.bridge_handled if of_bridge else ph.echo_replies
        sent = ph.bridge_sent if of_bridge else ph.echo_sent
        rows[label] = (ph.cpu, handled, sent)
        per_handled = ms(ph.cpu / handled if handled else None).strip()
        per_sent = f"{ph.cpu / sent * 1000:.1f}" if sent else "-"
        lines.append(
            f"  {label:<26} {ph.cpu * 1000:6.0f} ms: {handled:>4} handled, {per_handled:>3} ms"
            f" each; {sent:>4} sent, {per_sent:>4} ms each"
        )

    def per(label: str, index: int) -> float | None:
        row = rows.get(label)
        return row[0] / row[index] if row is not None and row[index] else None

    bridge = "bridge, intake walk"
    for what, index in (("per handled message", 1), ("per message sent", 2)):
        old = ratio(per(bridge, index), per("echo, one message a turn", index)).strip()
        like = ratio(per(bridge, index), per("echo, like for like", index)).strip()
        lines.append(f"  ratio bridge / echo {what:<20} like for like {like:>5}   old way {old:>5}")
    burst = phases.get("crisis burst")
    echo_burst = phases.get("echo burst, like for like")
    if burst is not None and echo_burst is not None:
        burst_ratio = ratio(burst.cpu, echo_burst.cpu).strip()
        lines.append(
            f"  crisis burst (pages included): bridge {burst.cpu * 1000:.0f} ms, echo like for"
            f" like {echo_burst.cpu * 1000:.0f} ms, ratio {burst_ratio}"
        )
    lines.append("CPU of each process in each phase (ms; the bots, the homeserver, the clients):")
    for name, ph in phases.items():
        lines.append(
            f"  {name:<28} bots {ph.cpu * 1000:6.0f}  homeserver {ph.homeserver_cpu * 1000:6.0f}"
            f"  clients {ph.clients_cpu * 1000:6.0f}"
        )
    if burst is not None:
        crisis, then = handling(burst)
        lines.append("bridge handling time in the crisis burst (event in -> handler returns):")
        for label, values in (("crisis message", crisis), ("next message", then)):
            lines.append(
                f"  {label:<22} n {len(values):>3}  p50 {ms(percentile(values, 50)).strip()} ms"
                f"  p95 {ms(percentile(values, 95)).strip()} ms"
                f"  max {ms(values[-1] if values else None).strip()} ms"
            )
    return lines


def module_of(filename: str) -> str:
    """A profile entry's module: a package path for installed code, the repository
    path for ours, the function's own name for built-ins."""
    if filename.startswith("~") or filename.startswith("<"):
        return "(built-in)"
    path = filename.replace(os.sep, "/")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    with contextlib.suppress(ValueError):
        return str(Path(filename).resolve().relative_to(REPO_ROOT))
    return path


def profile_lines(path: str, what: str, top: int = 15) -> list[str]:
    """A walk's CPU profile: own time by module, then by function."""
    stats = pstats.Stats(path)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _cc, _nc, tt, _ct, _callers in entries.values()) or 1.0
    by_module: Counter[str] = Counter()
    builtins: Counter[str] = Counter()
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in entries.items():
        module = module_of(filename)
        by_module[module] += tt
        if module == "(built-in)":
            builtins[func] += tt
    lines = [f"CPU profile of the bots' process, {what} ({total:.2f} s CPU), own time:"]
    lines += [f"  {share / total:6.1%}  {module}" for module, share in by_module.most_common(top)]
    lines.append("  built-ins among them:")
    lines += [f"  {share / total:6.1%}  {func}" for func, share in builtins.most_common(8)]
    lines.append("  by package (own time):")
    packages: Counter[str] = Counter()
    for module, share in by_module.items():
        packages[module.split("/", 1)[0] if "/" in module else module] += share
    lines += [f"  {share / total:6.1%}  {pkg}" for pkg, share in packages.most_common(10)]
    lines.append("  ours, cumulative (includes what they await):")
    ours = [
        (ct, f"{module_of(filename)}:{func}")
        for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in entries.items()
        if module_of(filename).startswith(("bridge/", "e2ecounsel/"))
    ]
    lines += [f"  {ct / total:6.1%}  {name}" for ct, name in sorted(ours, reverse=True)[:top]]
    return lines


def report(
    series: dict[str, Series],
    checks: Checks,
    clients: int,
    where: str,
    timings: dict[str, float],
    phases: dict[str, Phase],
    profile: str | None = None,
) -> str:
    """The table. Round trip: client clock, send to decrypted reply. Bot: server clock,
    message to reply, which leaves out the load on the clients' own process."""
    group = f"{'':<34}{'':>5}{'':>5}{'round trip (client clock)':^40}{'bot (server clock)':^20}"
    head = (
        f"{'measure':<34}{'n':>5}{'lost':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"
        f"{'send p50':>10}{'p50 ms':>10}{'p95 ms':>10}"
    )

    def row(s: Series, label: str | None = None) -> str:
        ok = s.ok
        return (
            f"{label or s.name:<34}{len(s.samples):>5}{s.lost:>5}{ms(s.pct(50)):>10}"
            f"{ms(s.pct(95)):>10}{ms(ok[-1] if ok else None):>10}{ms(s.send_p50()):>10}"
            f"{ms(s.turnaround(50)):>10}{ms(s.turnaround(95)):>10}"
        )

    def ratios(a: Series, b: Series, label: str = "  ratio bridge / echo") -> str:
        return (
            f"{label:<34}{'':>5}{'':>5}{ratio(a.pct(50), b.pct(50)):>10}"
            f"{ratio(a.pct(95), b.pct(95)):>10}{'':>10}{'':>10}"
            f"{ratio(a.turnaround(50), b.turnaround(50)):>10}"
            f"{ratio(a.turnaround(95), b.turnaround(95)):>10}"
        )

    def burst_rows(first: str, then: str) -> list[str]:
        """The bridge's crisis burst and next message, each beside the echo bot's."""
        return [
            row(series["crisis"]),
            row(series[first]),
            ratios(series["crisis"], series[first]),
            row(series["crisis_next"]),
            row(series[then]),
            ratios(series["crisis_next"], series[then]),
            "",
        ]

    rule = "-" * len(head)
    lines = [
        f"bridge latency: {clients} concurrent E2EE clients, embedded Synapse, "
        f"{os.cpu_count()} CPU(s); bridge and echo bot {where}",
        rule,
        group,
        head,
        rule,
        "crisis burst, old way: the echo bot answers with one message",
        *burst_rows("echo_first", "echo_next"),
        "crisis burst, like for like: the echo bot answers with the messages, of the same",
        "sizes, the bridge sent for the crisis message, then pages the on-call counselor",
        *burst_rows("echo_first_like", "echo_next_like"),
        "intake walk, old way: the echo bot answers every turn with one message",
        row(series["intake"]),
        row(series["echo_turns"]),
        ratios(series["intake"], series["echo_turns"]),
        row(series["intake_rest"]),
        ratios(series["intake_rest"], series["echo_turns"]),
        "",
        "intake walk, like for like: the echo bot answers each turn with the messages,",
        "of the same sizes, the bridge sent for the intake step of the same rank",
        row(series["intake"]),
        row(series["echo_like"]),
        ratios(series["intake"], series["echo_like"], "  ratio bridge / echo, all steps"),
        row(series["intake_rest"]),
        row(series["echo_like_rest"], "  echo, same turns"),
        ratios(series["intake_rest"], series["echo_like_rest"]),
        "",
        "intake steps (bridge), each next to the like-for-like echo turn:",
    ]
    for key, s in series.items():
        if key.startswith("step:"):
            echo = series.get(f"echo_step:{s.name}")
            lines.append(row(s, f"  {s.name}"))
            if echo is not None:
                lines.append(row(echo, "    echo"))
                lines.append(ratios(s, echo, "    ratio"))
    lines += [rule, *cpu_lines(phases)]
    if profile is not None:
        lines += [rule, *profile_lines(profile, "the bridge in the intake walk")]
        if os.path.exists(profile + ".crisis"):
            lines += [rule, *profile_lines(profile + ".crisis", "the bridge in the crisis burst")]
        if os.path.exists(profile + ".crisis-echo"):
            lines += [rule, *profile_lines(profile + ".crisis-echo", "the echo bot's burst")]
        if os.path.exists(profile + ".echo"):
            lines += [rule, *profile_lines(profile + ".echo", "the echo bot, like for like")]
    lines += [rule, "checks:"]
    lines += [f"  {line}" for line in checks.lines]
    lines.append(f"  problems: {checks.problems}")
    lines.append("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    policy = load_policy(None)
    expect = Expect(policy)
    timings: dict[str, float] = {}
    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="e2ecounsel-bench-", ignore_cleanup_errors=True) as d:
        async with contextlib.AsyncExitStack() as stack:
            world = await build(args, Path(d), stack)
            await open_dms(world, expect, args.timeout)
            timings["set-up"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            series, phases, plans = await measure(world, expect, args.timeout)
            timings["measuring"] = time.perf_counter() - t1
            checks = await integrity(world, expect, plans, args.settle)
            logger.info("stopping")
        timings["total"] = time.perf_counter() - t0
    where = "in the clients' process" if args.in_process else "in their own process"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average before the run: {load_before}; after: {load}")
    print(report(series, checks, len(world.clients), where, timings, phases, args.profile))
    return 1 if checks.problems else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.bridge_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    ap.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for any one reply (default 60)"
    )
    ap.add_argument(
        "--deadline",
        type=float,
        default=540.0,
        help="seconds before the whole run is abandoned (default 540)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="quiet seconds before counting messages (default 3)",
    )
    ap.add_argument(
        "--cold-case-rooms",
        action="store_true",
        help="do not open the counselors' case channels before the crisis burst",
    )
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="run the bridge and the echo bot in the clients' process (default: their own)",
    )
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="write a CPU profile (cProfile, process clock) of the bots' process during the"
        " intake walk to FILE, of the crisis bursts to FILE.crisis (the bridge) and"
        " FILE.crisis-echo, and of the like-for-like echo walk to FILE.echo, and print"
        " their top costs; it slows the bots, so take the latency figures from a run"
        " without it",
    )
    ap.add_argument("--serve-bots", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--log-level",
        default="ERROR",
        help="level for the bridge's and libraries' logs on stderr (default ERROR)",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        args.profile = os.path.abspath(args.profile)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.setLevel(logging.INFO)
    if args.serve_bots:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve_bots())
        return 130
    try:
        return asyncio.run(asyncio.wait_for(run(args), args.deadline))
    except TimeoutError:
        logger.error("abandoned after %.0fs (everything was stopped)", args.deadline)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
