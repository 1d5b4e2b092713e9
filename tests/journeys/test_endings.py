"""The client's first words, and endings that end: real Synapse, real bridge, real E2EE
clients on both sides.

- A client who writes before the counselor accepted the invitation is read: the
  counselor's client decrypts it once they join, and it counts as awaiting.
- A closed session room is read-only for both people, its history readable.
- ``!close continue`` keeps the engagement open: the client keeps writing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from nio import MatrixRoom, RoomMessageNotice, RoomMessageText

from bridge.app import Bridge
from e2ecounsel import casechannel
from e2ecounsel.errors import MatrixError
from e2ecounsel.policy import ConsentText
from e2ecounsel.sealing import Sealer
from tests.integration.bridgekit import (
    POLICY,
    BotEnv,
    Seated,
    bot_event_ids,
    counselor_record,
    fetch_event,
    make_bot,
    membership,
    person,
    seat_client,
    text,
)
from tests.integration.matrixkit import Recorder, until
from tests.journeys.conftest import poll

#: What each counselor's app reads in the case channel: the machine-readable facts.
FACTS: dict[str, list[casechannel.CaseEvent]] = {}


@pytest.fixture
async def bot(homeserver, tmp_path) -> AsyncIterator[BotEnv]:
    env = await make_bot(homeserver, tmp_path)
    await env.start()
    yield env
    await env.stop()


@pytest.fixture
async def people(homeserver, user_factory, tmp_path) -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for who in made:
        await who.close()


async def hire(env: BotEnv, who: Recorder, name: str) -> None:
    assert env.bridge is not None
    await env.bridge.store.add_counselor(counselor_record(who.session.user_id, name))


async def seated_pair(
    env: BotEnv, homeserver, user_factory, tmp_path, made: list[Recorder], *, join: bool = True
) -> tuple[Recorder, Seated]:
    counselor = await person(homeserver, user_factory, tmp_path, "ana")
    counselor.auto_join = join
    facts = FACTS.setdefault(counselor.session.user_id, [])

    async def on_message(room: MatrixRoom, event: RoomMessageText | RoomMessageNotice) -> None:
        fact = casechannel.parse(event.source.get("content", {}))
        if fact is not None and event.sender == env.user_id:
            facts.append(fact)

    counselor.session.add_event_callback(on_message, (RoomMessageText, RoomMessageNotice))
    client = await person(homeserver, user_factory, tmp_path, "client")
    made += [counselor, client]
    await hire(env, counselor, "Ana")
    seated = await seat_client(env, client, "Ana")
    if join:
        await until(
            lambda: counselor.joined(seated.room.room_id, counselor.session.user_id),
            what="the counselor joins",
        )
    return counselor, seated


async def test_words_written_before_the_counselor_joined_are_read_and_awaited(
    bot, homeserver, user_factory, tmp_path, people
) -> None:
    counselor, seated = await seated_pair(
        bot, homeserver, user_factory, tmp_path, people, join=False
    )
    room_id = seated.room.room_id
    assert bot.bridge is not None
    store = bot.bridge.store
    assert counselor.session.user_id in seated.client.session.client.rooms[room_id].invited_users
    first_words = "I have not slept for days and I do not know who to talk to"
    await seated.room.send(first_words)

    async def awaiting() -> int | None:
        eng = await store.engagement_by_room(room_id)
        return eng.awaiting_since if eng else None

    async def counted() -> bool:
        return await awaiting() is not None

    await poll(counted, what="the message counts as awaiting while the counselor is invited")
    since = await awaiting()

    await counselor.session.client.join(room_id)
    await until(
        lambda: first_words in counselor.bodies(room_id, sender=seated.user_id),
        timeout=30,
        what="the counselor decrypts what was written before they joined",
    )
    assert not [e for e in counselor.undecryptable if e[0] == room_id]
    assert await awaiting() == since, "still awaiting: nobody answered yet"


async def test_a_closed_room_is_read_only_for_both_and_stays_readable(
    bot, homeserver, user_factory, tmp_path, people
) -> None:
    counselor, seated = await seated_pair(bot, homeserver, user_factory, tmp_path, people)
    room_id = seated.room.room_id
    await seated.room.send("thank you for everything")
    await counselor.session.send_text(room_id, "!close resolved")
    await seated.room.expect(text("en", "close.resolved", counselor_name="Ana"))
    assert bot.bridge is not None
    eng = await bot.bridge.store.engagement_by_room(room_id)
    assert eng is not None and eng.status == "closed"

    async def locked() -> bool:
        status, levels = await seated.client.session.raw(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/"
        )
        return status == 200 and levels.get("events_default") == 100

    await poll(locked, what="the closed room becomes read-only")
    for who in (seated.client, counselor):
        with pytest.raises(MatrixError):
            await who.session.send_text(room_id, "is anyone still here?")
    # The history stays readable for both.
    intro = bot_event_ids(seated.client, room_id, bot.user_id)[0]
    for who in (seated.client, counselor):
        assert (await fetch_event(who, room_id, intro)).get("content")
    await until(
        lambda: text("en", "close.done", outcome="resolved") in counselor.bodies(),
        what="the answer to the command in the case channel",
    )
    facts = FACTS[counselor.session.user_id]
    await until(lambda: any(f.kind == "closed" for f in facts), what="the closed fact")
    brief = next(f for f in facts if f.kind == "brief")
    assert (brief.engagement, brief.room) == (eng.id, room_id)
    assert brief.data["case"] == eng.id and brief.data["shared"] is True
    assert brief.data["pseudonym"] == "Rain" and brief.data["language"] == "en"
    assert [e["instrument"] for e in brief.data["screening"]] == ["phq9", "gad7"]
    assert brief.data["risk"] == "low" and brief.data["critical"] == []
    closed = next(f for f in facts if f.kind == "closed")
    assert (closed.engagement, closed.data) == (eng.id, {"outcome": "resolved"})


async def test_close_continue_keeps_the_engagement_open(
    bot, homeserver, user_factory, tmp_path, people
) -> None:
    counselor, seated = await seated_pair(bot, homeserver, user_factory, tmp_path, people)
    room_id = seated.room.room_id
    await counselor.session.send_text(room_id, "!close continue next round online")
    await seated.room.expect(text("en", "close.continue", counselor_name="Ana"))
    assert bot.bridge is not None
    store = bot.bridge.store
    eng = await store.engagement_by_room(room_id)
    assert eng is not None and eng.status == "active" and eng.outcome is None
    assert (await store.current_engagement(seated.user_id)) == eng
    await seated.room.send("so we go on, good")
    await until(
        lambda: "so we go on, good" in counselor.bodies(room_id, sender=seated.user_id),
        what="the counselor reads the client after continue",
    )
    assert not seated.dm.bot_messages()[-1] == text("en", "survey.ask"), "no survey yet"


async def test_a_client_who_left_the_session_room_is_invited_back_when_they_write(
    bot, homeserver, user_factory, tmp_path, people
) -> None:
    counselor, seated = await seated_pair(bot, homeserver, user_factory, tmp_path, people)
    room_id = seated.room.room_id
    seated.client.auto_join = False
    await seated.client.session.client.room_leave(room_id)

    async def member(state: str) -> bool:
        return await membership(counselor, room_id, seated.user_id) == state

    await poll(lambda: member("leave"), what="the client has left")
    await seated.dm.send("status")
    await seated.dm.expect(
        lambda b: b.startswith(
            text(
                "en",
                "status.active",
                counselor_name="Ana",
                credentials="M.Psi., Psikolog, SIPP 1234-56",
            )[:30]
        )
    )
    await poll(lambda: member("invite"), what="the client is invited back")


async def test_a_changed_consent_is_asked_again_during_counseling(
    bot, homeserver, user_factory, tmp_path, people
) -> None:
    counselor, seated = await seated_pair(bot, homeserver, user_factory, tmp_path, people)
    old = POLICY.consent["en"]
    changed = replace(
        POLICY,
        consent={
            **POLICY.consent,
            "en": ConsentText(old.text + "\n\nUpdated.", "v2" + old.version[2:]),
        },
    )
    await bot.stop()
    bot.bridge = Bridge(bot.config(), Sealer(bot.key), policy=changed, tick_seconds=0.5)
    await bot.bridge.start()
    await seated.dm.send("status")
    await seated.dm.expect(lambda b: "Updated." in b)
    await seated.dm.send("agree")
    await seated.dm.send("status")
    await seated.dm.expect(lambda b: "Ana" in b)
    eng = await bot.bridge.store.current_engagement(seated.user_id)
    client = await bot.bridge.store.get_client(seated.user_id)
    assert eng is not None and eng.status == "active"
    assert client is not None and client.consent_version == changed.consent["en"].version


async def test_after_a_switch_words_written_before_the_new_counselor_joined_are_read(
    bot, homeserver, user_factory, tmp_path, people
) -> None:
    ana, seated = await seated_pair(bot, homeserver, user_factory, tmp_path, people)
    budi = await person(homeserver, user_factory, tmp_path, "budi")
    budi.auto_join = False
    people.append(budi)
    await hire(bot, budi, "Budi")
    await seated.dm.send("switch")
    await seated.dm.expect(lambda b: "1. Budi" in b)
    await seated.dm.send("1")
    await seated.dm.expect(lambda b: "intake summary" in b)
    await seated.dm.send("yes")
    await seated.dm.expect(text("en", "switch.done", counselor_name="Budi"))
    assert bot.bridge is not None
    eng = await bot.bridge.store.current_engagement(seated.user_id)
    assert eng is not None and eng.counselor_id == budi.session.user_id and eng.room_id
    room_id = eng.room_id
    await until(lambda: seated.client.joined(room_id, seated.user_id), what="new room joined")
    words = "starting over with someone new feels strange"
    await seated.client.session.send_text(room_id, words)

    async def counted() -> bool:
        fresh = await bot.bridge.store.engagement_by_room(room_id)  # type: ignore[union-attr]
        return fresh is not None and fresh.awaiting_since is not None

    await poll(counted, what="the message counts as awaiting")
    await budi.session.client.join(room_id)
    await until(
        lambda: words in budi.bodies(room_id, sender=seated.user_id),
        what="the new counselor decrypts what was written before they joined",
    )
