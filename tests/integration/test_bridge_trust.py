"""MSC4153 on the bot's side: devices their owner did not cross-sign get no room keys,
and the client is told why, in their language."""

from __future__ import annotations

import secrets

from tests.integration.bridgekit import make_bot, open_dm, text
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
