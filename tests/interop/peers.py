"""Our side of the interop tests: a bare nio client and one on the session layer.

Both expose the same small surface (``send_text``, ``wait_text``, ``user_id``,
``device_id``, ``client``) so a conversation can be scripted once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinedMembersError,
    LoginResponse,
    MatrixRoom,
    MegolmEvent,
    RoomMessageNotice,
    RoomMessageText,
    RoomSendResponse,
)

from e2ecounsel.matrix.session import MatrixSession
from e2ecounsel.matrix.trust import TrustPolicy
from e2ecounsel.sealing import Sealer

ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


async def until(condition: Any, *, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Seen:
    room_id: str
    sender: str
    body: str
    event: Any


class _Recording:
    """Callbacks shared by both peers: decrypted texts, undecryptable events, auto-join."""

    client: AsyncClient

    def _init_recording(self) -> None:
        self.texts: list[Seen] = []
        self.undecryptable: list[MegolmEvent] = []

    async def _on_text(self, room: MatrixRoom, event: Any) -> None:
        self.texts.append(Seen(room.room_id, event.sender, event.body, event))

    async def _on_megolm(self, room: MatrixRoom, event: MegolmEvent) -> None:
        self.undecryptable.append(event)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == self.client.user_id and event.membership == "invite":
            await self.client.join(room.room_id)

    async def wait_text(self, room_id: str, sender: str, body: str, timeout: float = 60) -> Seen:
        def find() -> Seen | None:
            for seen in self.texts:
                if seen.room_id == room_id and seen.sender == sender and seen.body == body:
                    return seen
            return None

        await until(lambda: find() is not None, timeout=timeout, what="a decrypted message")
        found = find()
        assert found is not None
        return found

    def joined(self, room_id: str) -> bool:
        room = self.client.rooms.get(room_id)
        return room is not None and self.client.user_id in room.users


class NioPeer(_Recording):
    """A plain logged-in ``nio.AsyncClient`` with a sync loop, as the bot runs it."""

    def __init__(self, base_url: str, user_id: str, store: Path, sealer: Sealer) -> None:
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=True,
            pickle_key=sealer.subkey("nio-pickle").hex(),
        )
        self.client = AsyncClient(base_url, user_id, store_path=str(store), config=config)
        self._init_recording()
        self.client.add_event_callback(self._on_text, (RoomMessageText, RoomMessageNotice))
        self.client.add_event_callback(self._on_megolm, MegolmEvent)
        self.client.add_event_callback(self._on_invite, InviteMemberEvent)
        self._task: asyncio.Task[None] | None = None
        self.policy: TrustPolicy | None = None

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    @property
    def device_id(self) -> str:
        return str(self.client.device_id)

    async def login(self, password: str) -> None:
        resp = await self.client.login(password=password, device_name="interop nio")
        assert isinstance(resp, LoginResponse), resp
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        await self.client.sync(timeout=0, full_state=True)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.client.sync(timeout=1000)
                if self.client.should_upload_keys:
                    await self.client.keys_upload()

        self._task = asyncio.create_task(loop())

    async def send_text(self, room_id: str, body: str) -> str:
        """Encrypted send outside ``sync_forever``: members, keys_query, trust, keys_claim."""
        await until(lambda: self.joined(room_id), what="our join to show in sync")
        room = self.client.rooms[room_id]
        if not room.members_synced:
            resp = await self.client.joined_members(room_id)
            assert not isinstance(resp, JoinedMembersError), resp
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.policy is not None:
            await self.policy.apply(self.client, room_id)
        missing = self.client.get_missing_sessions(room_id)
        if missing:
            await self.client.keys_claim(missing)
        resp = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}
        )
        assert isinstance(resp, RoomSendResponse), resp
        return str(resp.event_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()


class SessionPeer(_Recording):
    """Our session layer (``MatrixSession``), as the TUI uses it."""

    def __init__(self, base_url: str, user_id: str, store: Path, sealer: Sealer) -> None:
        self.session = MatrixSession(base_url, user_id, store, sealer, device_name="interop")
        self.client = self.session.client
        self._init_recording()
        self.session.add_event_callback(self._on_text, (RoomMessageText, RoomMessageNotice))
        self.session.add_event_callback(self._on_megolm, MegolmEvent)
        self.session.add_event_callback(self._on_invite, InviteMemberEvent)
        self.policy: TrustPolicy | None = None

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    @property
    def device_id(self) -> str:
        return self.session.device_id

    def use_policy(self, policy: TrustPolicy) -> None:
        self.policy = policy

        async def hook(room_id: str) -> None:
            await policy.apply(self.client, room_id)

        self.session.before_encrypt.append(hook)

    async def login(self, password: str) -> None:
        await self.session.login(password)
        await self.session.sync_once(0)

    def start(self) -> None:
        self.session.start()

    async def send_text(self, room_id: str, body: str) -> str:
        await until(lambda: self.joined(room_id), what="our join to show in sync")
        return await self.session.send_text(room_id, body)

    async def close(self) -> None:
        await self.session.close()
