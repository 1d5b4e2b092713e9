"""The bridge process: one bot account, one E2EE device, one database.

At start it restores (or creates) the bot's device, makes sure the device is
cross-signed, and then syncs until told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from nio import InviteMemberEvent, MatrixRoom

from e2ecounsel.config import BridgeConfig
from e2ecounsel.matrix import MatrixSession
from e2ecounsel.sealing import Sealer, load_or_create_key

logger = logging.getLogger(__name__)

# Lazy-loaded members keep initial syncs small with thousands of rooms; nio
# fetches the full member list of a room once before it first encrypts there.
SYNC_FILTER = {
    "room": {
        "state": {"lazy_load_members": True},
        "timeline": {"limit": 50},
    },
    "presence": {"types": []},
}


@dataclass
class BridgeStatus:
    user_id: str
    device_id: str
    cross_signed: bool


class Bridge:
    """The bot. Built from a validated config; owns its session and tasks."""

    def __init__(self, config: BridgeConfig, sealer: Sealer) -> None:
        self.config = config
        self.sealer = sealer
        self.session = MatrixSession(
            config.homeserver_url,
            config.bot_user_id,
            config.data_dir / "bot",
            sealer,
            device_name=config.device_name,
            sync_filter=SYNC_FILTER,
        )
        self.session.add_event_callback(self._on_invite, InviteMemberEvent)
        self._stopped = asyncio.Event()

    @classmethod
    def from_config(cls, config: BridgeConfig) -> Bridge:
        key = load_or_create_key(config.data_dir / "sealing.key")
        return cls(config, Sealer(key))

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    async def start(self) -> BridgeStatus:
        """Sign in (or restore), run the first sync, start syncing."""
        await self.session.login(self.config.bot_password)
        await self.session.sync_once(0)
        self.session.start()
        return BridgeStatus(self.session.user_id, self.session.device_id, cross_signed=False)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key != self.session.user_id or event.membership != "invite":
            return
        sender_server = event.sender.split(":", 1)[-1]
        own_server = self.session.user_id.split(":", 1)[-1]
        allowed = {own_server, *self.config.allowed_servers}
        if sender_server not in allowed:
            logger.info("ignoring invite to %s from a server not allowed", room.room_id)
            return
        resp = await self.session.client.join(room.room_id)
        logger.info("joined %s (%s)", room.room_id, type(resp).__name__)

    async def run_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(Exception):
            await self.session.close()
