"""Small test-side helpers around :class:`MatrixSession`: a recording client.

Tests poll for conditions with a deadline; they never sleep a fixed time and
hope (Complement's ``MustSyncUntil``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nio import InviteMemberEvent, MatrixRoom, MegolmEvent, RoomMessageNotice, RoomMessageText

from e2ecounsel.matrix import MatrixSession
from e2ecounsel.sealing import Sealer

ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


def files_containing(folder: Path, needle: bytes) -> list[str]:
    """Every file under ``folder`` whose bytes contain ``needle`` (a canary check)."""
    hits = []
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


async def until(
    condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Received:
    room_id: str
    sender: str
    body: str
    notice: bool
    event_id: str


@dataclass
class Recorder:
    """A real E2EE client that records what it can and cannot decrypt."""

    session: MatrixSession
    messages: list[Received] = field(default_factory=list)
    undecryptable: list[tuple[str, str]] = field(default_factory=list)
    auto_join: bool = True

    @classmethod
    async def connect(
        cls,
        base_url: str,
        user_id: str,
        password: str | None,
        store: Path,
        key: bytes,
        *,
        start: bool = True,
        cross_sign: bool = True,
        **session_options: Any,
    ) -> Recorder:
        """Sign in like a current client would: with its device cross-signed.

        ``session_options`` go to :class:`MatrixSession` (``resume_lazily``, ``sync_filter``).
        """
        session = MatrixSession(
            base_url, user_id, store, Sealer(key), device_name="test device", **session_options
        )
        rec = cls(session)
        session.add_event_callback(rec._on_text, (RoomMessageText, RoomMessageNotice))
        session.add_event_callback(rec._on_undecryptable, MegolmEvent)
        session.add_event_callback(rec._on_invite, InviteMemberEvent)
        await session.login(password)
        if cross_sign:
            await session.ensure_cross_signing(password)
        await session.sync_once(0)
        if start:
            session.start()
        return rec

    async def _on_text(self, room: MatrixRoom, event: Any) -> None:
        self.messages.append(
            Received(
                room.room_id,
                event.sender,
                event.body,
                isinstance(event, RoomMessageNotice),
                event.event_id,
            )
        )

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        self.undecryptable.append((room.room_id, event.event_id))

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if (
            self.auto_join
            and event.state_key == self.session.user_id
            and event.membership == "invite"
        ):
            await self.session.client.join(room.room_id)

    def bodies(self, room_id: str | None = None, *, sender: str | None = None) -> list[str]:
        return [
            m.body
            for m in self.messages
            if (room_id is None or m.room_id == room_id) and (sender is None or m.sender == sender)
        ]

    async def create_encrypted_room(self, invite: list[str]) -> str:
        resp = await self.session.client.room_create(
            invite=invite, initial_state=[ENCRYPTION_STATE]
        )
        room_id: str = resp.room_id
        await self.session.wait_for_room(room_id)
        return room_id

    def joined(self, room_id: str, user_id: str) -> bool:
        room = self.session.client.rooms.get(room_id)
        return room is not None and user_id in room.users

    async def close(self) -> None:
        await self.session.close()
