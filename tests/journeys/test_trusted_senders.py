"""Only the client's own verified devices speak for the client.

A bare access token (a plain HTTP call, no end-to-end encryption) and a device its owner
never cross-signed may both post into the client's encrypted DM; neither can change
anything, and each gets the plain "your device is not verified" answer. Edits are not new
answers; digits from any keyboard are read safely; group rooms get no personal answers.
"""

from __future__ import annotations

import secrets
import uuid

import aiohttp

from tests.integration.bridgekit import POLICY, seat_client, text
from tests.integration.matrixkit import Recorder, until
from tests.journeys.conftest import eventually, hire


async def plain_send(base_url: str, token: str, room_id: str, body: str) -> None:
    """What anyone holding the access token can do: an unencrypted PUT, no device at all."""
    url = f"{base_url}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}"
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            url,
            json={"msgtype": "m.text", "body": body},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def test_a_bare_token_and_an_unsigned_device_cannot_erase_the_client(
    bot, people, homeserver, user_factory, tmp_path
):
    ana = await people("ana")
    await hire(bot, ana, "Ana")
    user_id, password = await user_factory("client")
    base = homeserver.info.base_url
    client = await Recorder.connect(
        base, user_id, password, tmp_path / "c", secrets.token_bytes(32)
    )
    unsigned: Recorder | None = None
    try:
        seated = await seat_client(bot, client, "Ana", pseudonym="Finch")
        store = bot.bridge.store
        dm = seated.dm
        refused = text("en", "trust.untrusted_sender")

        # 1. The access token alone, in clear, into the encrypted DM.
        token = client.session.client.access_token
        await plain_send(base, token, dm.room_id, "erase")
        await dm.expect(refused)
        await plain_send(base, token, dm.room_id, "yes")
        await plain_send(base, token, dm.room_id, "urgent")
        assert await dm.quiet(2.0) == [], "told once, then nothing"
        kept = await store.get_client(user_id)
        assert kept is not None and kept.pending is None and kept.profile["pseudonym"] == "Finch"
        assert (await store.current_engagement(user_id)).risk == "low"

        # 2. A second login of the same account that its owner never verified.
        unsigned = await Recorder.connect(
            base, user_id, password, tmp_path / "u", secrets.token_bytes(32), cross_sign=False
        )
        await until(lambda: dm.room_id in unsigned.session.client.rooms, what="DM on device 2")
        await unsigned.session.send_text(dm.room_id, "erase")
        await dm.expect(refused)
        await unsigned.session.send_text(dm.room_id, "yes")
        await unsigned.session.send_text(seated.room.room_id, "I want to kill myself")
        await dm.quiet(2.0)
        kept = await store.get_client(user_id)
        assert kept is not None and kept.pending is None
        assert await store.current_engagement(user_id) is not None
        assert await bot.bridge.ctx.pages.newest_open() is None

        # The verified device still works as before.
        ana_record = await store.get_counselor(ana.session.user_id)
        active = text(
            "en", "status.active", counselor_name="Ana", credentials=ana_record.credentials
        )
        await dm.send("status")
        await dm.expect(lambda b: b.startswith(active))
    finally:
        await client.close()
        if unsigned is not None:
            await unsigned.close()


async def test_edits_are_not_answers_and_digits_from_any_keyboard_are_read_safely(bot, people):
    ana = await people("ana")
    await hire(bot, ana, "Ana")
    client = await people("client")
    seated = await seat_client(bot, client, "Ana")
    dm = seated.dm
    store = bot.bridge.store

    # "erase", then an edit of some earlier message into "yes": the edit is no answer.
    await dm.send("erase")
    await dm.expect(text("en", "erase.confirm"))
    original = await dm.send("hello")
    await dm.expect(text("en", "erase.cancelled"))  # "hello" is not "yes"
    await dm.send("erase")
    await dm.expect(text("en", "erase.confirm"))
    await client.session.send(
        dm.room_id,
        {
            "msgtype": "m.text",
            "body": "* yes",
            "m.new_content": {"msgtype": "m.text", "body": "yes"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    await dm.expect(text("en", "edit.ignored"))
    rec = await store.get_client(client.session.user_id)
    assert rec is not None and rec.pending == {"kind": "erase"}
    await dm.send("no")
    await dm.expect(text("en", "erase.cancelled"))

    # Look-alike digits are refused; real digits of other scripts are read.
    await dm.send("language")
    await dm.expect(text("en", "language.choose"))
    for odd in ("²", "①", "1٢", "99999999"):
        await dm.send(odd)
        await dm.expect(text("en", "language.invalid"))
    await dm.send("٢")  # Arabic-Indic two
    await dm.expect(text("id", "language.changed"))
    assert (await store.get_client(client.session.user_id)).language == "id"
    await dm.send("bahasa")
    await dm.expect(text("id", "language.choose"))
    await dm.send("１")  # full-width one
    await dm.expect(text("en", "language.changed"))


async def test_personal_answers_only_in_a_private_dm_and_group_rooms_are_left(bot, people):
    ana = await people("ana")
    await hire(bot, ana, "Ana")
    client = await people("client")
    friend = await people("friend")
    seated = await seat_client(bot, client, "Ana", pseudonym="Plover")
    dm = seated.dm

    # A third person in the DM: it is not private any more.
    await client.session.client.room_invite(dm.room_id, friend.session.user_id)
    await until(lambda: friend.joined(dm.room_id, friend.session.user_id), what="friend joins")
    await dm.send("status")
    line = POLICY.crisis_line("en", POLICY.crisis.countries[0].code)
    await dm.expect(text("en", "dm.not_private", crisis_line=line))
    assert all("Ana" not in b for b in friend.bodies(dm.room_id, sender=bot.user_id))

    # A group room the bot is invited to: it leaves.
    group = await client.create_encrypted_room([friend.session.user_id])
    await until(lambda: friend.joined(group, friend.session.user_id), what="group")
    await client.session.client.room_invite(group, bot.user_id)

    async def left() -> bool:
        status, body = await client.session.raw(
            "GET", f"/_matrix/client/v3/rooms/{group}/state/m.room.member/{bot.user_id}"
        )
        return status == 200 and body.get("membership") == "leave"

    await eventually(left, what="the bot leaves the group room")
    assert friend.bodies(group, sender=bot.user_id) == []
