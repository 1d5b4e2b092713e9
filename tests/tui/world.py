"""Seeding a counselor's world on the real Synapse: a bot-like account that opens
session rooms (same shape as the bridge's) and posts case events (the
machine-readable ``org.e2ecounsel.case`` field) into the case channel, real E2EE
clients that write in them, and the counselor's TUI store.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ecounsel.casechannel import CaseEvent, Kind, attach
from tests.integration.matrixkit import ENCRYPTION_STATE, Recorder, until
from tui.app import CounselorApp, make_app
from tui.connect import connect, unlock_store
from tui.notes import FAST_FOR_TESTS
from tui.panes import QueueView
from tui.settings import TuiSettings

PASSPHRASE = "correct horse battery staple"
#: As the bridge's session rooms: what a client writes while the counselor is only
#: invited is readable to the counselor.
HISTORY_INVITED = {
    "type": "m.room.history_visibility",
    "state_key": "",
    "content": {"history_visibility": "invited"},
}


def brief_data(
    pseudonym: str, risk: str = "low", lang: str = "en", flags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A brief's data as the bridge writes it in the case channel."""
    return {
        "pseudonym": pseudonym,
        "language": lang,
        "country": "Indonesia",
        "topic": "Stress",
        "risk": risk,
        "screening": [
            {
                "instrument": "phq9",
                "title": "PHQ-9",
                "score": 7,
                "severity": "mild",
                "severity_label": "mild",
            },
            {"instrument": "gad7", "title": "GAD-7", "score": None},
        ],
        "critical": [],
        "consent_date": "2026-11-20",
        "flags": list(flags),
        "shared": True,
    }


def case_content(
    kind: Kind, engagement: int | None, room: str | None, data: dict[str, Any], body: str = ""
) -> dict[str, Any]:
    """A case-channel message: a human text (never read by the app) and the field."""
    content = {"msgtype": "m.text", "body": body or f"(case {engagement}: {kind})"}
    return attach(content, CaseEvent(kind, engagement, room, data))


async def account(homeserver, prefix: str) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    user_id = await homeserver.register_user(f"{prefix}-{uuid.uuid4().hex[:8]}", password)
    return user_id, password


async def recorder(homeserver, tmp_path: Path, prefix: str) -> Recorder:
    user_id, password = await account(homeserver, prefix)
    return await Recorder.connect(
        homeserver.info.base_url,
        user_id,
        password,
        tmp_path / "peers" / prefix / uuid.uuid4().hex[:6],
        secrets.token_bytes(32),
    )


