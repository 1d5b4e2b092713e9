"""A client on an independent implementation (matrix-js-sdk, Rust crypto, only-signed-devices
isolation as in Element) talks to the real bridge: the whole bot, not just its parts."""

from __future__ import annotations

from pathlib import Path

from e2ecounsel.homeserver import EmbeddedHomeserver
from tests.conftest import MakeUser
from tests.integration.bridgekit import POLICY, consent_parts, make_bot, text
from tests.interop.conftest import StartJs


async def test_js_client_starts_an_intake_with_the_real_bridge(
    homeserver: EmbeddedHomeserver,
    user_factory: MakeUser,
    js_factory: StartJs,
    tmp_path: Path,
) -> None:
    env = await make_bot(homeserver, tmp_path)
    bridge = await env.start()
    try:
        js_user, js_pw = await user_factory("element-user")
        js = await js_factory("client")
        login = await js.call(
            "login", base_url=homeserver.info.base_url, user_id=js_user, password=js_pw
        )
        assert login["cross_signing_ready"]
        room = (await js.call("create_dm", user=env.user_id))["room_id"]
        await js.call("wait_joined", room=room, user=env.user_id, timeout=60)

        welcome = await js.call("wait_message", room=room, sender=env.user_id, timeout=60)
        assert welcome["decrypted"] and welcome["encrypted"], welcome
        assert "Welcome to" in welcome["body"]
        assert welcome["sender_device"] == bridge.session.device_id
        assert welcome["sender_device_signed"] is True
        assert welcome["shield_colour"] != "RED", welcome

        # The client's answer decrypts at the bot (it moves the intake on) ...
        await js.call("send", room=room, text="1")
        consent = consent_parts("en")[-1]  # the consent comes in parts; this one asks
        reply = await js.call(
            "wait_message", room=room, sender=env.user_id, body=consent, timeout=60
        )
        # ... and the bot's reply decrypts at the client, from a device it trusts.
        assert reply["decrypted"] and reply["encrypted"], reply
        assert reply["shield_reason"] not in ("UNSIGNED_DEVICE", "UNKNOWN_DEVICE"), reply
        await js.call("send", room=room, text="agree")
        age = text("en", "intake.age", min_age=POLICY.service.min_age)
        got = await js.call("wait_message", room=room, sender=env.user_id, body=age, timeout=60)
        assert got["decrypted"], got
    finally:
        await env.stop()
