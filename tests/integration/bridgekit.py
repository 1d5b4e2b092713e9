"""Test-side helpers for driving the real bridge with real E2EE clients."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bridge.app import Bridge
from bridge.kernel import markup
from bridge.kernel.commands import Registry
from bridge.persistence.store import Counselor
from bridge.router import FEATURES
from e2ecounsel.config import BridgeConfig
from e2ecounsel.policy import Audience, Policy, load_policy
from e2ecounsel.sealing import Sealer
from tests.integration.matrixkit import Recorder, until

POLICY: Policy = load_policy(None)


def text(lang: str, key: str, **params: object) -> str:
    """What the bot says for ``key``: tests compare against the real policy text.

    The body people read is plain text (markdown markers go to ``formatted_body``).
    """
    return markup.to_plain(POLICY.text(lang, key, **params))


def help_text(audience: Audience, lang: str = "en") -> str:
    """The bot's ``help`` for ``audience``, as generated from the registry and commands.toml."""
    return markup.to_plain(Registry(FEATURES).help_text(POLICY, audience, lang))


def consent_start(lang: str) -> str:
    """The opening words of the consent, as the plain body of its first part shows them."""
    return markup.to_plain(POLICY.consent[lang].text)[:60]


def consent_parts(lang: str) -> list[str]:
    """The consent question as the bot sends it: several short plain messages."""
    whole = POLICY.text(lang, "intake.consent", consent_text=POLICY.consent[lang].text, version="-")
    return [markup.to_plain(part) for part in markup.split_parts(whole)]


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
    clock: Callable[[], datetime] | None = None
    stores: list[Path] = field(default_factory=list)
    database: str | None = None  # a postgresql:// URL; None: bridge.db in the data dir

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
            database=self.database,
        )

    async def start(self) -> Bridge:
        extra = {"clock": self.clock} if self.clock is not None else {}
        self.bridge = Bridge(
            self.config(), Sealer(self.key), policy=POLICY, tick_seconds=0.5, **extra
        )
        await self.bridge.start()
        return self.bridge

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None

    async def restart(self) -> Bridge:
        await self.stop()
        return await self.start()


async def make_bot(homeserver, tmp_path: Path, database: str | None = None) -> BotEnv:
    localpart = f"counsel-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(12)
    user_id = await homeserver.register_user(localpart, password)
    key = secrets.token_bytes(32)
    return BotEnv(homeserver, tmp_path / "bridge", user_id, password, key, database=database)