@dataclass
class World:
    homeserver: object
    tmp_path: Path
    bot: Recorder
    counselor_id: str
    counselor_password: str
    settings: TuiSettings
    case_room: str = ""
    clients: dict[str, Recorder] = field(default_factory=dict)  # room id -> client
    engagements: dict[str, int] = field(default_factory=dict)  # room id -> case number

    @property
    def base_url(self) -> str:
        return self.homeserver.info.base_url  # type: ignore[attr-defined]

    async def connect_counselor(self, passphrase: str = PASSPHRASE):
        """The TUI's own sign-in path (argon2id with test limits)."""
        return await connect(
            self.settings,
            homeserver=self.base_url,
            user_id=self.counselor_id,
            passphrase=passphrase,
            password=self.counselor_password,
        )

    async def unlock_counselor(self, passphrase: str = PASSPHRASE):
        """Only the store opened (no network yet): what a start shows first."""
        return await unlock_store(
            self.settings,
            homeserver=self.base_url,
            user_id=self.counselor_id,
            passphrase=passphrase,
        )

    async def open_case_room(self, *, wait: bool = True) -> str:
        """The bot's DM with the counselor; ``wait`` for the running app to join it."""
        resp = await self.bot.session.client.room_create(
            name="Case channel",
            invite=[self.counselor_id],
            is_direct=True,
            initial_state=[ENCRYPTION_STATE, HISTORY_INVITED],
            power_level_override={
                "users": {self.counselor_id: 50},
                "state_default": 100,
                "invite": 100,
                "kick": 100,
            },
        )
        self.case_room = resp.room_id
        await self.bot.session.wait_for_room(self.case_room)
        if not wait:
            return self.case_room
        await until(
            lambda: self.bot.joined(self.case_room, self.counselor_id),
            what="counselor joins the case channel",
        )
        return self.case_room

    async def add_client(
        self,
        pseudonym: str,
        *,
        risk: str = "low",
        lang: str = "en",
        flags: tuple[str, ...] = (),
        wait: bool = True,
    ) -> str:
        """A session room like the bridge's, joined by the client (and, with
        ``wait``, by the running app), and the brief posted."""
        client = await recorder(self.homeserver, self.tmp_path, "client")
        client_id = client.session.user_id
        resp = await self.bot.session.client.room_create(
            name="Counseling session",
            invite=[self.counselor_id, client_id],
            initial_state=[ENCRYPTION_STATE, HISTORY_INVITED],
            power_level_override={
                # As the bridge does: the creator (bot) is not listed (room v12).
                "users": {self.counselor_id: 50, client_id: 0},
                "state_default": 100,
                "invite": 100,
                "kick": 100,
            },
        )
        room_id = resp.room_id
        await self.bot.session.wait_for_room(room_id)
        await until(
            lambda: (
                self.bot.joined(room_id, client_id)
                and (not wait or self.bot.joined(room_id, self.counselor_id))
            ),
            what="counselor and client join the session room",
        )
        self.clients[room_id] = client
        self.engagements[room_id] = len(self.engagements) + 1
        await self.send_case("brief", room_id, brief_data(pseudonym, risk, lang, flags))
        return room_id

    async def send_case(self, kind: Kind, room_id: str | None, data: dict[str, Any]) -> str:
        """The bot tells the counselor a case fact in the case channel."""
        engagement = self.engagements.get(room_id or "")
        return await self.bot.session.send(
            self.case_room, case_content(kind, engagement, room_id, data)
        )

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()
        await self.bot.close()


async def make_world(homeserver, tmp_path: Path) -> World:
    bot = await recorder(homeserver, tmp_path, "counsel")
    counselor_id, password = await account(homeserver, "dewi")
    settings = TuiSettings(
        data_dir=tmp_path / "tui-data",
        config_dir=tmp_path / "tui-config",
        bot_user_id=bot.session.user_id,
        kdf=FAST_FOR_TESTS,
    )
    return World(homeserver, tmp_path, bot, counselor_id, password, settings)


async def wait_app(pilot, condition, *, timeout: float = 30.0, what: str = "app state") -> None:
    """Poll an app condition, letting the app process messages in between."""
    try:
        await until(condition, timeout=timeout, what=what)
    except AssertionError:
        app = pilot.app
        link = app.link
        state = [
            (e.room_id[:8], e.pseudonym, e.risk, e.awaiting_since_ms, len(e.messages))
            for e in (link.entries.values() if link else [])
        ]
        raise AssertionError(
            f"{what}: queue {queue_ids(app)}; session rooms "
            f"{sorted(r[:8] for r in link.session_rooms) if link else None}; entries {state}"
        ) from None
    await pilot.pause()


def queue_ids(app: CounselorApp) -> list[str]:
    return list(app.query_one("#queue", QueueView).row_ids)


def queue_row(app: CounselorApp, row: str) -> str:
    """What a row of the queue reads (the text the queue draws for it)."""
    return app.query_one("#queue", QueueView).row_text(row).plain


@asynccontextmanager
async def counselor_app(world: World) -> AsyncIterator[tuple[CounselorApp, Any]]:
    """The counselor signs in (the TUI's own path) and runs the app under Pilot."""
    done = await world.connect_counselor()
    app = make_app(world.settings, done.session, done.notes)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            yield app, pilot
    finally:
        await done.session.close()


async def with_client(world: World, pilot: Any, pseudonym: str) -> str:
    """A case channel and one client, shown in the running app's queue."""
    await world.open_case_room()
    room = await world.add_client(pseudonym)
    await wait_app(pilot, lambda: queue_ids(pilot.app) == [room], what="queue ready")
    return room
