"""MSC4153 on the bot's side: devices their owner did not cross-sign get no room keys,
and the client is told why, in their language."""

from __future__ import annotations

import secrets

from e2ecounsel.matrix.crosssigning import CrossSigningKeys, query_cross_signing, raw_request
from tests.integration.bridgekit import consent_parts, consent_start, make_bot, open_dm, text
from tests.integration.matrixkit import Recorder, until


async def test_an_unsigned_device_is_excluded_and_the_client_is_told(
    homeserver, user_factory, tmp_path
):
    env = await make_bot(homeserver, tmp_path)
    await env.start()
    user_id, password = await user_factory("twodevices")
    base = homeserver.info.base_url
    signed = await Recorder.connect(
        base, user_id, password, tmp_path / "a", secrets.token_bytes(32)
    )
    unsigned: Recorder | None = None
    try:
        chat = await open_dm(signed, env.user_id)
        await chat.expect(lambda b: "Welcome to" in b)

        # A second device that its owner never verified (no cross-signing).
        unsigned = await Recorder.connect(
            base, user_id, password, tmp_path / "b", secrets.token_bytes(32), cross_sign=False
        )
        await until(lambda: chat.room_id in unsigned.session.client.rooms, what="room on b")
        await chat.send("1")
        warning = text("en", "trust.unsigned_device")
        # The consent question (the intake goes on for the signed device) and the warning.
        await until(
            lambda: (
                warning in chat.bot_messages() and any("agree" in b for b in chat.bot_messages())
            ),
            what="the warning and the next intake question",
        )

        # The unsigned device got the bot's later messages, but not the keys to read them.
        bot_events = {m.event_id for m in signed.messages if m.sender == env.user_id}
        await until(
            lambda: {eid for _r, eid in unsigned.undecryptable} & bot_events,
            what="bot messages arrive undecryptable on the unsigned device",
        )
        assert not [
            m
            for m in unsigned.messages
            if m.sender == env.user_id and m.event_id in bot_events and "agree" in m.body
        ]
        rows = await env.bridge.store.audit_lines(user_id=user_id)  # type: ignore[union-attr]
        assert "trust.device_excluded" in [r.action for r in rows]
        assert signed.undecryptable == []
    finally:
        await signed.close()
        if unsigned is not None:
            await unsigned.close()
        await env.stop()


async def _replace_identity(who: Recorder, password: str) -> None:
    """What "reset cryptographic identity" in Element does: new master and self-signing
    keys, so every device the old self-signing key signed is unsigned now."""
    client = who.session.client
    body: dict[str, object] = dict(CrossSigningKeys.generate(client.user_id).public_key_objects())
    status, payload = await raw_request(client, "POST", "/keys/device_signing/upload", body)
    assert status == 401, payload  # a replacement needs the password
    body["auth"] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": password,
        "session": payload["session"],
    }
    status, payload = await raw_request(client, "POST", "/keys/device_signing/upload", body)
    assert status == 200, payload
    ident = (await query_cross_signing(client, [client.user_id]))[client.user_id]
    assert not ident.is_device_signed(client.device_id)


async def test_cached_trust_drops_a_device_the_moment_it_loses_its_signature(
    homeserver, user_factory, tmp_path
):
    env = await make_bot(homeserver, tmp_path)
    bridge = await env.start()
    user_id, password = await user_factory("revoked")
    client = await Recorder.connect(
        homeserver.info.base_url, user_id, password, tmp_path / "c", secrets.token_bytes(32)
    )
    try:
        chat = await open_dm(client, env.user_id)
        await chat.expect(lambda b: "Welcome to" in b)
        # Steady state: the keys are cached; answering and being answered asks nothing.
        waits = bridge.trust.waits
        await chat.send("1")
        await chat.expect(lambda b: consent_start("en") in b)
        await chat.expect(consent_parts("en")[-1])  # the consent comes in parts
        assert bridge.trust.waits == waits, "a send waited for a keys lookup in steady state"
        assert client.undecryptable == []

        await _replace_identity(client, password)
        readable = len(chat.bot_messages())
        await chat.send("agree")
        # The bot's next messages reach the device, but not the keys to read them.
        await until(
            lambda: any(room == chat.room_id for room, _eid in client.undecryptable),
            what="the bot's reply arrives undecryptable",
        )
        assert len(chat.bot_messages()) == readable
        device = bridge.session.client.device_store[user_id][client.session.device_id]
        assert device.blacklisted
        assert not bridge.trust.is_device_trusted(user_id, client.session.device_id)
    finally:
        await client.close()
        await env.stop()
