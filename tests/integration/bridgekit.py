"""Test-side helpers for driving the real bridge with real E2EE clients."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.app import Bridge
from bridge.store import Counselor
from e2ecounsel.config import BridgeConfig
from e2ecounsel.policy import Policy, load_policy
from e2ecounsel.sealing import Sealer
from tests.integration.matrixkit import Recorder, until

POLICY: Policy = load_policy(None)


def text(lang: str, key: str, **params: object) -> str:
    """What the bot says for ``key``: tests compare against the real policy text."""
    return POLICY.text(lang, key, **params)


@dataclass
class BotEnv:
    """A bot account and its data dir; ``start()`` may be called again after ``stop()``."""

    homeserver: object
    base: Path
    user_id: str
    password: str
    key: bytes
    supervisors_room: str | None = None
    bridge: Bridge | None = None
    stores: list[Path] = field(default_factory=list)

    def config(self) -> BridgeConfig:
        info = self.homeserver.info  # type: ignore[attr-defined]
        return BridgeConfig(
            homeserver_url=info.base_url,
            bot_user_id=self.user_id,
            bot_password=self.password,
            data_dir=self.base,
            policies_dir=None,
            supervisors_room=self.supervisors_room,
            allowed_servers=(),
        )

    async def start(self) -> Bridge:
        self.bridge = Bridge(self.config(), Sealer(self.key), policy=POLICY, tick_seconds=0.5)
        await self.bridge.start()
        return self.bridge

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None

    async def restart(self) -> Bridge:
        await self.stop()
        return await self.start()


async def make_bot(homeserver, tmp_path: Path) -> BotEnv:
    localpart = f"counsel-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(12)
    user_id = await homeserver.register_user(localpart, password)
    return BotEnv(homeserver, tmp_path / "bridge", user_id, password, secrets.token_bytes(32))


async def person(homeserver, user_factory, tmp_path: Path, prefix: str) -> Recorder:
    user_id, password = await user_factory(prefix)
    return await Recorder.connect(
        homeserver.info.base_url, user_id, password, tmp_path / prefix / uuid.uuid4().hex[:6],
        secrets.token_bytes(32),
    )


def counselor_record(user_id: str, name: str, **over: object) -> Counselor:
    values: dict[str, object] = dict(
        user_id=user_id,
        name=name,
        credentials="M.Psi., Psikolog, SIPP 1234-56",
        languages=("en", "id"),
        specialties=("anxiety", "stress"),
        capacity=5,
        timezone="Asia/Jakarta",
        reply_windows=("09:00", "13:00", "19:00"),
        on_call=False,
        active=True,
        case_room_id=None,
    )
    values.update(over)
    return Counselor(**values)  # type: ignore[arg-type]


class Chat:
    """One person's view of one room with the bot: send, then expect replies in order."""

    def __init__(self, who: Recorder, room_id: str, bot_id: str) -> None:
        self.who = who
        self.room_id = room_id
        self.bot_id = bot_id
        self.seen = 0

    def bot_messages(self) -> list[str]:
        return self.who.bodies(self.room_id, sender=self.bot_id)

    async def send(self, body: str, *, allow_plaintext: bool = False) -> str:
        return await self.who.session.send_text(
            self.room_id, body, allow_plaintext=allow_plaintext
        )

    async def expect(
        self, want: str | Callable[[str], bool], *, timeout: float = 30.0
    ) -> str:
        """Wait for the next bot message that is (or satisfies) ``want``; return it."""
        check = want if callable(want) else (lambda body: body == want)
        found: list[str] = []

        def ready() -> bool:
            msgs = self.bot_messages()
            for i in range(self.seen, len(msgs)):
                if check(msgs[i]):
                    self.seen = i + 1
                    found.append(msgs[i])
                    return True
            return False

        try:
            await until(ready, timeout=timeout, what=f"bot reply {want!r}"[:200])
        except AssertionError:
            raise AssertionError(
                f"no bot reply matching {want!r:.120}; got since cursor: "
                f"{[m[:80] for m in self.bot_messages()[self.seen:]]}"
            ) from None
        return found[0]

    async def quiet(self, seconds: float = 1.5) -> list[str]:
        """Messages that arrive within ``seconds`` (to prove nothing more is sent)."""
        await asyncio.sleep(seconds)
        return self.bot_messages()[self.seen :]


async def open_dm(client: Recorder, bot_id: str, *, encrypted: bool = True) -> Chat:
    if encrypted:
        room_id = await client.create_encrypted_room([bot_id])
    else:
        resp = await client.session.client.room_create(invite=[bot_id], is_direct=True)
        room_id = resp.room_id
        await client.session.wait_for_room(room_id)
    await until(lambda: client.joined(room_id, bot_id), what="bot joins the DM")
    return Chat(client, room_id, bot_id)