async def person(homeserver, user_factory, tmp_path: Path, prefix: str) -> Recorder:
    user_id, password = await user_factory(prefix)
    return await Recorder.connect(
        homeserver.info.base_url,
        user_id,
        password,
        tmp_path / prefix / uuid.uuid4().hex[:6],
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
        return await self.who.session.send_text(self.room_id, body, allow_plaintext=allow_plaintext)

    async def expect(self, want: str | Callable[[str], bool], *, timeout: float = 30.0) -> str:
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
                f"{[m[:80] for m in self.bot_messages()[self.seen :]]}"
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


# ---------------------------------------------------------------------- lifecycle helpers


async def next_message(chat: Chat, *, timeout: float = 30.0) -> str:
    """The very next bot message in ``chat``, whatever it says (to check ordering)."""
    return await chat.expect(lambda _body: True, timeout=timeout)


async def answer_country(chat: Chat, lang: str = "en") -> None:
    """Pick the first country (and its first time zone, when it lists several) up to the
    pseudonym question."""
    zones = POLICY.crisis.countries[0].zones
    if len(zones) > 1:
        await chat.send("1")
        await chat.expect(lambda b: zones[0].label[lang] in b)
    await chat.send("1")
    await chat.expect(text(lang, "intake.pseudonym", max_len=40))


async def walk_intake(
    chat: Chat,
    *,
    lang: str = "en",
    pseudonym: str = "Rain",
    phq: list[str] | None = None,
    gad: list[str] | None = None,
    topic: int = 1,
    greeted: bool = False,
) -> None:
    """Drive an intake up to the counselor choice (``phq``/``gad`` default: skip both);
    ``greeted``: the welcome was already read."""
    phq_inst = POLICY.instruments["phq9"]
    gad_inst = POLICY.instruments["gad7"]

    async def step(send: str, want: Callable[[str], bool] | str) -> None:
        await chat.send(send)
        await chat.expect(want)

    if not greeted:
        await chat.expect(lambda b: "Welcome to" in b)
    await step("1" if lang == "en" else "2", lambda b: consent_start(lang) in b)
    await step("agree" if lang == "en" else "setuju", text(lang, "intake.age", min_age=18))
    first_country = POLICY.crisis.countries[0].label[lang]
    await step("yes" if lang == "en" else "ya", lambda b: first_country in b)
    await answer_country(chat, lang)
    await step(pseudonym, lambda b: phq_inst.items[0].text[lang] in b)
    for i, answer in enumerate(phq or ["skip"]):
        if answer == "skip":
            await step("skip", lambda b: gad_inst.items[0].text[lang] in b)
            break
        if i == 8 and answer != "0":  # a disclosure pauses the intake until the client goes on
            await step(answer, text(lang, "intake.paused"))
            await step(
                "now" if lang == "en" else "lanjut", lambda b: gad_inst.items[0].text[lang] in b
            )
            continue
        nxt = phq_inst.items[i + 1].text[lang] if i + 1 < 9 else gad_inst.items[0].text[lang]
        await step(answer, lambda b, nxt=nxt: nxt in b)
    topic_label = POLICY.service.topics[0].label[lang]
    for i, answer in enumerate(gad or ["skip"]):
        if answer == "skip":
            await step("skip", lambda b: topic_label in b)
            break
        nxt = gad_inst.items[i + 1].text[lang] if i + 1 < 7 else topic_label
        await step(answer, lambda b, nxt=nxt: nxt in b)
    await step(str(topic), lambda b: "auto" in b)


@dataclass
class Seated:
    """A client after a full intake: their DM and session room with the bot."""

    client: Recorder
    dm: Chat
    room: Chat

    @property
    def user_id(self) -> str:
        return self.client.session.user_id


async def seat_client(
    env: BotEnv, client: Recorder, counselor_name: str, **intake: object
) -> Seated:
    """Open a DM, walk the intake, pick ``auto`` and wait for the session room."""
    dm = await open_dm(client, env.user_id)
    await walk_intake(dm, **intake)  # type: ignore[arg-type]
    await dm.send("auto")
    await dm.expect(
        text(str(intake.get("lang", "en")), "intake.matched", counselor_name=counselor_name)
    )
    assert env.bridge is not None
    eng = await env.bridge.store.current_engagement(client.session.user_id)
    assert eng is not None and eng.room_id is not None
    room_id = eng.room_id
    await until(lambda: client.joined(room_id, client.session.user_id), what="client joins")
    room = Chat(client, room_id, env.user_id)
    await room.expect(lambda b: counselor_name in b)  # the intro notice
    return Seated(client, dm, room)


async def supervisors_room(supervisor: Recorder, bot_id: str) -> str:
    """An encrypted room of a supervisor and the bot (give its id to ``BotEnv``)."""
    return await supervisor.create_encrypted_room([bot_id])


async def room_state(who: Recorder, room_id: str) -> list[dict[str, object]]:
    """The room's current state as ``who`` reads it through the client-server API."""
    status, body = await who.session.raw("GET", f"/_matrix/client/v3/rooms/{room_id}/state")
    assert status == 200, (status, body)
    return list(body)


async def membership(who: Recorder, room_id: str, user_id: str) -> str | None:
    """``user_id``'s membership in ``room_id`` as ``who`` sees it (None: never a member)."""
    for event in await room_state(who, room_id):
        if event.get("type") == "m.room.member" and event.get("state_key") == user_id:
            content = event.get("content")
            return str(content.get("membership")) if isinstance(content, dict) else None
    return None


async def fetch_event(who: Recorder, room_id: str, event_id: str) -> dict[str, object]:
    """One event as the homeserver serves it to ``who`` (redacted events have no content)."""
    status, body = await who.session.raw(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/event/{event_id}"
    )
    assert status == 200, (status, body)
    return dict(body)


def bot_event_ids(who: Recorder, room_id: str, bot_id: str) -> list[str]:
    """Event ids of the bot's messages ``who`` decrypted in ``room_id``, in order."""
    return [m.event_id for m in who.messages if m.room_id == room_id and m.sender == bot_id]
