"""The journey tier: whole stories as people live them, against a real Synapse, the real
bridge and real end-to-end encrypted clients (see ``tests/integration/bridgekit.py``).

Journeys are integration tests (they need the homeserver the session fixture starts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nio import MatrixRoom, RoomMessageText

from e2ecounsel import casechannel
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
