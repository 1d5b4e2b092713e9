"""The bridge's outbox sender over a real SQLite file, with the homeserver's send
replaced by a slow recorder: background flushes of one room coalesce into a few
passes, keep the room's order and send each row once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Bridge
from bridge.kernel.effects import message_content, txn_id
from bridge.persistence.store import BridgeStore
from e2ecounsel.config import BridgeConfig
from e2ecounsel.sealing import Sealer


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    sealer = Sealer(secrets.token_bytes(32))
    config = BridgeConfig(
        homeserver_url="http://127.0.0.1:9",
        bot_user_id="@counsel:example.org",
        bot_password=None,
        data_dir=tmp_path,
        policies_dir=None,
        supervisors_room=None,
        allowed_servers=(),
    )
    b = Bridge(config, sealer)
    b.store = await BridgeStore.open(tmp_path / "bridge.db", sealer)
    yield b
    await b.store.close()
    await b.session.close()


async def test_pages_queued_in_a_burst_go_out_in_a_few_passes_in_order(bridge, monkeypatch):
    store = bridge.store
    assert store is not None
    sent: list[str] = []
    reads = 0

    async def send(room_id: str, content: dict[str, Any], **_kw: Any) -> str:
        await asyncio.sleep(0.01)  # a homeserver round trip
        sent.append(content["body"])
        return f"$event{len(sent)}"

    unsent = store.unsent

    async def counting_unsent(room_id: str | None = None) -> list[Any]:
        nonlocal reads
        reads += 1
        return await unsent(room_id)

    monkeypatch.setattr(bridge.session, "send", send)
    monkeypatch.setattr(store, "unsent", counting_unsent)
    # Fifty steps each queue a page in the on-call counselor's case channel and hand
    # the room to the background sender, as fifty crisis messages at once do.
    for i in range(50):
        await store.queue("!case:x", message_content(f"page {i}"), txn_id("page", i))
        bridge.flush_soon({"!case:x"})
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*list(bridge._tasks)), 10)
    assert sent == [f"page {i}" for i in range(50)]
    assert await store.unsent_rooms() == set()
    assert reads <= 3, f"{reads} passes for one burst"
