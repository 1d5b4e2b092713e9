"""The journey tier: whole stories as people live them, against a real Synapse, the real
bridge and real end-to-end encrypted clients (see ``tests/integration/bridgekit.py``).

Journeys are integration tests (they need the homeserver the session fixture starts).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nio import MatrixRoom, RoomMessageText

from bridge.persistence.store import BridgeStore
from e2ecounsel import casechannel
from e2ecounsel.sealing import Sealer
from tests.integration.bridgekit import (
    BotEnv,
    Chat,
    counselor_record,
    fetch_event,
    make_bot,
    person,
)
from tests.integration.matrixkit import Recorder

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
async def bot(homeserver, tmp_path) -> AsyncIterator[BotEnv]:
    env = await make_bot(homeserver, tmp_path)
    await env.start()
    yield env
    await env.stop()


@pytest.fixture
async def people(
    homeserver, user_factory, tmp_path
) -> AsyncIterator[Callable[[str], Awaitable[Recorder]]]:
    """``await people("ana")``: a fresh cross-signed E2EE account; all closed afterwards."""
    made: list[Recorder] = []

    async def make(prefix: str) -> Recorder:
        who = await person(homeserver, user_factory, tmp_path, prefix)
        made.append(who)
        return who

    yield make
    for who in made:
        await who.close()


async def hire(env: BotEnv, who: Recorder, name: str, **over: object) -> None:
    assert env.bridge is not None
    await env.bridge.store.add_counselor(counselor_record(who.session.user_id, name, **over))


async def eventually(
    check: Callable[[], Awaitable[object]], *, timeout: float = 30.0, what: str
) -> object:
    """Poll an async ``check`` until it returns something truthy; return that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await check()
        if got:
            return got
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def case_channel(env: BotEnv, who: Recorder) -> Chat:
    """The counselor's case channel with this bot, once the bot has opened it."""
    assert env.bridge is not None
    store = env.bridge.store

    async def room() -> str | None:
        c = await store.get_counselor(who.session.user_id)
        return c.case_room_id if c else None

    room_id = await eventually(room, what="the case channel")
    return Chat(who, str(room_id), env.user_id)


class Contents:
    """Every decrypted message content ``who`` receives, with the machine-readable case field."""

    def __init__(self, who: Recorder) -> None:
        self.seen: list[tuple[str, str, dict[str, object]]] = []
        who.session.add_event_callback(self._on, RoomMessageText)

    async def _on(self, room: MatrixRoom, event: RoomMessageText) -> None:
        content = event.source.get("content")
        if isinstance(content, dict):
            self.seen.append((room.room_id, event.sender, content))

    def cases(self, room_id: str, kind: str) -> list[dict[str, object]]:
        out = []
        for room, _sender, content in self.seen:
            fact = content.get(casechannel.FIELD)
            if room == room_id and isinstance(fact, dict) and fact.get("kind") == kind:
                out.append(fact)
        return out


async def redacted(who: Recorder, room_id: str, event_id: str) -> bool:
    """True once the homeserver serves ``event_id`` to ``who`` without content."""
    return (await fetch_event(who, room_id, event_id)).get("content") == {}


ROOT = Path(__file__).resolve().parents[2]


async def poll(check: Callable[[], Awaitable[bool]], *, timeout: float = 60.0, what: str) -> None:
    """Wait until the async ``check()`` holds; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@dataclass
class BotProcess:
    """The bridge as a separate process; :meth:`start` may arm one crash point."""

    homeserver_url: str
    user_id: str
    password: str
    work: Path
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    proc: asyncio.subprocess.Process | None = None
    kills: int = 0

    @property
    def data_dir(self) -> Path:
        return self.work / "bridge"

    @property
    def trace(self) -> Path:
        return self.work / "trace"

    async def start(self, point: str | None = None, nth: int = 1) -> None:
        """Start the bridge; return once it is serving (or has already been killed)."""
        assert self.proc is None
        self.work.mkdir(parents=True, exist_ok=True)
        ready = self.work / "ready"
        ready.unlink(missing_ok=True)
        spec = {
            "homeserver_url": self.homeserver_url,
            "user_id": self.user_id,
            "password": self.password,
            "data_dir": str(self.data_dir),
            "key": self.key.hex(),
            "trace": str(self.trace),
            "ready": str(ready),
            "point": point,
            "nth": nth,
        }
        spec_file = self.work / f"spec-{uuid.uuid4().hex[:6]}.json"
        spec_file.write_text(json.dumps(spec))
        log = (self.work / "bridge.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.journeys.crashbot",
            str(spec_file),
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not ready.exists() and self.proc.returncode is None:
            assert loop.time() < deadline, "the bridge did not start"
            await asyncio.sleep(0.1)

    async def killed(self, timeout: float = 60.0) -> bool:
        """Wait for the armed crash point; True if the bridge died by SIGKILL."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return False
        self.proc = None
        if code == -signal.SIGKILL:
            self.kills += 1
            return True
        return False

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()
        self.proc = None

    @asynccontextmanager
    async def store(self) -> AsyncIterator[BridgeStore]:
        """The bridge's database, while the bridge is down."""
        assert self.proc is None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = await BridgeStore.open(self.data_dir / "bridge.db", Sealer(self.key))
        try:
            yield store
        finally:
            await store.close()
