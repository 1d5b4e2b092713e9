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
from bridge.kernel.effects import Effects, message_content, txn_id
from bridge.kernel.work import Work
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


def _recording(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """The bodies sent, and the rooms whose queue was read back from the database."""
    store = bridge.store
    assert store is not None
    sent: list[str] = []
    reads: list[str] = []

    async def send(room_id: str, content: dict[str, Any], **_kw: Any) -> str:
        sent.append(content["body"])
        return f"$event{len(sent)}"

    unsent = store.unsent

    async def counting_unsent(room_id: str | None = None) -> list[Any]:
        reads.append(str(room_id))
        return await unsent(room_id)

    monkeypatch.setattr(bridge.session, "send", send)
    monkeypatch.setattr(store, "unsent", counting_unsent)
    return sent, reads


def _work(bridge: Bridge) -> Work:
    assert bridge.store is not None
    return Work(bridge.store, txn_id=txn_id, flush=bridge.flush, send_queued=bridge.send_queued)


def _step(cause: str, room_id: str, *bodies: str, about: str | None = None) -> Effects:
    fx = Effects(cause)
    for body in bodies:
        fx.say(room_id, body, about=about)
    return fx


async def test_a_steps_rows_are_sent_as_queued_once_the_room_was_read_empty(bridge, monkeypatch):
    sent, reads = _recording(bridge, monkeypatch)
    work = _work(bridge)
    await work.commit(_step("a", "!dm:x", "one"), None)
    assert reads == ["!dm:x"]  # the first pass reads: the room's queue is not known yet
    for cause in ("b", "c", "d"):
        await work.commit(_step(cause, "!dm:x", f"{cause}1", f"{cause}2"), None)
    assert reads == ["!dm:x"]
    assert sent == ["one", "b1", "b2", "c1", "c2", "d1", "d2"]
    assert bridge.store is not None and await bridge.store.unsent_rooms() == set()


async def test_a_row_queued_by_anyone_else_first_is_read_and_sent_before_the_steps(
    bridge, monkeypatch
):
    sent, reads = _recording(bridge, monkeypatch)
    store = bridge.store
    assert store is not None
    work = _work(bridge)
    await work.commit(_step("a", "!dm:x", "one"), None)
    # A reminder queued outside any step, not sent yet; then the next step's reply.
    await store.queue("!dm:x", message_content("reminder"), txn_id("job", 0))
    await work.commit(_step("b", "!dm:x", "two"), None)
    assert sent == ["one", "reminder", "two"]
    assert reads == ["!dm:x", "!dm:x"]
    await work.commit(_step("c", "!dm:x", "three"), None)
    assert sent == ["one", "reminder", "two", "three"]
    assert reads == ["!dm:x", "!dm:x"]


async def test_a_replayed_step_is_not_sent_again(bridge, monkeypatch):
    sent, _reads = _recording(bridge, monkeypatch)
    work = _work(bridge)
    await work.commit(_step("a", "!dm:x", "one"), None)
    await work.commit(_step("a", "!dm:x", "one"), None)  # the same cause: the same txn ids
    assert sent == ["one"]


async def test_a_row_that_waits_keeps_the_rows_after_it_waiting(bridge, monkeypatch):
    sent, _reads = _recording(bridge, monkeypatch)
    work = _work(bridge)
    await work.commit(_step("a", "!dm:x", "one"), None)
    fx = Effects("b")
    fx.say("!dm:x", "for the reader", reader="@reader:x")
    joined: bool | None = None

    async def reader_joined(room_id: str, user_id: str) -> bool | None:
        return joined

    monkeypatch.setattr(bridge, "_reader_joined", reader_joined)
    await work.commit(fx, None)
    await work.commit(_step("c", "!dm:x", "after"), None)
    assert sent == ["one"]
    joined = True
    await work.commit(_step("d", "!dm:x", "last"), None)
    assert sent == ["one", "for the reader", "after", "last"]


async def test_rows_deleted_by_an_erasure_before_their_send_are_not_sent(bridge, monkeypatch):
    sent, _reads = _recording(bridge, monkeypatch)
    store = bridge.store
    assert store is not None
    work = _work(bridge)
    await work.commit(_step("a", "!case:x", "first"), None)
    # The room is busy sending when the next step commits; the client is erased
    # before its rows go out.
    lock = bridge._send_locks["!case:x"]
    await lock.acquire()
    pending = asyncio.create_task(
        work.commit(_step("b", "!case:x", "brief", about="@client:x"), None)
    )
    await asyncio.sleep(0.05)
    await store.forget_about("@client:x")
    lock.release()
    await asyncio.wait_for(pending, 5)
    assert sent == ["first"]
