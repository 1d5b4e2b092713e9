"""Intake, matching and the session room, end to end: real Synapse, real E2EE clients."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from bridge.persistence.inbox import InboxItem
from tests.integration.bridgekit import (
    POLICY,
    Chat,
    consent_parts,
    consent_start,
    counselor_record,
    make_bot,
    open_dm,
    person,
    text,
)
from tests.integration.matrixkit import files_containing, until

PHQ = POLICY.instruments["phq9"]
GAD = POLICY.instruments["gad7"]


@pytest.fixture
async def bot(homeserver, tmp_path, bridge_database):
    env = await make_bot(homeserver, tmp_path, bridge_database)
    await env.start()
    yield env
    await env.stop()


async def add_counselor(env, homeserver, user_factory, tmp_path, name="Dewi", **over):
    rec = await person(homeserver, user_factory, tmp_path, name.lower())
    await env.bridge.store.add_counselor(counselor_record(rec.session.user_id, name, **over))
    return rec


async def walk_intake(
    env,
    chat: Chat,
    *,
    lang: str = "en",
    pseudonym: str = "Rain",
    phq: list[str] | None = None,
    gad: list[str] | None = None,
    restart: bool = False,
) -> None:
    """Drive a whole intake; with ``restart`` the bot is restarted after every step."""

    async def step(send: str, want) -> str:
        await chat.send(send)
        got = await chat.expect(want)
        if restart:
            await env.restart()
        return got

    await chat.expect(lambda b: "Welcome to" in b)
    opening = consent_start(lang)
    await step("1" if lang == "en" else "2", lambda b: opening in b)
    await step("agree" if lang == "en" else "setuju", text(lang, "intake.age", min_age=18))
    first_country = POLICY.crisis.countries[0].label[lang]
    await step("yes" if lang == "en" else "ya", lambda b: first_country in b)
    zones = POLICY.crisis.countries[0].zones
    if len(zones) > 1:  # Indonesia: WIB, WITA or WIT
        await step("1", lambda b: zones[0].label[lang] in b)
    await step("1", text(lang, "intake.pseudonym", max_len=40))
    before = chat.seen
    start = await step(pseudonym, lambda b: PHQ.items[0].text[lang] in b)
    # One message, not two: the questionnaire's introduction with its first question.
    assert chat.seen == before + 1, chat.bot_messages()[before:]
    assert PHQ.title[lang] in start
    answers = phq if phq is not None else ["0"] * 9
    for i, answer in enumerate(answers):
        if answer == "skip":
            await step("skip", lambda b: GAD.items[0].text[lang] in b)
            break
        nxt = PHQ.items[i + 1].text[lang] if i + 1 < 9 else GAD.items[0].text[lang]
        await step(answer, lambda b, nxt=nxt: nxt in b)
    topic_label = POLICY.service.topics[0].label[lang]
    for i, answer in enumerate(gad if gad is not None else ["skip"]):
        if answer == "skip":
            await step("skip", lambda b: topic_label in b)
            break
        nxt = GAD.items[i + 1].text[lang] if i + 1 < 7 else topic_label
        await step(answer, lambda b, nxt=nxt: nxt in b)
    await step("1", lambda b: "auto" in b)


def room_state(homeserver, token: str, room_id: str) -> list[dict]:
    url = f"{homeserver.info.base_url}/_matrix/client/v3/rooms/{room_id}/state"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        return json.load(resp)


async def test_intake_in_english_opens_a_private_session_room(
    bot, homeserver, user_factory, tmp_path
):
    counselor = await add_counselor(bot, homeserver, user_factory, tmp_path)
    client = await person(homeserver, user_factory, tmp_path, "client")
    canary = f"Canary{uuid.uuid4().hex[:10]}"
    try:
        chat = await open_dm(client, bot.user_id)
        await walk_intake(bot, chat, pseudonym=canary)
        await chat.send("auto")
        await chat.expect(text("en", "intake.matched", counselor_name="Dewi"))

        store = bot.bridge.store
        eng = await store.current_engagement(client.session.user_id)
        record = await store.get_client(client.session.user_id)
        assert record.profile["zone"] == POLICY.crisis.countries[0].zones[0].zone  # WIB
        assert (
            eng is not None
            and eng.status == "active"
            and eng.counselor_id == counselor.session.user_id
        )
        session_room = eng.room_id
        await until(
            lambda: client.joined(session_room, client.session.user_id), what="client joins"
        )
        await until(
            lambda: counselor.joined(session_room, counselor.session.user_id),
            what="counselor joins",
        )
        intro = Chat(client, session_room, bot.user_id)
        await intro.expect(lambda b: "Dewi" in b and "M.Psi." in b)

        # The brief reached the counselor in the case channel, decrypted.
        case_room = (await store.get_counselor(counselor.session.user_id)).case_room_id
        await until(
            lambda: any(canary in b for b in counselor.bodies(case_room)),
            what="case brief with the pseudonym",
        )

        # Client and counselor talk through the room, encrypted both ways.
        await client.session.send_text(session_room, "hello counselor")
        await until(lambda: "hello counselor" in counselor.bodies(session_room), what="delivery")
        await counselor.session.send_text(session_room, "hello, I'm here")
        await until(lambda: "hello, I'm here" in client.bodies(session_room), what="reply")
        assert client.undecryptable == [] and counselor.undecryptable == []

        # Room state (unencrypted in Matrix) holds nothing personal.
        state = room_state(homeserver, client.session.client.access_token, session_room)
        flat = json.dumps(state)
        assert canary not in flat
        for label in [t.label["en"] for t in POLICY.service.topics]:
            assert label not in flat
        by_type = {(e["type"], e["state_key"]): e["content"] for e in state}
        assert by_type[("m.room.encryption", "")]["algorithm"] == "m.megolm.v1.aes-sha2"
        assert by_type[("m.room.join_rules", "")]["join_rule"] == "invite"
        assert by_type[("m.room.guest_access", "")]["guest_access"] == "forbidden"
        assert by_type[("m.room.history_visibility", "")]["history_visibility"] == "invited"
        power = by_type[("m.room.power_levels", "")]
        create = by_type[("m.room.create", "")]
        # The bot created the room: in room v12 that is power above 100, else 100.
        assert create.get("creator", state[0].get("sender")) == bot.user_id or any(
            e["type"] == "m.room.create" and e["sender"] == bot.user_id for e in state
        )
        assert power["users"].get(bot.user_id, 100) == 100
        assert power["users"][counselor.session.user_id] == 50
        assert power["users"].get(client.session.user_id, 0) == 0
        assert power["invite"] == power["kick"] == power["state_default"] == 100
        assert ("m.room.topic", "") not in by_type
        assert by_type[("m.room.name", "")]["name"] == text("en", "session.room_name")
    finally:
        await client.close()
        await counselor.close()

    # The pseudonym typed during intake is sealed in the bridge database and
    # absent from the homeserver's files and from every log we wrote.
    needle = canary.encode()
    assert files_containing(homeserver.info.data_dir, needle) == []
    assert files_containing(bot.base, needle) == []


async def test_intake_in_indonesian_survives_a_restart_at_every_step(
    bot, homeserver, user_factory, tmp_path
):
    await add_counselor(bot, homeserver, user_factory, tmp_path, name="Sari")
    client = await person(homeserver, user_factory, tmp_path, "klien")
    try:
        chat = await open_dm(client, bot.user_id)
        await walk_intake(bot, chat, lang="id", phq=["1", "0", "2", "skip"], restart=True)
        await chat.send("auto")
        await chat.expect(text("id", "intake.matched", counselor_name="Sari"))
        # Nothing was sent twice across all those restarts.
        msgs = chat.bot_messages()
        assert len(msgs) == len(set(msgs)), "a bot message was repeated"
        assert client.undecryptable == []
    finally:
        await client.close()


async def test_decline_ends_politely_and_stores_nothing(bot, homeserver, user_factory, tmp_path):
    client = await person(homeserver, user_factory, tmp_path, "decliner")
    try:
        chat = await open_dm(client, bot.user_id)
        await chat.expect(lambda b: "Welcome to" in b)
        await chat.send("1")
        await chat.expect(lambda b: consent_start("en") in b)
        await chat.send("decline")
        await chat.expect(
            lambda b: b.startswith(
                text("en", "intake.consent_declined", crisis_line="§").split("§")[0][:40]
            )
        )
        assert await bot.bridge.store.get_client(client.session.user_id) is None
        rows = await bot.bridge.store.db.fetchall("SELECT action FROM audit")
        assert [r["action"] for r in rows] == ["consent.declined"]
    finally:
        await client.close()


async def test_wrong_answers_repeat_the_step_and_change_nothing(
    bot, homeserver, user_factory, tmp_path
):
    client = await person(homeserver, user_factory, tmp_path, "typo")
    try:
        chat = await open_dm(client, bot.user_id)
        await chat.expect(lambda b: "Welcome to" in b)
        await chat.send("7")
        await chat.expect(lambda b: "1" in b and "2" in b)
        await chat.send("1")
        await chat.expect(lambda b: consent_start("en") in b)
        await chat.send("maybe")
        await chat.expect(text("en", "intake.consent_invalid"))
        await chat.send("agree")
        await chat.expect(text("en", "intake.age", min_age=18))
        await chat.send("x" * (POLICY.service.max_message_chars + 1))
        await chat.expect(text("en", "message_too_long"))
        await chat.send("[red]\x1b[31mperhaps")
        await chat.expect(lambda b: b.startswith(text("en", "intake.age_invalid", min_age=18)))
        await chat.send("yes")
        await chat.expect(lambda b: POLICY.crisis.countries[0].label["en"] in b)
    finally:
        await client.close()


async def test_a_duplicated_event_never_advances_twice(bot, homeserver, user_factory, tmp_path):
    client = await person(homeserver, user_factory, tmp_path, "dup")
    try:
        chat = await open_dm(client, bot.user_id)
        await chat.expect(lambda b: "Welcome to" in b)
        event_id = await chat.send("1")
        await chat.expect(lambda b: consent_start("en") in b)
        await chat.expect(consent_parts("en")[-1])  # the consent comes in parts
        before = await bot.bridge.store.get_client(client.session.user_id)
        item = InboxItem(event_id, chat.room_id, client.session.user_id, 0, "text", "1", True)
        await bot.bridge.router.handle(item)  # the same event, again
        assert await chat.quiet() == []
        after = await bot.bridge.store.get_client(client.session.user_id)
        assert after.intake == before.intake
    finally:
        await client.close()


async def test_an_unencrypted_dm_is_refused(bot, homeserver, user_factory, tmp_path):
    client = await person(homeserver, user_factory, tmp_path, "plain")
    try:
        chat = await open_dm(client, bot.user_id, encrypted=False)
        await chat.expect(text("en", "intake.unencrypted"))
        await chat.send("1", allow_plaintext=True)
        await chat.expect(text("en", "intake.unencrypted"))
        assert await bot.bridge.store.get_client(client.session.user_id) is None
    finally:
        await client.close()


async def test_waitlist_then_assignment_when_a_counselor_is_added(
    bot, homeserver, user_factory, tmp_path
):
    client = await person(homeserver, user_factory, tmp_path, "waiter")
    try:
        chat = await open_dm(client, bot.user_id)
        await walk_intake(bot, chat)
        await chat.send("auto")
        await chat.expect(text("en", "intake.waitlisted", position=1))
        counselor = await add_counselor(bot, homeserver, user_factory, tmp_path, name="Budi")
        await chat.expect(text("en", "waitlist.assigned", counselor_name="Budi"))
        eng = await bot.bridge.store.current_engagement(client.session.user_id)
        assert eng.status == "active" and eng.counselor_id == counselor.session.user_id
        await counselor.close()
    finally:
        await client.close()
